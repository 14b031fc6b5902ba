"""A test app for the dead-letter CLI and worker tests: RedisBroker + DeadLetters with a redrive policy.

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]

broker = RedisBroker(url=URL, namespace=f"{NAMESPACE}-broker")
stack = dr.install(
    broker,
    backend=dr.RedisBackend(url=URL, namespace=NAMESPACE),
    dead_letters={
        "redact": ["card"],
        "redrive": [
            dr.RedrivePolicy(match={"category": "transient"}, delay=0, max_redrives=1, name="retry-once")
        ],
    },
)
dramatiq.set_broker(broker)


class CardDeclined(Exception):
    """A permanent failure."""


@dramatiq.actor(queue_name="payments", max_retries=0, throws=(CardDeclined,))
def charge(order_id: str, card: str) -> None:
    """Always declined."""
    raise CardDeclined(f"card declined for {order_id}")
