"""Deferral: a copy with a delay, retries untouched, reason and count recorded, original skipped."""

from __future__ import annotations

import random
import threading
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

import dramatiq_resilience as dr
from dramatiq_resilience.deferral import jitter_for

from .helpers import fail_enqueues


class DeferFirst(Middleware):
    """Defers each message the first ``times`` times it is seen, like a resilience decision would."""

    def __init__(self, *, times: int = 1, delay_ms: int = 50, max_deferrals: int | None = None) -> None:
        self.times = times
        self.delay_ms = delay_ms
        self.max_deferrals = max_deferrals

    def before_process_message(self, broker: Any, message: Any) -> None:
        if dr.deferral.deferral_count(message, "testing") < self.times:
            dr.defer(
                broker,
                message,
                delay_ms=self.delay_ms,
                reason="testing",
                jitter_ms=0,
                max_deferrals=self.max_deferrals,
            )


class Recorder(Middleware):
    """Records every enqueue with its delay and origin."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[Any, Any, str]] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.enqueued.append((message, delay, dr.enqueue_origin(message)))


def _run_deferred_with_no_retries(broker: Any, worker: Worker, queue: str = "default") -> None:
    """A message deferred once with max_retries=0 still runs, and is not dead-lettered."""
    recorder = Recorder()
    broker.add_middleware(DeferFirst())
    broker.add_middleware(recorder)
    ran = threading.Event()
    seen_options: list[dict[str, Any]] = []

    @dramatiq.actor(max_retries=0, queue_name=queue)
    def charge(order_id: str) -> None:
        seen_options.append(dict(dramatiq.middleware.CurrentMessage.get_current_message().options))
        ran.set()

    broker.add_middleware(dramatiq.middleware.CurrentMessage())
    charge.send("order-1")
    assert ran.wait(10), "the deferred message never ran"
    worker.join() if isinstance(broker, StubBroker) else None
    [options] = seen_options
    assert options["deferrals"] == 1
    assert options["deferral_counts"] == {"testing": 1}
    assert options["deferred_reason"] == "testing"
    assert options.get("retries", 0) == 0
    origins = [origin for _, _, origin in recorder.enqueued]
    assert origins[:2] == ["send", "deferral"]
    assert recorder.enqueued[1][1] == 50


def test_deferred_message_with_no_retries_runs_later_on_stub_broker(
    stub_broker: StubBroker, stub_worker: Worker
) -> None:
    """StubBroker: deferred, then run once; nothing dead-lettered; retries untouched."""
    _run_deferred_with_no_retries(stub_broker, stub_worker)
    stub_broker.join("default")
    assert stub_broker.dead_letters == []


def test_deferred_message_with_no_retries_runs_later_on_redis_broker(
    redis_broker: Any, redis_worker: Worker
) -> None:
    """RedisBroker: deferred through the real delay queue, then run once; nothing dead-lettered."""
    _run_deferred_with_no_retries(redis_broker, redis_worker)
    redis_broker.join("default", timeout=10_000)
    assert redis_broker.client.zcard(f"{redis_broker.namespace}:default.XQ") == 0


@pytest.mark.rabbitmq
def test_deferred_message_with_no_retries_runs_later_on_rabbitmq(
    rabbitmq_broker: Any, rabbitmq_worker: Worker, queue_name: str
) -> None:
    """RabbitMQ: deferred through its delay queue, then run once; its dead-letter queue stays empty."""
    _run_deferred_with_no_retries(rabbitmq_broker, rabbitmq_worker, queue=queue_name)
    rabbitmq_broker.join(queue_name, timeout=10_000)
    assert rabbitmq_broker.get_queue_message_counts(queue_name) == (0, 0, 0)


def test_deferred_copy_keeps_the_message_and_drops_delivery_options(
    stub_broker: StubBroker, stub_worker: Worker
) -> None:
    """The copy has the same id, args and options, minus eta; the delay is exact when jitter is 0."""
    recorder = Recorder()
    stub_broker.add_middleware(DeferFirst(delay_ms=1_234))
    stub_broker.add_middleware(recorder)

    @dramatiq.actor(max_retries=0)
    def charge(order_id: str, amount: int) -> None: ...

    sent = charge.send_with_options(args=("order-1",), kwargs={"amount": 5}, max_retries=0)
    stub_broker.join(charge.queue_name)
    stub_worker.join()
    _, (copy, delay, origin), *_ = recorder.enqueued
    assert (copy.message_id, copy.args, copy.kwargs, delay, origin) == (
        sent.message_id,
        ("order-1",),
        {"amount": 5},
        1_234,
        "deferral",
    )
    assert copy.queue_name == "default.DQ"
    assert copy.options["max_retries"] == 0
    assert set(copy.options) == {"max_retries", "deferrals", "deferral_counts", "deferred_reason", "eta"}


def test_max_deferrals_dead_letters_instead(stub_broker: StubBroker, stub_worker: Worker) -> None:
    """With max_deferrals=2, the third deferral is a TooManyDeferrals dead letter; the actor never runs."""
    stub_broker.add_middleware(DeferFirst(times=10, delay_ms=1, max_deferrals=2))
    runs = []
    rejected: list[dr.Event] = []
    dr.subscribe("message_rejected", rejected.append)

    @dramatiq.actor(max_retries=5)
    def charge() -> None:
        runs.append(1)

    try:
        charge.send()
        stub_broker.join(charge.queue_name, fail_fast=False)
        stub_worker.join()
    finally:
        dr.unsubscribe("message_rejected", rejected.append)
    assert runs == []
    [dead] = stub_broker.dead_letters
    error = dead._exception
    assert isinstance(error, dr.TooManyDeferrals)
    assert (error.deferred_for, error.deferrals, error.max_deferrals) == ("testing", 2, 2)
    assert [event["reason"] for event in rejected] == ["too_many_deferrals"]


def test_failed_deferral_takes_the_retry_path(stub_broker: StubBroker, stub_worker: Worker) -> None:
    """If the copy cannot be enqueued (the broker blinked), the original is retried, not skipped."""
    stub_broker.add_middleware(DeferFirst(times=1, delay_ms=1))
    stub_broker.add_middleware(dramatiq.middleware.CurrentMessage())
    runs: list[tuple[Any, Any]] = []
    failures: list[dr.Event] = []
    fail_enqueues(stub_broker, "deferral", times=1)  # the broker blinks once

    @dramatiq.actor(max_retries=1, min_backoff=1, max_backoff=1)
    def charge() -> None:
        options = dramatiq.middleware.CurrentMessage.get_current_message().options
        runs.append((options.get("retries"), options.get("deferrals")))

    dr.subscribe("deferral_failed", failures.append)
    try:
        charge.send()
        stub_broker.join(charge.queue_name)
        stub_worker.join()
    finally:
        dr.unsubscribe("deferral_failed", failures.append)
    # Delivery 1: the deferral fails, so Retries re-enqueues it (retries=1).
    # Delivery 2: the deferral succeeds.  Delivery 3: the actor runs, once.
    assert runs == [(1, 1)]
    assert [type(event["error"]) for event in failures] == [dr.DeferralFailed]
    assert stub_broker.dead_letters == []


def test_jitter_stays_within_its_window() -> None:
    """Jitter is never negative and never larger than clamp(delay x ratio, min, max)."""
    rng = random.Random(7)
    samples = [jitter_for(30_000, rng=rng) for _ in range(2_000)]
    assert min(samples) >= 0
    assert max(samples) <= 3_000
    assert max(samples) > 2_500  # it does spread
    assert max(jitter_for(100, rng=rng) for _ in range(500)) <= 100
    assert max(jitter_for(10_000_000, rng=rng) for _ in range(500)) <= 5_000
