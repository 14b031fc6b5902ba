"""A trivial app for harness tests: one actor that records its runs in Redis.

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``, ``TEST_SLEEP_MS`` (how long
``record`` works), ``TEST_HEARTBEAT_MS`` (RedisBroker heartbeat timeout).
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

import dramatiq_resilience as dr

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]
SLEEP_MS = int(os.environ.get("TEST_SLEEP_MS", "0"))

broker = RedisBroker(
    url=URL,
    namespace=f"{NAMESPACE}-broker",
    heartbeat_timeout=int(os.environ.get("TEST_HEARTBEAT_MS", "60000")),
    # Recover dead workers' messages on every command, so the test need not wait.
    maintenance_chance=MAINTENANCE_SCALE if os.environ.get("TEST_MAINTENANCE") else 1000,
)
dr.install(broker, backend=dr.RedisBackend(url=URL, namespace=NAMESPACE))
dramatiq.set_broker(broker)
client = redis.Redis.from_url(URL)


@dramatiq.actor(max_retries=0)
def record(n: int) -> None:
    """Mark ``n`` started (with this pid), work ``SLEEP_MS``, then mark it done."""
    client.hset(f"{NAMESPACE}:started", str(n), os.getpid())
    client.hincrby(f"{NAMESPACE}:starts", str(n), 1)
    time.sleep(SLEEP_MS / 1000)
    client.hincrby(f"{NAMESPACE}:done", str(n), 1)
    client.hset(f"{NAMESPACE}:done_by", str(n), os.getpid())
