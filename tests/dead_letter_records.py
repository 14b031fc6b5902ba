"""A factory of dead-letter records for tests (no worker needed)."""

from __future__ import annotations

from typing import Any

from dramatiq_resilience.dead_letters.record import DeadLetterRecord

T0 = 1_767_225_600_000
TIMEOUT = "actors.gateway.GatewayTimeout"


def rec(
    n: int,
    *,
    actor: str = "charge",
    queue: str = "payments",
    error: str = TIMEOUT,
    category: str = "transient",
    at: int | None = None,
    **changes: Any,
) -> DeadLetterRecord:
    """Record ``m<n>`` (5 digits) of ``actor`` on ``queue``, failed at ``at`` (default T0 - 100 000 + n)."""
    at = T0 - 100_000 + n if at is None else at
    values: dict[str, Any] = dict(
        record_id=f"m{n:05d}",
        message_id=f"m{n:05d}",
        queue_name=queue,
        actor_name=actor,
        args=(n,),
        kwargs={"tenant": "acme"},
        options={"retries": 2, "max_retries": 2, "eta": 1, "redis_message_id": "x"},
        message_timestamp=at - 5_000,
        category=category,
        error_type=error,
        error_message=f"failed {n}",
        traceback="Traceback...",
        chain=(),
        attempts=3,
        first_failure_at=at - 1_000,
        last_failure_at=at,
        host="h",
        pid=1,
        version="0",
        redrives=(),
        redacted=(),
        source="capture",
    )
    values.update(changes)
    return DeadLetterRecord(**values)
