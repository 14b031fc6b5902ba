"""Deduplication at processing time: claim, complete, skip, defer, conflict, release (StubBroker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

import dramatiq_resilience as dr
from dramatiq_resilience.middleware.dedup import Deduplication

KEY = "charge:order-1"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def seen() -> Iterator[list[dr.Event]]:
    """Every event emitted during the test."""
    events: list[dr.Event] = []
    dr.subscribe("*", events.append)
    yield events
    dr.unsubscribe("*", events.append)


def names(events: list[dr.Event], prefix: str = "dedup_") -> list[str]:
    return [event.name for event in events if event.name.startswith(prefix)]


def install(broker: StubBroker, backend: dr.StubBackend, **options: Any) -> Deduplication:
    # The breaker (on by default) is not what these tests are about.
    stack = dr.install(broker, backend=backend, breaker=False, dedup=options or True)
    return stack.dedup  # type: ignore[no-any-return]


def join(broker: StubBroker, worker: Worker, queue: str = "default") -> None:
    broker.join(queue, fail_fast=False)
    worker.join()


def test_completed_duplicate_is_skipped_and_counted(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """The second message with a completed key is acked without running, with a dedup_skipped event."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id, **_: f"charge:{order_id}")
    def charge(order_id: str, amount: int) -> None:
        runs.append(order_id)

    first = charge.send("order-1", 5)
    join(stub_broker, stub_worker)
    second = charge.send("order-1", 5)
    join(stub_broker, stub_worker)
    assert runs == ["order-1"]
    assert stub_broker.dead_letters == []
    [skipped] = [e for e in seen if e.name == "dedup_skipped"]
    assert skipped.fields == {
        "actor_name": "charge",
        "queue_name": "default",
        "message_id": second.message_id,
        "key": KEY,
        "existing_message_id": first.message_id,
    }
    assert names(seen) == ["dedup_claimed", "dedup_completed", "dedup_skipped"]


def test_in_progress_duplicate_waits_and_is_skipped_once_the_first_completes(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """A duplicate of a running key is deferred (duplicate_in_progress), never run alongside, then skipped."""
    install(stub_broker, stub_backend, busy_delay=20)
    release = threading.Event()
    running, most, runs = [0], [0], []
    lock = threading.Lock()

    @dramatiq.actor(dedup_key=lambda order_id: f"charge:{order_id}")
    def charge(order_id: str) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        runs.append(order_id)
        release.wait(10)
        with lock:
            running[0] -= 1

    charge.send("order-1")
    wait_until(lambda: runs == ["order-1"])
    charge.send("order-1")
    wait_until(lambda: sum(e.name == "message_deferred" for e in seen) >= 2)
    release.set()
    join(stub_broker, stub_worker)
    assert (runs, most[0]) == (["order-1"], 1)
    deferred = [e for e in seen if e.name == "message_deferred"]
    assert {e["reason"] for e in deferred} == {"duplicate_in_progress"}
    assert names(seen)[-1] == "dedup_skipped"
    assert stub_broker.dead_letters == []


def test_duplicate_runs_when_the_first_fails_for_good(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """The waiting duplicate runs once the first is dead-lettered (its key was forgotten)."""
    install(stub_broker, stub_backend, busy_delay=20)
    release = threading.Event()
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: f"charge:{order_id}", max_retries=0)
    def charge(order_id: str) -> None:
        runs.append(order_id)
        if len(runs) == 1:
            release.wait(10)
            raise RuntimeError("gateway down")

    first = charge.send("order-1")
    wait_until(lambda: len(runs) == 1)
    second = charge.send("order-1")
    wait_until(lambda: any(e.name == "message_deferred" for e in seen))
    release.set()
    join(stub_broker, stub_worker)
    assert runs == ["order-1", "order-1"]
    assert [m.message_id for m in stub_broker.dead_letters] == [first.message_id]
    released = [e for e in seen if e.name == "dedup_released"]
    assert [(e["message_id"], e["reason"]) for e in released] == [(first.message_id, "dead_lettered")]
    record = stub_backend.dedup_inspect(KEY)
    assert record is not None
    assert (record.state, record.owner, record.claims) == ("completed", second.message_id, 1)


def test_payload_conflict_is_dead_lettered_with_a_clear_error(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """The same key with other arguments is dead-lettered (IdempotencyConflict) without running."""
    install(stub_broker, stub_backend)
    runs: list[int] = []

    @dramatiq.actor(dedup_key=lambda order_id, **_: f"charge:{order_id}", max_retries=3)
    def charge(order_id: str, amount: int) -> None:
        runs.append(amount)

    first = charge.send("order-1", 5)
    join(stub_broker, stub_worker)
    second = charge.send("order-1", 7)
    join(stub_broker, stub_worker)
    assert runs == [5]
    [dead] = stub_broker.dead_letters
    assert dead.message_id == second.message_id
    error = dead._exception
    assert isinstance(error, dr.IdempotencyConflict)
    assert (error.key, error.existing_message_id, error.actor_name, error.reason) == (
        KEY,
        first.message_id,
        "charge",
        "idempotency_conflict",
    )
    assert str(error) == (
        f"Deduplication key {KEY!r} of actor 'charge' is held (completed) by message {first.message_id!r} "
        f"with different arguments; message {second.message_id!r} was dead-lettered without running. "
        "Make the key include every argument that changes the work, or set dedup_payload_check=False."
    )
    assert dead.options.get("retries", 0) == 0
    assert names(seen)[-1] == "dedup_conflict"
    assert [e["reason"] for e in seen if e.name == "message_rejected"] == ["idempotency_conflict"]


def test_failed_attempt_releases_the_claim_and_the_retry_succeeds(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """A failure releases the key to pending; the retry claims it again and completes."""
    install(stub_broker, stub_backend)
    attempts: list[int] = []

    @dramatiq.actor(dedup_key=lambda order_id: f"charge:{order_id}", max_retries=2, min_backoff=10)
    def charge(order_id: str) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise RuntimeError("gateway timeout")

    message = charge.send("order-1")
    join(stub_broker, stub_worker)
    assert attempts == [1, 2]
    assert stub_broker.dead_letters == []
    assert [(e.name, e.fields.get("reason")) for e in seen if e.name.startswith("dedup_")] == [
        ("dedup_claimed", None),
        ("dedup_released", "failed"),
        ("dedup_claimed", None),
        ("dedup_completed", None),
    ]
    record = stub_backend.dedup_inspect(KEY)
    assert record is not None
    assert (record.state, record.owner, record.claims, record.takeovers) == (
        "completed",
        message.message_id,
        2,
        0,
    )


def test_final_failure_forgets_the_key_so_a_new_send_runs(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """After a message is dead-lettered, the key is free: the next message with it runs."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: f"charge:{order_id}", max_retries=0)
    def charge(order_id: str) -> None:
        runs.append(order_id)
        if len(runs) == 1:
            raise RuntimeError("card declined")

    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert stub_backend.dedup_inspect(KEY) is None
    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert runs == ["order-1", "order-1"]
    assert stub_backend.dedup_inspect(KEY).state == "completed"  # type: ignore[union-attr]


def test_key_function_returning_none_turns_dedup_off_for_that_message(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """dedup_key returning None: the message runs without a claim, every time."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: None if order_id == "test" else f"charge:{order_id}")
    def charge(order_id: str) -> None:
        runs.append(order_id)

    for _ in range(2):
        charge.send("test")
        join(stub_broker, stub_worker)
    assert runs == ["test", "test"]
    assert names(seen) == []


def test_key_function_takes_the_arguments_by_name(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """lambda order_id, **_ works for positional and keyword sends, which count as the same payload."""
    install(stub_broker, stub_backend)
    runs: list[tuple[str, str, int]] = []

    @dramatiq.actor(dedup_key=lambda order_id, **_: f"charge:{order_id}")
    def charge(order_id: str, tenant: str, amount: int = 100) -> None:
        runs.append((order_id, tenant, amount))

    charge.send("order-1", "acme")
    join(stub_broker, stub_worker)
    charge.send(tenant="acme", order_id="order-1", amount=100)
    join(stub_broker, stub_worker)
    assert runs == [("order-1", "acme", 100)]
    assert stub_broker.dead_letters == []


def test_key_function_may_take_the_actor_arguments_positionally(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """A key function with other parameter names is called like the actor."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda a, b: f"pair:{a}:{b}")
    def pair(left: str, right: str) -> None:
        runs.append(left + right)

    pair.send("x", "y")
    pair.send("x", "y")
    join(stub_broker, stub_worker)
    assert runs == ["xy"]
    assert stub_backend.dedup_inspect("pair:x:y") is not None


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (lambda order_id: 42, "must return a non-empty string or None, got 42"),
        (lambda order_id: "", "must return a non-empty string or None, got ''"),
        (lambda order_id: "a{b}", "must return a string without '{' or '}' (they would break its hash tag)"),
        (lambda order_id: {}[order_id], "the key function raised KeyError('order-1')"),
    ],
)
def test_bad_key_dead_letters_the_message_naming_actor_and_option(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, key: Any, problem: str
) -> None:
    """A key function that fails or returns garbage dead-letters with InvalidMessage; nothing runs."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=key, max_retries=3)
    def charge(order_id: str) -> None:
        runs.append(order_id)

    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert runs == []
    [dead] = stub_broker.dead_letters
    error = dead._exception
    assert isinstance(error, dr.InvalidMessage)
    assert (error.option, error.actor_name) == ("dedup_key", "charge")
    assert str(error).startswith(f"Actor 'charge', option 'dedup_key': {problem}")


def test_constant_key_and_per_message_key(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """A string dedup_key is one key for every message; a message's dedup_key option overrides it."""
    install(stub_broker, stub_backend, payload_check=False)
    runs: list[int] = []

    @dramatiq.actor(dedup_key="nightly-report")
    def report(day: int) -> None:
        runs.append(day)

    report.send(1)
    join(stub_broker, stub_worker)
    report.send(2)
    report.send_with_options(args=(3,), dedup_key="report:3")
    report.send_with_options(args=(3,), dedup_key="report:3")
    join(stub_broker, stub_worker)
    assert runs == [1, 3]
    assert stub_backend.dedup_inspect("nightly-report").state == "completed"  # type: ignore[union-attr]
    assert stub_backend.dedup_inspect("report:3").state == "completed"  # type: ignore[union-attr]


def test_bad_per_message_key_option_is_rejected(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """A message's dedup_key must be a string: anything else dead-letters it with InvalidMessage."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(dedup_key="k")
    def job() -> None: ...

    job.send_with_options(dedup_key=5)
    join(stub_broker, stub_worker)
    [dead] = stub_broker.dead_letters
    assert isinstance(dead._exception, dr.InvalidMessage)
    assert dead._exception.option == "dedup_key"


def test_payload_check_off_skips_a_key_reused_with_other_arguments(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """dedup_payload_check=False: other arguments under a completed key are skipped, not dead-lettered."""
    install(stub_broker, stub_backend)
    runs: list[int] = []

    @dramatiq.actor(dedup_key=lambda order_id, **_: order_id, dedup_payload_check=False)
    def charge(order_id: str, amount: int) -> None:
        runs.append(amount)

    charge.send("order-1", 5)
    join(stub_broker, stub_worker)
    charge.send("order-1", 7)
    join(stub_broker, stub_worker)
    assert runs == [5]
    assert stub_broker.dead_letters == []
    assert stub_backend.dedup_inspect("order-1").payload == ""  # type: ignore[union-attr]


def test_store_result_keeps_the_return_value(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """dedup_store_result=True stores the actor's result with the completion."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(dedup_key=lambda order_id: order_id, dedup_store_result=True)
    def charge(order_id: str) -> dict[str, str]:
        return {"charge_id": f"ch_{order_id}"}

    charge.send("order-1")
    join(stub_broker, stub_worker)
    record = stub_backend.dedup_inspect("order-1")
    assert record is not None
    assert (record.has_result, record.result) == (True, {"charge_id": "ch_order-1"})


class DeferFirst(Middleware):
    """Defers each message once, after Deduplication has claimed it (a later middleware's skip)."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        if dr.deferral.deferral_count(message, "testing") == 0:
            dr.defer(broker, message, delay_ms=10, reason="testing", jitter_ms=0)


def test_claim_taken_then_skipped_by_a_later_middleware_is_released(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """after_skip_message gives the key back, so the deferred copy claims it and runs."""
    install(stub_broker, stub_backend)
    stub_broker.add_middleware(DeferFirst())
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None:
        runs.append(order_id)

    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert runs == ["order-1"]
    assert [(e.name, e.fields.get("reason")) for e in seen if e.name.startswith("dedup_")] == [
        ("dedup_claimed", None),
        ("dedup_released", "skipped"),
        ("dedup_claimed", None),
        ("dedup_completed", None),
    ]


def test_backend_down_defers_by_default_and_the_message_runs_once_it_is_back(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """on_backend_error="defer": nothing runs unprotected during an outage; it runs once afterwards."""
    install(stub_broker, stub_backend, backend_retry_delay=50)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None:
        runs.append(order_id)

    stub_backend.unavailable = True
    charge.send("order-1")
    wait_until(lambda: sum(e.name == "message_deferred" for e in seen) >= 2)
    assert runs == []
    stub_backend.unavailable = False
    join(stub_broker, stub_worker)
    assert runs == ["order-1"]
    assert {e["reason"] for e in seen if e.name == "message_deferred"} == {"backend_unavailable"}
    assert next(e["first"] for e in seen if e.name == "backend_error") is True
    assert sum(e.name == "backend_recovered" for e in seen) == 1


def test_backend_down_with_allow_runs_without_a_claim(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """on_backend_error="allow": the message runs, unprotected, and no claim is current."""
    install(stub_broker, stub_backend, on_backend_error="allow")
    claims: list[Any] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None:
        claims.append(dr.current_claim())

    stub_backend.unavailable = True
    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert claims == [None]


def test_completion_that_fails_is_settled_in_the_background(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """The backend blinks as the job ends: the renewer records the completion once it answers."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None:
        stub_backend.unavailable = True  # Redis goes away just before the completion

    message = charge.send("order-1")
    join(stub_broker, stub_worker)
    assert [e["action"] for e in seen if e.name == "dedup_settle_retrying"] == ["complete"]
    assert "dedup_completed" not in names(seen)
    stub_backend.unavailable = False
    wait_until(lambda: "dedup_completed" in names(seen))
    record = stub_backend.dedup_inspect("order-1")
    assert record is not None
    assert (record.state, record.owner) == ("completed", message.message_id)


def test_lease_defaults_from_the_time_limit(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """dedup_lease, else the time limit clamped to 1 s .. 60 s (Dramatiq's default 10 min gives 60 s)."""
    dedup = install(stub_broker, stub_backend)

    @dramatiq.actor(dedup_key="a")
    def default() -> None: ...

    @dramatiq.actor(dedup_key="b", time_limit=5_000)
    def short() -> None: ...

    @dramatiq.actor(dedup_key="c", time_limit=200)
    def tiny() -> None: ...

    @dramatiq.actor(dedup_key="d", time_limit=5_000, dedup_lease=300)
    def explicit() -> None: ...

    leases = [dedup.lease_for(stub_broker, actor.message()) for actor in (default, short, tiny, explicit)]
    assert leases == [60_000, 5_000, 1_000, 300]
    assert dedup.lease_for(stub_broker, short.message_with_options(time_limit=2_000)) == 2_000
    assert dedup.lease_for(stub_broker, explicit.message_with_options(dedup_lease=700)) == 700


def test_expired_lease_of_a_dead_worker_is_taken_over(
    stub_broker: StubBroker,
    stub_worker: Worker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    seen: list[dr.Event],
) -> None:
    """A key held by a worker that died is deferred until its lease ends, then taken over."""
    install(stub_broker, stub_backend, busy_delay=20)
    stub_backend.dedup_claim(
        "order-1", message_id="dead", actor_name="charge", token="t", lease_ms=5_000, ttl_ms=60_000
    )
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None:
        runs.append(order_id)

    charge.send("order-1")
    wait_until(lambda: any(e.name == "message_deferred" for e in seen))
    assert runs == []
    clock.advance(5_000)
    join(stub_broker, stub_worker)
    assert runs == ["order-1"]
    [claimed] = [e for e in seen if e.name == "dedup_claimed"]
    assert (claimed["takeover"], claimed["previous_owner"]) == (True, "dead")


def test_redelivered_message_waits_for_its_own_live_lease(
    stub_broker: StubBroker,
    stub_worker: Worker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    seen: list[dr.Event],
) -> None:
    """A message seen again while its earlier delivery's lease lives is deferred, never run twice at once."""
    install(stub_broker, stub_backend, busy_delay=20)
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None:
        runs.append(order_id)

    message = charge.message("order-1")
    stub_backend.dedup_claim(
        "order-1", message_id=message.message_id, actor_name="charge", token="t", lease_ms=5_000, ttl_ms=1
    )
    stub_broker.enqueue(message)
    wait_until(lambda: any(e.name == "message_deferred" for e in seen))
    assert runs == []
    clock.advance(5_000)
    join(stub_broker, stub_worker)
    assert runs == ["order-1"]


def test_busy_delay_grows_up_to_its_cap_and_never_past_the_lease(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """250, 500, 1000 ... 10 000 ms by deferral count, and at most the holder's remaining lease."""
    dedup = install(stub_broker, stub_backend)

    def delay(deferrals: int, retry_after: int = 60_000) -> int:
        options = {"deferral_counts": {"duplicate_in_progress": deferrals}} if deferrals else {}
        message = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options=options)
        return dedup.busy_delay_for(message, retry_after)

    assert [delay(n) for n in range(8)] == [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]
    assert delay(3, retry_after=700) == 700
    assert delay(100) == 10_000


def test_max_deferrals_dead_letters_a_duplicate_that_waited_too_long(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """dedup_max_deferrals=1: the second time a duplicate meets a running key it is dead-lettered."""
    install(stub_broker, stub_backend, busy_delay=10)
    release = threading.Event()
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id, dedup_max_deferrals=1)
    def charge(order_id: str) -> None:
        runs.append(order_id)
        release.wait(10)

    charge.send("order-1")
    wait_until(lambda: runs == ["order-1"])
    duplicate = charge.send("order-1")
    wait_until(lambda: len(stub_broker.dead_letters) == 1)
    release.set()
    join(stub_broker, stub_worker)
    [dead] = stub_broker.dead_letters
    assert dead.message_id == duplicate.message_id
    assert isinstance(dead._exception, dr.TooManyDeferrals)
    assert dead._exception.deferred_for == "duplicate_in_progress"
    assert runs == ["order-1"]


def test_commit_applies_effects_and_completes_once(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, seen: list[dr.Event]
) -> None:
    """Claim.commit() runs the writes and completes the key; the middleware does not complete it again."""
    install(stub_broker, stub_backend)
    effects: list[Any] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id)
    def charge(order_id: str) -> None:
        claim = dr.current_claim()
        assert claim is not None
        assert (claim.key, claim.hash_tag, claim.lease_ms) == ("order-1", "{order-1}", 60_000)
        claim.commit(effects.append, result="ch_1")

    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert effects == [None]
    record = stub_backend.dedup_inspect("order-1")
    assert record is not None
    assert (record.state, record.result) == ("completed", "ch_1")
    assert [(e.name, e.fields.get("committed")) for e in seen if e.name.startswith("dedup_")] == [
        ("dedup_claimed", None),
        ("dedup_completed", True),
    ]


def test_commit_after_the_key_was_taken_over_writes_nothing(
    stub_broker: StubBroker,
    stub_worker: Worker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    seen: list[dr.Event],
) -> None:
    """A stalled holder whose key was taken over gets LeaseLost from commit; its writes are not applied."""
    install(stub_broker, stub_backend)
    effects: list[Any] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id, dedup_lease=1_000, max_retries=0)
    def charge(order_id: str) -> None:
        clock.advance(1_000)  # this worker stalls past its lease; another takes the key over
        stub_backend.dedup_claim(
            order_id, message_id="other", actor_name="charge", token="t2", lease_ms=1_000, ttl_ms=1_000
        )
        claim = dr.current_claim()
        assert claim is not None
        claim.commit(effects.append)

    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert effects == []
    [dead] = stub_broker.dead_letters
    assert isinstance(dead._exception, dr.LeaseLost)
    assert dead._exception.key == "order-1"
    assert [e["at"] for e in seen if e.name == "dedup_lease_lost"] == ["commit"]
    record = stub_backend.dedup_inspect("order-1")
    assert record is not None
    assert (record.state, record.owner) == ("in_progress", "other")


def test_current_claim_is_none_for_actors_without_a_key(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """Actors without dedup_key have no claim, and cost no backend call."""
    install(stub_broker, stub_backend)
    claims: list[Any] = []

    @dramatiq.actor
    def plain() -> None:
        claims.append(dr.current_claim())

    stub_backend.unavailable = True  # any backend call would defer the message
    plain.send()
    join(stub_broker, stub_worker)
    assert claims == [None]


def test_bad_defaults_and_actor_options_are_configuration_errors(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """Bad values name the option (and the actor) and what was wrong."""
    with pytest.raises(dr.ConfigurationError, match="Option 'dedup_ttl': must be a duration in milliseconds"):
        Deduplication(backend=stub_backend, ttl=0)
    with pytest.raises(dr.ConfigurationError, match="Option 'on_enqueue_backend_error': must be one of"):
        Deduplication(backend=stub_backend, on_enqueue_backend_error="maybe")
    install(stub_broker, stub_backend)
    with pytest.raises(dr.ConfigurationError, match="Actor 'job', option 'dedup_key': must be a function"):

        @dramatiq.actor(dedup_key=12)
        def job() -> None: ...

    with pytest.raises(dr.ConfigurationError, match="Actor 'job2', option 'dedup_lease': must be a duration"):

        @dramatiq.actor(dedup_key="k", dedup_lease=5)
        def job2() -> None: ...


def test_deduplication_after_retries_is_a_configuration_error(stub_backend: dr.StubBackend) -> None:
    """Placed after Retries it could not see final failures: declaring an actor says where it goes."""
    broker = StubBroker()
    broker.add_middleware(Deduplication(backend=stub_backend))
    with pytest.raises(dr.ConfigurationError, match="Actor 'job': Deduplication must come before Retries"):

        @dramatiq.actor(broker=broker)
        def job() -> None: ...


@pytest.mark.parametrize(("value", "shown"), [("10 s", "'10 s'"), (0, "0"), (float("inf"), "inf")])
def test_a_bad_time_limit_option_dead_letters_the_message(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, value: Any, shown: str
) -> None:
    """The lease comes from time_limit: a bad one dead-letters with InvalidMessage; no key is claimed."""
    install(stub_broker, stub_backend)
    runs: list[int] = []

    @dramatiq.actor(dedup_key=lambda n: f"job:{n}", max_retries=3)
    def job(n: int) -> None:
        runs.append(n)

    job.send_with_options(args=(1,), time_limit=value)
    job.send_with_options(args=(2,), time_limit=None)  # unset: the default limit
    join(stub_broker, stub_worker)
    assert runs == [2]
    [dead] = stub_broker.dead_letters
    error = dead._exception
    assert isinstance(error, dr.InvalidMessage)
    assert (error.actor_name, error.option, dead.args) == ("job", "time_limit", (1,))
    assert (
        str(error)
        == f"Actor 'job', option 'time_limit': must be a positive number of milliseconds, got {shown}"
    )
    assert stub_backend.dedup_inspect("job:1") is None


def test_a_corrupt_record_dead_letters_the_message_instead_of_deferring_it(
    stub_broker: StubBroker,
    stub_worker: Worker,
    redis_backend: dr.RedisBackend,
    seen: list[dr.Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A record someone SET to a string: dead-lettered naming the key, no outage; forget, requeue, it runs."""
    dedup = install(stub_broker, redis_backend)  # type: ignore[arg-type]
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: f"charge:{order_id}", max_retries=3)
    def charge(order_id: str) -> None:
        runs.append(order_id)

    record = redis_backend.dedup_record_key(KEY)
    redis_backend.client.set(record, "oops")
    message = charge.send("order-1")
    join(stub_broker, stub_worker)
    assert runs == []
    [dead] = stub_broker.dead_letters
    error = dead._exception
    assert isinstance(error, dr.errors.CorruptDedupRecord)
    assert (error.key, error.actor_name, error.message_id) == (KEY, "charge", message.message_id)
    assert str(error) == (
        f"The record of deduplication key {KEY!r} (Redis key {record!r}) holds a string, not a hash; message "
        f"{message.message_id!r} of actor 'charge' was dead-lettered without running. Delete the record "
        f"(dramatiq-resilience dedup forget {KEY!r}), then requeue the message from the dead letters."
    )
    rejected = [e for e in seen if e.name == "message_rejected"]
    assert [e["reason"] for e in rejected] == ["corrupt_record"]
    assert not any(e.name in ("message_deferred", "backend_error") for e in seen)
    assert not any("cannot reach its state backend" in m for m in caplog.messages)

    assert dedup.forget(KEY) is None  # deletes the string
    stub_broker.enqueue(dead._message.copy(options={}))
    join(stub_broker, stub_worker)
    assert runs == ["order-1"]
    completed = redis_backend.dedup_inspect(KEY)
    assert completed is not None and completed.state == "completed"


def test_a_record_corrupted_while_the_actor_runs_is_not_settled_forever(
    stub_broker: StubBroker,
    stub_worker: Worker,
    redis_backend: dr.RedisBackend,
    seen: list[dr.Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The completion finds a string record: one error line, no background retries, no outage."""
    install(stub_broker, redis_backend)  # type: ignore[arg-type]
    record = redis_backend.dedup_record_key(KEY)

    @dramatiq.actor(dedup_key=lambda order_id: f"charge:{order_id}")
    def charge(order_id: str) -> None:
        redis_backend.client.set(record, "oops")

    charge.send("order-1")
    join(stub_broker, stub_worker)
    assert [e.name for e in seen if e.name.startswith("dedup_")] == ["dedup_claimed", "dedup_corrupt"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"Could not complete deduplication key {KEY!r} of message {seen[0]['message_id']!r}: The record of "
        f"deduplication key {KEY!r} (Redis key {record!r}) holds a string, not a hash."
    ]
    assert not any("cannot reach its state backend" in m for m in caplog.messages)


def test_a_unique_send_over_a_corrupt_record_is_sent_and_then_dead_lettered(
    stub_broker: StubBroker, stub_worker: Worker, redis_backend: dr.RedisBackend, seen: list[dr.Event]
) -> None:
    """Unique send over a string record: it is sent (no outage), then processing dead-letters it."""
    install(stub_broker, redis_backend, on_enqueue_backend_error="refuse")  # type: ignore[arg-type]
    runs: list[str] = []

    @dramatiq.actor(dedup_key=lambda order_id: f"charge:{order_id}", dedup_on_enqueue=True)
    def charge(order_id: str) -> None:
        runs.append(order_id)

    redis_backend.client.set(redis_backend.dedup_record_key(KEY), "oops")
    message = charge.send("order-1")
    join(stub_broker, stub_worker)
    assert runs == []
    assert [m.message_id for m in stub_broker.dead_letters] == [message.message_id]
    assert [e.name for e in seen if e.name.startswith("dedup_")] == ["dedup_unreserved", "dedup_corrupt"]
    assert not any(e.name == "backend_error" for e in seen)
