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

#: The pieces each row installs (besides the guard, which every stack has).
#: Each row measures its own piece, so the others are switched off.
PIECES = ("breaker", "dedup", "limiter", "dead_letters", "scheduling", "metrics", "health", "sentry")
STACKS = {
    "guard": (),
    "breaker": ("breaker",),
    "dedup": ("dedup",),
    "dedup_skip": ("dedup",),
    "limiter": ("limiter",),
    "dead_letters": ("dead_letters",),
    "scheduling": ("scheduling",),
    "backpressure": (),  # its thresholds are added below: it is off unless configured
    "metrics": ("metrics", "health"),
    "full_stack": PIECES,
}

if STACK != "bare":
    import dramatiq_resilience as dr

    if STACK not in STACKS:
        raise SystemExit(f"unknown BENCH_STACK {STACK!r}; known: bare, {', '.join(STACKS)}")
    backend = dr.RedisBackend(url=URL, namespace=NAMESPACE)
    if STACK in ("metrics", "scheduling"):
        # The piece's own round trips (health flushes; cron claims, polls and snapshots),
        # on connections named for the MONITOR count.
        client_name = {
            "metrics": "dramatiq-resilience-health",
            "scheduling": "dramatiq-resilience-scheduling",
        }
        backend = dr.RedisBackend(url=URL, namespace=NAMESPACE, client_name=client_name[STACK])
    if STACK == "breaker":
        from dramatiq.middleware import Retries

        # The breaker alone, its state backend on connections named for the MONITOR count.
        named = dr.RedisBackend(url=URL, namespace=NAMESPACE, client_name="dramatiq-resilience-breaker")
        broker.add_middleware(dr.CircuitBreaker(backend=named), before=Retries)
    else:
        # Backpressure with thresholds never reached: the row measures the cost of checking.
        extra = (
            {"backpressure": {"default": {"warning": 10**9}}}
            if STACK in ("backpressure", "full_stack")
            else {}
        )
        dr.install(broker, backend=backend, **{piece: piece in STACKS[STACK] for piece in PIECES}, **extra)
    if STACK == "dedup":
        # The happy path: every delivery claims a fresh key, then completes it.
        import uuid

        ACTOR_OPTIONS["dedup_key"] = lambda n: f"noop:{uuid.uuid4().hex}"
    elif STACK == "dedup_skip":
        # Skipped duplicates: every message carries one key, completed by the first.
        ACTOR_OPTIONS.update(dedup_key="noop-duplicate", dedup_payload_check=False)
    elif STACK == "limiter":
        # Never binding (a billion per second), one budget per n % 16: the row measures the cost.
        ACTOR_OPTIONS["rate_limits"] = dr.Limit(10**9, per=1_000, key=lambda n: str(n % 16))
    elif STACK == "full_stack":
        # Every piece doing its per-message work: a breaker (the actor's), a fresh dedup key,
        # a never-binding rate limit, metrics and health counting, backpressure checking.
        import uuid

        ACTOR_OPTIONS["dedup_key"] = lambda n: f"noop:{uuid.uuid4().hex}"
        ACTOR_OPTIONS["rate_limits"] = dr.Limit(10**9, per=1_000, key=lambda n: str(n % 16))

dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0, **ACTOR_OPTIONS)
def noop(n: int) -> None:
    """Do nothing: the benchmark measures what surrounds the actor."""
