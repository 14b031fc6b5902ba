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
        dr.install(broker, backend=backend)
    elif STACK == "breaker":
        from dramatiq.middleware import Retries

        # The breaker alone, its state backend on connections named for the MONITOR count.
        named = dr.RedisBackend(url=URL, namespace=NAMESPACE, client_name="dramatiq-resilience-breaker")
        broker.add_middleware(dr.CircuitBreaker(backend=named), before=Retries)
    else:
        raise SystemExit(f"unknown BENCH_STACK {STACK!r}")

dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0, **ACTOR_OPTIONS)
def noop(n: int) -> None:
    """Do nothing: the benchmark measures what surrounds the actor."""
