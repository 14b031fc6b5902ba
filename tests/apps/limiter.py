"""A test app for the limiter: rate-limited and concurrency-limited actors that record what they did.

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``, ``LIMIT`` (a rate such as
``"100/second"``), ``LIMIT_KEYED`` ("1": one budget per tenant), ``SLOTS``
(concurrency n), ``LEASE_MS``, ``HOLD_MS`` (how long ``hold`` works).

Records (Redis, under ``TEST_NAMESPACE``):

* ``admitted:<tenant>``: list of admission times (server ms, from the
  ``rate_limit_admitted`` event: the moment the limiter let the message start);
* ``done``: hash message number -> runs; ``deferrals``: hash message number ->
  deferrals seen by the run; ``retries``: hash message number -> retries;
* ``intervals``: list of "start end" (host ms) of every ``hold`` run.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

import dramatiq_resilience as dr

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]
KEYED = os.environ.get("LIMIT_KEYED") == "1"
HOLD_MS = int(os.environ.get("HOLD_MS", "100"))

broker = RedisBroker(url=URL, namespace=f"{NAMESPACE}-broker")
broker.add_middleware(CurrentMessage())
dr.install(broker, backend=dr.RedisBackend(url=URL, namespace=NAMESPACE))
dramatiq.set_broker(broker)
client = redis.Redis.from_url(URL)


def _record_admission(event: dr.Event) -> None:
    if event["actor_name"] == "hit":
        [tenant] = event["keys"].values()
        client.rpush(f"{NAMESPACE}:admitted:{tenant or 'all'}", event["now_ms"])


dr.subscribe("rate_limit_admitted", _record_admission)


def _record_run(n: int) -> None:
    options = CurrentMessage.get_current_message().options
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(f"{NAMESPACE}:done", str(n), 1)
    pipe.hset(f"{NAMESPACE}:deferrals", str(n), int(options.get("deferrals", 0)))
    pipe.hset(f"{NAMESPACE}:retries", str(n), int(options.get("retries", 0)))
    pipe.execute()


@dramatiq.actor(
    max_retries=3,
    rate_limits=dr.Limit.parse(
        os.environ.get("LIMIT", "100/second"), key=(lambda tenant, n: tenant) if KEYED else None
    ),
)
def hit(tenant: str, n: int) -> None:
    """Count the run; the limiter decides when it may start."""
    _record_run(n)


_slots = dr.Concurrency(
    int(os.environ.get("SLOTS", "2")),
    key=lambda *args: "shared",
    name="slots",
    lease=int(os.environ.get("LEASE_MS", "2000")),
)


@dramatiq.actor(max_retries=0, rate_concurrency=_slots)
def hold(n: int) -> None:
    """Work HOLD_MS while holding a slot; record the interval."""
    start = time.time()
    time.sleep(HOLD_MS / 1000)
    client.rpush(f"{NAMESPACE}:intervals", f"{start * 1000:.3f} {time.time() * 1000:.3f} {n}")
    _record_run(n)


@dramatiq.actor(max_retries=0, queue_name="holders", rate_concurrency=_slots, time_limit=3_600_000)
def hold_long(n: int) -> None:
    """Hold a slot for a minute (the test kills this worker meanwhile)."""
    client.rpush(f"{NAMESPACE}:long_started", n)
    time.sleep(60)
