"""An app for the scheduler's process tests: RedisBroker, the stack, a cron job and a worker actor.

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``; ``TEST_EVERY_SECOND=1``
declares ``tick``, an every-second cron job (overlap allowed) on queue
``ticks``; ``TEST_SLEEP_MS`` (how long ``record`` works); ``TEST_HEARTBEAT_MS``
(the RedisBroker heartbeat timeout); ``TEST_DEAD_WORKERS_EVERY`` (the
dead-worker scan's interval in ms).  Dramatiq's own random maintenance is
off (``maintenance_chance=0``), so only the scan recovers dead workers' messages.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]
SLEEP_MS = int(os.environ.get("TEST_SLEEP_MS", "0"))

broker = RedisBroker(
    url=URL,
    namespace=f"{NAMESPACE}-broker",
    heartbeat_timeout=int(os.environ.get("TEST_HEARTBEAT_MS", "60000")),
    maintenance_chance=0,
)
dr.install(
    broker,
    backend=dr.RedisBackend(url=URL, namespace=NAMESPACE),
    scheduling={
        "scan_every": {"dead_workers": int(os.environ.get("TEST_DEAD_WORKERS_EVERY", "15000"))},
        "poll_interval": 500,
    },
)
dramatiq.set_broker(broker)
client = redis.Redis.from_url(URL)


@dramatiq.actor(max_retries=0)
def record(n: int) -> None:
    """Mark ``n`` started, work ``SLEEP_MS``, then count it done."""
    client.hincrby(f"{NAMESPACE}:starts", str(n), 1)
    time.sleep(SLEEP_MS / 1000)
    client.hincrby(f"{NAMESPACE}:done", str(n), 1)


if os.environ.get("TEST_EVERY_SECOND"):

    @dr.cron(every=1_000, overlap="allow")
    @dramatiq.actor(queue_name="ticks")
    def tick() -> None:
        """Nothing consumes ``ticks``: the test reads the queue to count each occurrence's messages."""
