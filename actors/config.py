"""Broker, state backend and resilience stack of the example app.

This is the part of an application that a dramatiq-resilience user writes
once: build the broker, ``install()`` the stack with a state backend, and set
the broker as Dramatiq's global one before declaring actors.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

import dramatiq_resilience as dr

from .ledger import Ledger, MemoryLedger, RedisLedger

#: Where the app keeps its state; unset means in memory (the embedded demo).
REDIS_URL = os.environ.get("ACTORS_REDIS_URL")

#: Prefix of every key the app writes, so that a shared Redis stays tidy.
NAMESPACE = os.environ.get("ACTORS_NAMESPACE", "actors")

broker: dramatiq.Broker
backend: dr.StateBackend
ledger: Ledger

if REDIS_URL:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS_URL, namespace=f"{NAMESPACE}:broker")
    backend = dr.RedisBackend(url=REDIS_URL, namespace=NAMESPACE)
    ledger = RedisLedger(REDIS_URL, namespace=f"{NAMESPACE}:ledger")
else:
    broker = StubBroker()
    broker.emit_after("process_boot")
    backend = dr.StubBackend()
    ledger = MemoryLedger()

# CurrentMessage lets the maintenance heartbeat see which cron occurrence it runs.
broker.add_middleware(CurrentMessage())
stack = dr.install(
    broker,
    backend=backend,
    # The payment gateway's breaker, shared by every actor that calls the
    # gateway.  A short cooldown keeps the demo quick; production would keep
    # the 30 s default.
    breaker={"breakers": {"payments-gateway": {"cooldown": 1_000, "cooldown_max": 8_000}}},
    # Producers of report exports are warned, slowed, then refused as the
    # reports queue fills.  The demo reads the depth on every send to be exact;
    # production would keep the default cache (one read per queue per second).
    backpressure={
        "thresholds": {"reports": dr.Thresholds(warning=4, critical=8, emergency=12)},
        "max_wait": 100,
        "cache_ms": 0,
    },
    # Each worker process sends its outcome counts for the health score every second
    # (5 s by default); a demo scene prints the score at the end.
    health={"flush_ms": 1_000},
)
dramatiq.set_broker(broker)


def count_deferral(event: dr.Event) -> None:
    """Count each deferred message in the ledger (the demo's summary reads it)."""
    ledger.incr("deferred_messages", event["message_id"])


dr.subscribe("message_deferred", count_deferral)


def cleanup() -> None:
    """Delete every key the app wrote under its namespace (never the rest of Redis)."""
    if REDIS_URL:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"{NAMESPACE}:*", count=1000):
                client.delete(key)
        finally:
            client.close()
