"""An app for the multi-process breaker test: one actor calling a dependency that Redis switches.

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``, ``TEST_CACHE_MS`` (the
breaker's ``cache_ms``), ``TEST_COOLDOWN`` (ms).  The dependency is up while
``{namespace}:dependency`` is ``up``.  Every call appends a JSON record to
``{namespace}:calls``: its number, pid, the Redis time it started and the
breaker's epoch at that moment (read together in one MULTI, so "started
after the trip" is decided by Redis's own order of commands, not by
milliseconds), the backend time it was admitted (``null`` when the
process's cache admitted it), whether it was a probe, the epoch it was
admitted in, its ``retries`` and ``deferrals``, and whether the dependency
was up (``ok``).
"""

from __future__ import annotations

import json
import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

import dramatiq_resilience as dr
from dramatiq_resilience.middleware.base import scratch

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]
COOLDOWN = int(os.environ.get("TEST_COOLDOWN", "300"))

broker = RedisBroker(url=URL, namespace=f"{NAMESPACE}-broker")
broker.add_middleware(CurrentMessage())
dr.install(
    broker,
    backend=dr.RedisBackend(url=URL, namespace=NAMESPACE),
    breaker={
        "cache_ms": int(os.environ.get("TEST_CACHE_MS", "0")),
        "cooldown": COOLDOWN,
        "cooldown_max": COOLDOWN * 4,
        "consecutive_failures": 5,
        "failure_rate": None,
        "probes": 1,
    },
)
dramatiq.set_broker(broker)
client = redis.Redis.from_url(URL)


@dramatiq.actor(max_retries=0, breaker="dependency")
def call(n: int) -> None:
    """Record the call's start, then fail unless the dependency is up."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    taken = scratch(message, "breaker")["call"]
    # One transaction: no breaker script runs between reading the time and the epoch.
    pipe = client.pipeline(transaction=True)
    pipe.time()
    pipe.hget(f"{NAMESPACE}:breaker:{{dependency}}:state", "epoch")
    pipe.get(f"{NAMESPACE}:dependency")
    (seconds, micros), started_epoch, dependency = pipe.execute()
    up = dependency == b"up"
    record = {
        "n": n,
        "pid": os.getpid(),
        "started_ms": int(seconds) * 1000 + int(micros) // 1000,
        "started_epoch": int(started_epoch),
        "admitted_ms": taken.admitted_at,
        "probe": taken.probe,
        "epoch": taken.epoch,
        "retries": message.options.get("retries", 0),
        "deferrals": message.options.get("deferrals", 0),
        "ok": up,
    }
    client.rpush(f"{NAMESPACE}:calls", json.dumps(record))
    if not up:
        raise ConnectionError("the dependency is down")
