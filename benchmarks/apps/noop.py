"""A no-op actor on RedisBroker, with the resilience stack chosen by ``BENCH_STACK``.

Environment: ``BENCH_REDIS_URL``, ``BENCH_NAMESPACE``, ``BENCH_STACK`` (a row name:
``bare`` installs nothing; each later row installs its piece).
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]
NAMESPACE = os.environ["BENCH_NAMESPACE"]
STACK = os.environ.get("BENCH_STACK", "bare")

broker = RedisBroker(url=URL, namespace=f"{NAMESPACE}-broker")
ACTOR_OPTIONS: dict[str, Any] = {}

if STACK != "bare":
    import dramatiq_resilience as dr

    backend = dr.RedisBackend(url=URL, namespace=NAMESPACE)
    if STACK == "guard":
        dr.install(broker, backend=backend, dead_letters=False)
    elif STACK == "dead_letters":
        dr.install(broker, backend=backend)
    elif STACK == "dedup":
        # The happy path: every delivery claims a fresh key, then completes it.
        import uuid

        dr.install(broker, backend=backend)
        ACTOR_OPTIONS["dedup_key"] = lambda n: f"noop:{uuid.uuid4().hex}"
    elif STACK == "dedup_skip":
        # Skipped duplicates: every message carries one key, completed by the first.
        dr.install(broker, backend=backend)
        ACTOR_OPTIONS.update(dedup_key="noop-duplicate", dedup_payload_check=False)
    elif STACK == "limiter":
        dr.install(broker, backend=backend)
        # Never binding (a billion per second), one budget per n % 16: the row measures the cost.
        ACTOR_OPTIONS["rate_limits"] = dr.Limit(10**9, per=1_000, key=lambda n: str(n % 16))
    else:
        raise SystemExit(f"unknown BENCH_STACK {STACK!r}")

dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0, **ACTOR_OPTIONS)
def noop(n: int) -> None:
    """Do nothing: the benchmark measures what surrounds the actor."""
