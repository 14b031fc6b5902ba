"""An app whose true counts are known exactly, for the multi-process metrics test.

Environment: ``TEST_REDIS_URL``, ``TEST_NAMESPACE``, ``TEST_METRICS_PORT`` (the
endpoint in a fork of the ``dramatiq`` main process).

Each actor ends each message in a known way:

=================  ===================================================================
``ok``             succeeds (after 100 ms)
``flaky``          fails its first attempt, then succeeds (one retry)
``doomed``         always fails; ``max_retries=2``: two retries, then failed for good
``declined``       raises an exception in its ``throws``: failed for good at once
``warming_up``     deferred once by the app's ``WarmUp`` middleware, then succeeds
``dup``            deduplicated by its argument: a later duplicate is skipped
=================  ===================================================================

Messages sent with ``max_age=1`` are rejected by ``AgeLimit`` (expired).
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, Retries

import dramatiq_resilience as dr

URL = os.environ["TEST_REDIS_URL"]
NAMESPACE = os.environ["TEST_NAMESPACE"]


class Declined(Exception):
    """An expected failure (in ``throws``)."""


class WarmUp(Middleware):
    """Defers each ``warming_up`` message once (reason ``warming_up``): a known number of deferrals."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        if message.actor_name == "warming_up" and not message.options.get("deferrals"):
            dr.defer(broker, message, delay_ms=50, reason="warming_up", jitter_ms=0)


broker = RedisBroker(url=URL, namespace=f"{NAMESPACE}-broker")
broker.add_middleware(CurrentMessage())
dr.install(
    broker,
    backend=dr.RedisBackend(url=URL, namespace=NAMESPACE),
    metrics={"expose": True, "port": int(os.environ["TEST_METRICS_PORT"])},
    health={"flush_ms": 500},
    breaker=False,  # failures on purpose would open breakers, and deferrals would depend on timing
    scheduling=False,
)
broker.add_middleware(WarmUp(), before=Retries)
dramatiq.set_broker(broker)

RETRIES = {"min_backoff": 10, "max_backoff": 20}


@dramatiq.actor(max_retries=0)
def ok(n: int) -> None:
    """Succeed, slowly: a process holds at most 2 x threads messages, so both processes get some."""
    time.sleep(0.1)


@dramatiq.actor(max_retries=3, **RETRIES)
def flaky(n: int) -> None:
    """Fail the first attempt only."""
    message = CurrentMessage.get_current_message()
    if message is not None and not message.options.get("retries"):
        raise ConnectionError("first attempt fails")


@dramatiq.actor(max_retries=2, **RETRIES)
def doomed(n: int) -> None:
    """Always fail."""
    raise RuntimeError("always fails")


@dramatiq.actor(max_retries=3, throws=(Declined,))
def declined(n: int) -> None:
    """Fail for good at once."""
    raise Declined("declined")


@dramatiq.actor(max_retries=0)
def warming_up(n: int) -> None:
    """Succeed (after one deferral)."""


@dramatiq.actor(max_retries=0, dedup_key=lambda n: f"dup:{n}")
def dup(n: int) -> None:
    """Succeed once per ``n``."""
