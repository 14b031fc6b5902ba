"""A test app for Backpressure: RedisBroker, thresholds on the ``work`` queue, a job that fails once.

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``, ``TEST_CACHE_MS`` (Backpressure's
cache, default 1 000 ms).
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]

broker = RedisBroker(url=URL, namespace=f"{NAMESPACE}-broker")
stack = dr.install(
    broker,
    backend=dr.RedisBackend(url=URL, namespace=NAMESPACE),
    scheduling=False,
    backpressure={
        "thresholds": {"work": dr.Thresholds(warning=2, critical=4, emergency=6)},
        "default": dr.Thresholds(warning=100),
        "cache_ms": int(os.environ.get("TEST_CACHE_MS", "1000")),
    },
)
dramatiq.set_broker(broker)
client = redis.Redis.from_url(URL)


@dramatiq.actor(queue_name="work", max_retries=3, min_backoff=10, max_backoff=10)
def job(n: int) -> None:
    """Count the run of ``n``; the first run of 0 fails (its retry must not be refused)."""
    runs = client.hincrby(f"{NAMESPACE}:runs", str(n), 1)
    if n == 0 and runs == 1:
        raise RuntimeError("the first run of job 0 fails")


@dramatiq.actor(queue_name="emails")
def email() -> None:
    """Nothing: a queue under the default thresholds."""
