"""Unique enqueue: send refuses a duplicate while its key is pending, running or completed."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import MiddlewareError

import dramatiq_resilience as dr
from dramatiq_resilience.middleware.dedup import Deduplication

DAY = 86_400_000


@pytest.fixture
def seen() -> Iterator[list[dr.Event]]:
    events: list[dr.Event] = []
    dr.subscribe("*", events.append)
    yield events
    dr.unsubscribe("*", events.append)


def install(broker: Any, backend: dr.StateBackend, **options: Any) -> Deduplication:
    return dr.install(broker, backend=backend, dedup=options or True).dedup  # type: ignore[no-any-return]


def declare_charge(runs: list[str] | None = None, **options: Any) -> dramatiq.Actor[Any, Any]:
    @dramatiq.actor(dedup_key=lambda order_id, **_: f"charge:{order_id}", dedup_on_enqueue=True, **options)
    def charge(order_id: str, amount: int = 5) -> None:
        if runs is not None:
            runs.append(order_id)

    return charge


def test_duplicate_send_raises_with_the_first_message(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """While the key is pending, send raises DuplicateMessage carrying the first message and its id."""
    install(stub_broker, stub_backend)
    charge = declare_charge()
    first = charge.send_with_options(args=("order-1",), on_failure="alert")
    with pytest.raises(dr.DuplicateMessage) as info:
        charge.send("order-1")
    error = info.value
    assert isinstance(error, MiddlewareError)
    assert (error.key, error.existing_message_id, error.state, error.conflict, error.actor_name) == (
        "charge:order-1",
        first.message_id,
        "pending",
        False,
        "charge",
    )
    original = error.existing_message
    assert (original.message_id, original.args, original.options) == (
        first.message_id,
        ("order-1",),
        {"on_failure": "alert"},
    )
    assert original.message_timestamp == first.message_timestamp
    assert stub_broker.queues["default"].qsize() == 1
    [refused] = [e for e in seen if e.name == "dedup_refused"]
    assert (refused["key"], refused["existing_message_id"], refused["state"]) == (
        "charge:order-1",
        first.message_id,
        "pending",
    )
    record = stub_backend.dedup_inspect("charge:order-1")
    assert record is not None
    assert (record.state, record.confirmed, record.expires_at - record.created_at) == ("pending", True, DAY)


def test_duplicate_send_is_refused_while_running_and_completed_then_passes_after_the_ttl(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, clock: dr.FakeClock
) -> None:
    """in_progress and completed refuse too; once dedup_ttl has passed, a new send goes through."""
    install(stub_broker, stub_backend)
    release = threading.Event()
    started = threading.Event()

    @dramatiq.actor(dedup_key=lambda order_id: order_id, dedup_on_enqueue=True, dedup_ttl=60_000)
    def charge(order_id: str) -> None:
        started.set()
        release.wait(10)

    first = charge.send("order-1")
    assert started.wait(10)
    with pytest.raises(dr.DuplicateMessage) as running:
        charge.send("order-1")
    assert (running.value.state, running.value.existing_message_id) == ("in_progress", first.message_id)
    release.set()
    stub_broker.join("default")
    stub_worker.join()
    with pytest.raises(dr.DuplicateMessage) as completed:
        charge.send("order-1")
    assert completed.value.state == "completed"
    clock.advance(60_000)
    assert charge.send("order-1").message_id != first.message_id


def test_different_arguments_are_refused_as_a_conflict(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """The same key with other arguments is refused at send, flagged as a conflict."""
    install(stub_broker, stub_backend)
    charge = declare_charge()
    charge.send("order-1", 5)
    with pytest.raises(dr.DuplicateMessage, match="with different arguments") as info:
        charge.send("order-1", 7)
    assert info.value.conflict is True
    assert [e["where"] for e in seen if e.name == "dedup_conflict"] == ["enqueue"]
    with pytest.raises(dr.DuplicateMessage):
        dr.send_unique(charge, "order-1", 7)


def test_retries_deferrals_and_redrives_pass_through(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """Re-enqueues of the message holding the key are never refused."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id, dedup_on_enqueue=True, max_retries=2, min_backoff=10)
    def charge(order_id: str) -> None:
        runs.append(order_id)
        if len(runs) == 1:
            raise RuntimeError("gateway timeout")

    message = charge.send("order-1")
    stub_broker.join("default")
    stub_worker.join()
    assert runs == ["order-1", "order-1"]
    assert stub_broker.dead_letters == []
    stub_backend.dedup_forget("order-1")
    charge.send("order-2")
    with dr.internal_enqueue("redrive"):
        stub_broker.enqueue(charge.message("order-2"))
    with dr.internal_enqueue("deferral"):
        stub_broker.enqueue(message.copy(), delay=10)
    stub_broker.join("default")
    stub_worker.join()


def test_ten_threads_sending_one_key_enqueue_exactly_one_message(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """Ten concurrent sends of one key: one message enqueued, nine DuplicateMessage with its id."""
    install(stub_broker, stub_backend)
    charge = declare_charge()
    sent, refused = _race(lambda: charge.send("order-1"))
    assert len(sent) == 1
    assert [error.existing_message_id for error in refused] == [sent[0].message_id] * 9
    assert stub_broker.queues["default"].qsize() == 1


def test_ten_threads_sending_one_key_on_redis_enqueue_exactly_one_message(
    redis_broker: RedisBroker, redis_url: str, namespace: str
) -> None:
    """The same race on RedisBroker + RedisBackend (real Lua, real time): exactly one message in Redis."""
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    install(redis_broker, backend)
    charge = declare_charge()
    sent, refused = _race(lambda: charge.send("order-1"))
    assert len(sent) == 1
    assert len(refused) == 9
    queue = f"{redis_broker.namespace}:default"
    assert redis_broker.client.llen(queue) == 1
    assert redis_broker.client.hkeys(f"{queue}.msgs") == [sent[0].options["redis_message_id"].encode()]
    backend.close()


def _race(send: Any) -> tuple[list[Any], list[dr.DuplicateMessage]]:
    barrier = threading.Barrier(10)
    sent: list[Any] = []
    refused: list[dr.DuplicateMessage] = []

    def one() -> None:
        barrier.wait()
        try:
            sent.append(send())
        except dr.DuplicateMessage as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return sent, refused


def test_send_unique_returns_the_new_or_the_existing_message(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """send_unique gives the new message when the key is free, the stored original when it is taken."""
    install(stub_broker, stub_backend)
    charge = declare_charge()
    first = dr.send_unique(charge, "order-1", amount=5)
    again = dr.send_unique(charge, "order-1", amount=5)
    assert (again.message_id, again.args, again.kwargs) == (first.message_id, ("order-1",), {"amount": 5})
    delayed = dr.send_unique_with_options(charge, args=("order-2",), delay=1_000)
    assert dr.send_unique_with_options(charge, args=("order-2",)).message_id == delayed.message_id
    assert stub_broker.queues["default"].qsize() == 1
    assert stub_broker.queues["default.DQ"].qsize() == 1
    record = stub_backend.dedup_inspect("charge:order-2")
    assert record is not None
    assert record.expires_at - record.created_at == DAY + 1_000  # dedup_ttl plus the delay


def test_send_unique_works_without_dedup_on_enqueue(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """On an actor with only processing-time dedup, send_unique reserves too, and finds completed keys."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None: ...

    first = charge.send("order-1")
    stub_broker.join("default")
    stub_worker.join()
    existing = dr.send_unique(charge, "order-1")
    assert (existing.message_id, existing.args, existing.actor_name) == (
        first.message_id,
        ("order-1",),
        "charge",
    )
    second = charge.send("order-1")  # a plain send is not refused: the actor has no dedup_on_enqueue
    assert second.message_id != first.message_id


def test_send_unique_needs_a_dedup_key_and_the_middleware(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """Clear errors when send_unique cannot do what it says."""

    @dramatiq.actor
    def before_install() -> None: ...

    with pytest.raises(dr.ConfigurationError, match="needs the Deduplication middleware"):
        dr.send_unique(before_install)
    install(stub_broker, stub_backend)

    @dramatiq.actor
    def plain() -> None: ...

    with pytest.raises(
        dr.ConfigurationError, match="Actor 'plain': send_unique\\(\\) needs the actor to have"
    ):
        dr.send_unique(plain)
    assert stub_broker.queues["default"].qsize() == 0


class FailingQueue:
    """Makes the next put on a StubBroker queue fail (the broker is down), after every before_enqueue ran."""

    def __init__(self, broker: StubBroker, queue_name: str = "default") -> None:
        self.queue = broker.queues[queue_name]
        self.real_put = self.queue.put
        self.queue.put = self.put  # type: ignore[method-assign]
        self.fail = True

    def put(self, item: Any, *args: Any, **kwargs: Any) -> None:
        if self.fail:
            self.fail = False
            raise dramatiq.errors.ConnectionClosed("broker down")
        self.real_put(item, *args, **kwargs)


def test_failed_enqueue_releases_the_reservation(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock
) -> None:
    """send_unique releases at once; a plain send's reservation times out, or the next send frees it."""
    install(stub_broker, stub_backend, reservation_timeout=30_000)
    charge = declare_charge()
    failing = FailingQueue(stub_broker)

    with pytest.raises(dramatiq.errors.ConnectionClosed):
        dr.send_unique(charge, "order-1")
    assert stub_backend.dedup_inspect("charge:order-1") is None
    assert dr.send_unique(charge, "order-1").message_id

    failing.fail = True
    with pytest.raises(dramatiq.errors.ConnectionClosed):
        charge.send("order-2")
    record = stub_backend.dedup_inspect("charge:order-2")
    assert record is not None
    assert (record.state, record.confirmed, record.expires_at - record.created_at) == (
        "pending",
        False,
        30_000,
    )
    refused: list[Exception] = []
    other = threading.Thread(target=lambda: _capture(refused, lambda: charge.send("order-2")))
    other.start()
    other.join()
    assert [type(error) for error in refused] == [dr.DuplicateMessage]
    clock.advance(30_000)
    assert stub_backend.dedup_inspect("charge:order-2") is None

    failing.fail = True
    with pytest.raises(dramatiq.errors.ConnectionClosed):
        charge.send("order-3")
    assert charge.send("order-3").message_id  # this thread's next send released the stale reservation


def _capture(errors: list[Exception], call: Any) -> None:
    try:
        call()
    except Exception as exc:
        errors.append(exc)


def test_backend_down_at_send_sends_without_reservation_by_default(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """on_enqueue_backend_error="send": the message goes out (processing-time dedup still holds)."""
    install(stub_broker, stub_backend)
    charge = declare_charge()
    stub_backend.unavailable = True
    charge.send("order-1")
    charge.send("order-1")
    assert stub_broker.queues["default"].qsize() == 2
    assert [e["key"] for e in seen if e.name == "dedup_unreserved"] == ["charge:order-1"] * 2
    assert [e["first"] for e in seen if e.name == "backend_error"] == [True, False]


def test_backend_down_at_send_refuses_when_configured(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """on_enqueue_backend_error="refuse": send raises UniqueEnqueueUnavailable; nothing is enqueued."""
    install(stub_broker, stub_backend, on_enqueue_backend_error="refuse")
    charge = declare_charge()
    stub_backend.unavailable = True
    with pytest.raises(dr.UniqueEnqueueUnavailable) as info:
        charge.send("order-1")
    assert isinstance(info.value, dr.BackendUnavailable)
    assert (info.value.key, info.value.actor_name) == ("charge:order-1", "charge")
    assert stub_broker.queues["default"].qsize() == 0


def test_message_dead_lettered_before_claiming_frees_its_reservation(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """A message rejected by an earlier middleware (AgeLimit) frees its key, so it can be sent again."""
    install(stub_broker, stub_backend)
    runs: list[str] = []
    charge = declare_charge(runs, max_age=1_000)
    message = charge.message("order-1")
    stub_broker.enqueue(dataclasses.replace(message, message_timestamp=message.message_timestamp - 5_000))
    assert stub_backend.dedup_inspect("charge:order-1").state == "pending"  # type: ignore[union-attr]
    stub_broker.join("default", fail_fast=False)
    stub_worker.join()
    assert runs == []
    assert len(stub_broker.dead_letters) == 1
    assert stub_backend.dedup_inspect("charge:order-1") is None
    assert [e["reason"] for e in seen if e.name == "dedup_released"] == ["dead_lettered"]


def test_bad_key_at_send_is_a_configuration_error(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """A key function that fails at send raises ConfigurationError to the producer, naming the option."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(dedup_key=lambda order_id: 7, dedup_on_enqueue=True)
    def charge(order_id: str) -> None: ...

    with pytest.raises(dr.ConfigurationError, match="Actor 'charge', option 'dedup_key': must return a"):
        charge.send("order-1")
