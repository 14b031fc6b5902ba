"""enqueue_origin(): producers' sends are told apart from every kind of re-enqueue."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

import dramatiq_resilience as dr


class Origins(Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.seen.append((message.actor_name, dr.enqueue_origin(message)))


def test_origins_of_send_retry_delayed_move_and_internal(
    stub_broker: StubBroker, stub_worker: Worker
) -> None:
    """A send, its retry, a delayed send moved to its queue, and a marked internal enqueue."""
    origins = Origins()
    stub_broker.add_middleware(origins)
    attempts = []

    @dramatiq.actor(max_retries=1, min_backoff=1, max_backoff=1)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    @dramatiq.actor
    def later() -> None: ...

    flaky.send()
    stub_broker.join(flaky.queue_name)
    stub_worker.join()
    assert origins.seen == [("flaky", "send"), ("flaky", "retry"), ("flaky", "delayed_move")]

    origins.seen.clear()
    later.send_with_options(delay=1)
    stub_broker.join(later.queue_name)
    stub_worker.join()
    assert origins.seen == [("later", "send"), ("later", "delayed_move")]

    origins.seen.clear()
    with dr.internal_enqueue("redrive"):
        later.send()
    assert origins.seen == [("later", "redrive")]
    assert dr.is_producer_send(later.message()) is True
