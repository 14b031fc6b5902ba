"""RetryGuard: a failure whose retry cannot be enqueued is dead-lettered, not acked and lost."""

from __future__ import annotations

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr

from .helpers import fail_enqueues


def test_failed_message_whose_retry_cannot_be_enqueued_is_dead_lettered(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """Retries' enqueue raises (broker down): without the guard the message would be acked."""
    dr.install(stub_broker, backend=stub_backend)
    fail_enqueues(stub_broker, "retry")

    @dramatiq.actor(max_retries=3)
    def charge() -> None:
        raise RuntimeError("gateway timeout")

    message = charge.send()
    stub_broker.join(charge.queue_name, fail_fast=False)
    stub_worker.join()
    [dead] = stub_broker.dead_letters
    assert dead.message_id == message.message_id
    assert isinstance(dead._exception, RuntimeError)


def test_guard_leaves_normal_retries_alone(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """When the retry is enqueued, the guard does nothing: the retry runs and succeeds."""
    dr.install(stub_broker, backend=stub_backend)
    attempts = []

    @dramatiq.actor(max_retries=3, min_backoff=1, max_backoff=1)
    def charge() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("gateway timeout")

    charge.send()
    stub_broker.join(charge.queue_name)
    stub_worker.join()
    assert len(attempts) == 2
    assert stub_broker.dead_letters == []


def test_without_the_guard_the_message_is_lost(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """The failure mode the guard closes, shown on bare Dramatiq: acked, not retried, not dead-lettered."""
    dr.install(stub_broker, backend=stub_backend, guard=False)
    fail_enqueues(stub_broker, "retry")
    attempts = []

    @dramatiq.actor(max_retries=3)
    def charge() -> None:
        attempts.append(1)
        raise RuntimeError("gateway timeout")

    charge.send()
    stub_broker.join(charge.queue_name, fail_fast=False)
    stub_worker.join()
    assert len(attempts) == 1
    assert stub_broker.dead_letters == []
