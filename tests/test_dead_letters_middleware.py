"""DeadLetters middleware: every final failure is recorded once, with its context, through a real Worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, TimeLimit

import dramatiq_resilience as dr
from dramatiq_resilience.middleware.base import ResilienceMiddleware

from .helpers import fail_enqueues


@pytest.fixture
def stack(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> dr.Stack:
    # The breaker (on by default) would trip on these always-failing actors; not what is tested here.
    return dr.install(stub_broker, backend=stub_backend, breaker=False)


@pytest.fixture
def store(stack: dr.Stack) -> dr.DeadLetterStore:
    return stack.dead_letters.store  # type: ignore[no-any-return]


@pytest.fixture
def captured() -> Iterator[list[dr.Event]]:
    seen: list[dr.Event] = []
    dr.subscribe("dead_letter_captured", seen.append)
    yield seen
    dr.unsubscribe("dead_letter_captured", seen.append)


def settle(broker: StubBroker, worker: Worker, queue_name: str = "default") -> None:
    broker.join(queue_name, fail_fast=False)
    worker.join()


def only(store: dr.DeadLetterStore) -> dr.DeadLetterRecord:
    [record] = store.list().items
    assert isinstance(record, dr.DeadLetterRecord)
    return record


class GatewayDown(Exception):
    pass


def test_retries_exhausted_give_one_record_with_chain_traceback_and_times(
    stub_broker: StubBroker,
    stub_worker: Worker,
    store: dr.DeadLetterStore,
    clock: dr.FakeClock,
    captured: list[dr.Event],
) -> None:
    """max_retries=2: one transient record, attempts 3, the final traceback, its cause, first/last failure."""
    runs = []

    @dramatiq.actor(max_retries=2, min_backoff=1, max_backoff=2)
    def charge(order_id: str, amount: int) -> None:
        runs.append(clock.advance(1_000))
        try:
            raise ConnectionError(f"reset by peer on attempt {len(runs)}")
        except ConnectionError as exc:
            raise GatewayDown(f"gateway down for {order_id}") from exc

    message = charge.send("o-1", amount=1999)
    settle(stub_broker, stub_worker)
    record = only(store)
    assert (record.record_id, record.message_id) == (message.message_id, message.message_id)
    assert (record.actor_name, record.queue_name, record.args, record.kwargs) == (
        "charge",
        "default",
        ("o-1",),
        {"amount": 1999},
    )
    assert (record.category, record.attempts, record.status) == ("transient", 3, "dead")
    assert record.error_type == "tests.test_dead_letters_middleware.GatewayDown"
    assert record.error_message == "gateway down for o-1"
    assert "reset by peer on attempt 3" in record.traceback
    assert record.traceback.rstrip().endswith("GatewayDown: gateway down for o-1")
    [cause] = record.chain
    assert (cause.relation, cause.error_type, cause.error_message) == (
        "cause",
        "ConnectionError",
        "reset by peer on attempt 3",
    )
    assert (record.first_failure_at, record.last_failure_at) == (runs[0], runs[2])
    assert record.message_timestamp == message.message_timestamp
    assert record.options["retries"] == 3
    assert (record.pid > 0, record.version, record.source) == (True, dr.__version__, "capture")
    [event] = captured
    assert event.fields["record_id"] == record.record_id
    assert (event["category"], event["attempts"], event["replaced"]) == ("transient", 3, False)
    assert isinstance(event["exception"], GatewayDown)
    assert event["record"] == record


def test_throws_is_permanent_after_one_attempt(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """An exception in throws dead-letters at once: category permanent, attempts 1, no chain."""

    @dramatiq.actor(max_retries=5, throws=(GatewayDown,))
    def charge() -> None:
        raise GatewayDown("card declined")

    charge.send()
    settle(stub_broker, stub_worker)
    record = only(store)
    assert (record.category, record.attempts, record.chain) == ("permanent", 1, ())
    assert record.first_failure_at == record.last_failure_at


def test_time_limit_is_a_timeout(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """An actor killed by TimeLimit is recorded with category timeout."""
    assert any(isinstance(m, TimeLimit) for m in stub_broker.middleware)

    @dramatiq.actor(max_retries=0, time_limit=100)
    def slow() -> None:
        for _ in range(100):
            time.sleep(0.02)

    slow.send()
    settle(stub_broker, stub_worker)
    record = only(store)
    assert (record.category, record.error_type) == (
        "timeout",
        "dramatiq.middleware.time_limit.TimeLimitExceeded",
    )


def test_age_limit_is_expired(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """A message older than its max_age is skipped by AgeLimit and recorded as expired."""
    assert any(isinstance(m, AgeLimit) for m in stub_broker.middleware)

    @dramatiq.actor(max_age=1_000)
    def notify() -> None:
        raise AssertionError("an expired message must not run")

    stale = Message(
        queue_name="default",
        actor_name="notify",
        args=(),
        kwargs={},
        options={},
        message_timestamp=int(time.time() * 1000) - 60_000,
    )
    stub_broker.enqueue(stale)
    settle(stub_broker, stub_worker)
    record = only(store)
    assert (record.category, record.attempts, record.error_type) == (
        "expired",
        1,
        "dramatiq.middleware.middleware.SkipMessage",
    )


class RejectAll(ResilienceMiddleware):
    """A test middleware that rejects every message of actor "guarded"."""

    def __init__(self, backend: dr.StateBackend) -> None:
        super().__init__(backend=backend, on_backend_error="allow")

    def before_process_message(self, broker: Any, message: Any) -> None:
        if message.actor_name == "guarded":
            self.reject(
                message,
                dr.IdempotencyConflict(
                    "key reused",
                    actor_name=message.actor_name,
                    message_id=message.message_id,
                    key="charge:o-1",
                    existing_message_id="m-0",
                ),
            )


def test_resilience_rejections_are_rejected(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, store: dr.DeadLetterStore
) -> None:
    """A Rejected skip from a resilience middleware is recorded as rejected, never run."""
    stub_broker.add_middleware(RejectAll(stub_backend), before=dramatiq.middleware.Retries)

    @dramatiq.actor(max_retries=3)
    def guarded() -> None:
        raise AssertionError("a rejected message must not run")

    guarded.send()
    settle(stub_broker, stub_worker)
    record = only(store)
    assert (record.category, record.attempts) == ("rejected", 1)
    assert (record.error_type, record.error_message) == (
        "dramatiq_resilience.errors.IdempotencyConflict",
        "key reused",
    )


def test_unknown_actor_is_permanent(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """A message for an actor this worker does not know is recorded as permanent."""

    @dramatiq.actor
    def known() -> None:
        pass

    stub_broker.enqueue(Message(queue_name="default", actor_name="gone", args=(1,), kwargs={}, options={}))
    settle(stub_broker, stub_worker)
    # The consumer thread rejects it and records it outside the work queue that settle() waits for.
    deadline = time.monotonic() + 10
    while store.stats().dead == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    record = only(store)
    assert (record.actor_name, record.category, record.error_type) == (
        "gone",
        "permanent",
        "dramatiq.errors.ActorNotFound",
    )


def test_a_retry_that_cannot_be_enqueued_is_recorded(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """RetryGuard fails a message whose retry could not be enqueued; the record shows that attempt."""
    fail_enqueues(stub_broker, "retry")

    @dramatiq.actor(max_retries=3)
    def charge() -> None:
        raise GatewayDown("timeout")

    charge.send()
    settle(stub_broker, stub_worker)
    record = only(store)
    assert (record.category, record.attempts, record.error_type) == (
        "transient",
        1,
        "tests.test_dead_letters_middleware.GatewayDown",
    )


def test_redaction_hides_named_arguments_keywords_and_nested_keys(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """dead_letter_redact hides a positional argument by name, a keyword and nested dict keys."""

    @dramatiq.actor(max_retries=0, dead_letter_redact=["card", "Password"])
    def signup(user: str, card: str, profile: dict[str, Any], password: str = "") -> None:
        raise GatewayDown("no")

    signup.send("ann", "4242", {"name": "Ann", "password": "x", "cards": [{"card": "1"}]}, password="s3cret")
    settle(stub_broker, stub_worker)
    record = only(store)
    assert record.args == (
        "ann",
        "[redacted]",
        {"name": "Ann", "password": "[redacted]", "cards": [{"card": "[redacted]"}]},
    )
    assert record.kwargs == {"password": "[redacted]"}
    assert record.redacted == (
        "args[1](card)",
        "args[2].password",
        "args[2].cards[0].card",
        "kwargs.password",
    )


def test_bad_redaction_option_is_refused_at_declaration(stub_broker: StubBroker, stack: dr.Stack) -> None:
    """dead_letter_redact must be a list of names; a string is a configuration error."""
    with pytest.raises(dr.ConfigurationError, match="Actor 'f', option 'dead_letter_redact': must be a list"):

        @dramatiq.actor(dead_letter_redact="card")
        def f() -> None:
            pass


def test_successful_and_deferred_messages_leave_no_trace(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """Messages that succeed (even after a retry) are not recorded."""
    runs = []

    @dramatiq.actor(max_retries=2, min_backoff=1, max_backoff=2)
    def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise GatewayDown("once")

    flaky.send()
    settle(stub_broker, stub_worker)
    assert (len(runs), store.stats().total) == (2, 0)


def test_outage_is_logged_once_and_import_recovers_without_duplicates(
    stub_broker: StubBroker,
    stub_worker: Worker,
    stub_backend: dr.StubBackend,
    store: dr.DeadLetterStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Store down: failures stay in the broker's dead-letter queue, one warning; import takes each once."""
    failures: list[dr.Event] = []
    dr.subscribe("dead_letter_capture_failed", failures.append)

    @dramatiq.actor(max_retries=0)
    def charge(n: int) -> None:
        raise GatewayDown(f"down {n}")

    stub_backend.unavailable = True
    with caplog.at_level(logging.WARNING):
        for n in range(3):
            charge.send(n)
        settle(stub_broker, stub_worker)
    dr.unsubscribe("dead_letter_capture_failed", failures.append)
    assert [e["reason"] for e in failures] == ["backend_unavailable"] * 3
    assert (  # the dead letters' (a scheduler polling meanwhile says so too, once)
        sum(
            r.name.endswith(".DeadLetters") and "cannot reach its state backend" in r.getMessage()
            for r in caplog.records
        )
        == 1
    )
    assert len(stub_broker.dead_letters_by_queue["default"]) == 3

    stub_backend.unavailable = False
    charge.send(3)  # captured now, and also in the broker's dead-letter queue
    settle(stub_broker, stub_worker)
    report = store.import_from(stub_broker)
    item = report.queues["default"]
    assert (item.before, item.imported, item.already_stored, item.after) == (4, 3, 1, 0)
    categories = sorted(record.category for record in store.iterate())
    assert categories == ["imported", "imported", "imported", "transient"]
    again = store.import_from(stub_broker)
    assert (again.imported, again.already_stored) == (0, 0)


def test_a_redriven_message_that_fails_again_gets_a_new_record_with_its_history(
    stub_broker: StubBroker, stub_worker: Worker, store: dr.DeadLetterStore
) -> None:
    """Requeue resets retries; the next failure is recorded as <id>-r1 carrying the redrive."""
    attempts = []

    @dramatiq.actor(max_retries=1, min_backoff=1, max_backoff=2)
    def charge() -> None:
        attempts.append(1)
        raise GatewayDown("still down")

    message = charge.send()
    settle(stub_broker, stub_worker)
    report = store.requeue([message.message_id], broker=stub_broker)
    assert report.requeued == [message.message_id]
    settle(stub_broker, stub_worker)
    assert len(attempts) == 4
    again = store.get(f"{message.message_id}-r1")
    assert again is not None
    assert (again.attempts, again.message_id, again.redrive_count) == (2, message.message_id, 1)
    assert again.redrives[0].record_id == message.message_id
    first = store.get(message.message_id)
    assert first is not None and first.status == "requeued"


def test_install_places_dead_letters_before_retries(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """install(): DeadLetters right before Retries, after the guard; dead_letters=False leaves it out."""
    stack = dr.install(stub_broker, backend=stub_backend, dead_letters={"redact": ["card"], "max_count": 10})
    order = [type(m).__name__ for m in stub_broker.middleware]
    assert order.index("DeadLetters") + 1 == order.index("Retries")
    assert order.index("RetryGuard") == 0
    assert (stack.dead_letters.redact, stack.dead_letters.store.max_count) == (("card",), 10)
    other = StubBroker()
    dr.install(other, backend=stub_backend, dead_letters=False)
    assert not any(isinstance(m, dr.DeadLetters) for m in other.middleware)
    other.close()
