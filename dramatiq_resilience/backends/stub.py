"""The in-memory state backend, for tests and the embedded demo."""

from __future__ import annotations

from .base import StateBackend
from .stub_base import StubBase
from .stub_breaker import StubBreakerOps
from .stub_broker_heartbeats import StubBrokerHeartbeatOps
from .stub_cron import StubCronOps
from .stub_dead_letters import StubDeadLetterOps
from .stub_dedup import StubDedupOps
from .stub_health import StubHealthOps
from .stub_window import StubWindowOps

__all__ = ["StubBackend"]


class StubBackend(
    StubHealthOps,
    StubBreakerOps,
    StubCronOps,
    StubDedupOps,
    StubWindowOps,
    StubDeadLetterOps,
    StubBrokerHeartbeatOps,
    StubBase,
    StateBackend,
):
    """State backend in process memory: one lock, an injectable clock.

    It implements every operation with the same results as
    :class:`~dramatiq_resilience.backends.redis.RedisBackend` (one contract test
    suite runs both), but its state is only shared by the threads of one
    process.

    Parameters:
      clock: where time comes from (default: this host's clock).
      namespace: the key prefix, as for ``RedisBackend``.

    Attributes:
      unavailable: set to ``True`` to make every operation raise
        ``BackendUnavailable``, as if Redis were down (a test switch).
    """
