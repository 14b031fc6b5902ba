"""A deduplicated actor whose side effect commits with its completion (for the SIGKILL test).

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``, ``TEST_LEASE_MS`` (the
dedup lease), ``TEST_SLEEP_MS`` (each run works a random time up to this),
``TEST_HEARTBEAT_MS`` (RedisBroker heartbeat timeout: how soon a killed
worker's messages are redelivered).
"""

from __future__ import annotations

import os
import random
import time

import dramatiq
import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

import dramatiq_resilience as dr

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]
LEASE_MS = int(os.environ.get("TEST_LEASE_MS", "2000"))
SLEEP_MS = int(os.environ.get("TEST_SLEEP_MS", "20"))

broker = RedisBroker(
    url=URL,
    namespace=f"{NAMESPACE}-broker",
    heartbeat_timeout=int(os.environ.get("TEST_HEARTBEAT_MS", "3000")),
    # Recover dead workers' messages on every fetch, so the test need not wait.
    maintenance_chance=MAINTENANCE_SCALE,
)
dr.install(
    broker,
    backend=dr.RedisBackend(url=URL, namespace=NAMESPACE),
    dedup={"busy_delay": 100, "max_busy_delay": 1_000},
)
dramatiq.set_broker(broker)
client = redis.Redis.from_url(URL)


@dramatiq.actor(
    dedup_key=lambda key: key, dedup_lease=LEASE_MS, max_retries=20, min_backoff=100, max_backoff=1_000
)
def effect(key: str) -> None:
    """Count the run, work a little, then INCR the key's effect together with the completion."""
    client.hincrby(f"{NAMESPACE}:runs", key, 1)  # not fenced: counts every execution
    client.hset(f"{NAMESPACE}:inflight", key, os.getpgid(0))  # which dramatiq CLI runs it
    time.sleep(random.uniform(0, SLEEP_MS) / 1000)
    claim = dr.current_claim()
    assert claim is not None
    # The effect key shares the record's hash tag, so this also holds on Redis Cluster.
    claim.commit(lambda tx: tx.incr(f"{NAMESPACE}:effect:{claim.hash_tag}"))
    client.hdel(f"{NAMESPACE}:inflight", key)
    client.incr(f"{NAMESPACE}:progress")
