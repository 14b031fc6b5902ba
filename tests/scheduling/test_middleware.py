"""Scheduling middleware: run status through real workers, the scheduler's life cycle, scans."""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.backends.cron import InflightMessage
from dramatiq_resilience.scheduling import occurrence_message_id, run_scan
from dramatiq_resilience.scheduling.scans import SCAN_QUEUE, registered_scans

from .conftest import Sent, named

T0 = 1_767_225_600_000


@pytest.fixture
def stack(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> Any:
    # The breaker (on by default) touches the backend per message, and the health scorer sends a
    # heartbeat when the worker stops; these tests count Scheduling's calls.
    return dr.install(
        stub_broker,
        backend=stub_backend,
        breaker=False,
        health=False,
        scheduling={"run_scheduler": False, "scans": False},
    )


def fire(broker: Any, backend: dr.StateBackend, clock: dr.FakeClock, job: str) -> str:
    scheduler = dr.Scheduler(broker, backend=backend, clock=clock, scans=False).start(timer=False)
    clock.advance(60_000)
    assert scheduler.fire_due(job) == "claimed"
    return occurrence_message_id(job, clock.now_ms())


def process(broker: StubBroker) -> None:
    worker = Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join("default", fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_a_successful_run_is_recorded(
    stub_broker: StubBroker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    stack: Any,
    captured: list[dr.Event],
) -> None:
    """A run that succeeds: status succeeded, no longer pending; started/finished events."""

    @dr.cron(every=60_000)
    @dramatiq.actor
    def job() -> None:
        pass

    message_id = fire(stub_broker, stub_backend, clock, "job")
    process(stub_broker)
    state = dr.CronJobs(stub_backend).get("job")
    assert (state.last_status, state.last_message_id, state.pending_message_id, state.last_error) == (
        "succeeded", message_id, None, None
    )  # fmt: skip
    assert [e["message_id"] for e in named(captured, "cron_started")] == [message_id]
    assert [(e["status"], e["error"]) for e in named(captured, "cron_finished")] == [("succeeded", None)]


def test_a_retried_run_stays_pending_and_its_final_failure_is_recorded(
    stub_broker: StubBroker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    stack: Any,
    captured: list[dr.Event],
) -> None:
    """A failing run is "retrying" (still pending) while Retries re-enqueues it, then "failed"."""

    @dr.cron(every=60_000)
    @dramatiq.actor(max_retries=1, min_backoff=10, max_backoff=10)
    def flaky() -> None:
        raise ValueError("the report server is down")

    message_id = fire(stub_broker, stub_backend, clock, "flaky")
    process(stub_broker)
    assert [(e["status"], e["error"]) for e in named(captured, "cron_finished")] == [
        ("retrying", "ValueError: the report server is down"),
        ("failed", "ValueError: the report server is down"),
    ]
    state = dr.CronJobs(stub_backend).get("flaky")
    assert (state.last_status, state.last_error, state.pending_message_id) == (
        "failed", "ValueError: the report server is down", None
    )  # fmt: skip
    failed = named(captured, "cron_failed")
    assert [(e["job"], e["message_id"], type(e["error"]).__name__) for e in failed] == [
        ("flaky", message_id, "ValueError")
    ]


def test_a_deferred_run_stays_pending(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, stack: Any
) -> None:
    """A run deferred by a later middleware is "deferred" and keeps the job's pending mark."""

    class DeferOnce(dr.ResilienceMiddleware):
        def __init__(self) -> None:
            super().__init__(backend=stub_backend, on_backend_error="allow")

        def before_process_message(self, broker: Any, message: Any) -> None:
            if not message.options.get("deferrals"):
                self.defer(broker, message, delay_ms=10_000, reason="test", jitter_ms=0)

    stub_broker.add_middleware(DeferOnce(), before=dramatiq.middleware.Retries)

    @dr.cron(every=60_000)
    @dramatiq.actor
    def job() -> None:
        pass

    message_id = fire(stub_broker, stub_backend, clock, "job")
    worker = Worker(stub_broker, worker_timeout=50)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while dr.CronJobs(stub_backend).get("job").last_status != "deferred" and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    state = dr.CronJobs(stub_backend).get("job")
    assert (state.last_status, state.pending_message_id) == ("deferred", message_id)


def test_non_cron_messages_cost_no_backend_call(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, stack: Any
) -> None:
    """Plain messages are only tracked in memory (no backend operation, no job state)."""
    calls: list[str] = []
    original = stub_backend.atomic

    def counting() -> Any:
        calls.append("atomic")
        return original()

    stub_backend.atomic = counting  # type: ignore[method-assign]

    @dramatiq.actor
    def plain() -> None:
        pass

    for _ in range(5):
        plain.send()
    process(stub_broker)
    assert calls == []


def test_workers_run_a_scheduler_and_stop_it(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, sent: Sent
) -> None:
    """after_worker_boot starts a scheduler (real APScheduler timer); shutdown stops it cleanly."""
    stack = dr.install(
        stub_broker, backend=stub_backend, scheduling={"poll_interval": 200, "scans": ["stalled"]}
    )
    stub_backend.clock = dr.SystemClock()

    @dr.cron(every=1_000, overlap="allow")
    @dramatiq.actor
    def beat() -> None:
        pass

    worker = Worker(stub_broker, worker_timeout=50)
    worker.start()
    try:
        scheduler = stack.scheduling.scheduler
        assert scheduler is not None
        assert sorted(scheduler.jobs) == ["beat", "scan:stalled"]
        assert f"{SCAN_QUEUE}" in stub_broker.get_declared_queues()
        deadline = time.monotonic() + 10
        while len(sent.of("beat")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert stack.scheduling.scheduler is None
    occurrences = sent.occurrences("beat")
    assert len(occurrences) >= 2
    assert [b - a for a, b in itertools.pairwise(occurrences)] == [1_000] * (len(occurrences) - 1)
    count = len(sent.of("beat"))
    time.sleep(1.2)
    assert len(sent.of("beat")) == count  # stopped: nothing fires any more


def test_the_stalled_scan_reports_long_running_messages(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, captured: list[dr.Event]
) -> None:
    """In-flight snapshots are published; the scan reports messages past stalled_after."""
    stack = dr.install(stub_broker, backend=stub_backend, scheduling={"stalled_after": 60_000})

    @dramatiq.actor(scan_stalled_after=5_000)
    def quick() -> None: ...

    @dramatiq.actor
    def slow() -> None: ...

    tracker = stack.scheduling.tracker
    tracker.process = "host:1:abc"
    tracker.started(quick.message())
    clock.advance(1_000)
    tracker.started(slow.message())
    tracker.publish()
    clock.advance(5_000)
    assert run_scan(stub_broker, "stalled") == {"processes": 1, "running": 2, "stalled": 1}
    clock.advance(55_000)
    tracker.publish()  # what the tracker's thread does every 10 s
    assert run_scan(stub_broker, "stalled") == {"processes": 1, "running": 2, "stalled": 2}
    stalled = named(captured, "message_stalled")
    assert [(e["actor_name"], e["running_ms"], e["process"]) for e in stalled] == [
        ("quick", 6_000, "host:1:abc"),
        ("quick", 61_000, "host:1:abc"),
        ("slow", 60_000, "host:1:abc"),
    ]
    assert [(e["scan"], e["counts"]) for e in named(captured, "scan_completed")] == [
        ("stalled", {"processes": 1, "running": 2, "stalled": 1}),
        ("stalled", {"processes": 1, "running": 2, "stalled": 2}),
    ]
    clock.advance(30_000)  # three 10 s intervals without a publish: the snapshot expired
    assert run_scan(stub_broker, "stalled") == {"processes": 0, "running": 0, "stalled": 0}


def test_registered_scans_are_interval_jobs_of_internal_actors(
    stub_broker: StubBroker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    sent: Sent,
    captured: list[dr.Event],
) -> None:
    """register_scan(): the scheduler sends its actor on the scans' queue; a worker runs it."""
    dr.install(stub_broker, backend=stub_backend, scheduling={"run_scheduler": False})
    seen: list[int] = []

    def depth(context: dr.ScanContext) -> dict[str, int]:
        seen.append(context.now_ms)
        return {"queues": 3}

    dr.register_scan("queue_depth", depth, every=15_000)
    try:
        scheduler = dr.Scheduler(
            stub_broker, clock=clock, scans=["queue_depth", "stalled"], scan_every={"stalled": 120_000}
        ).start(timer=False)
        assert {name: job.schedule.describe() for name, job in scheduler.jobs.items()} == {
            "scan:queue_depth": "every 15000 ms",
            "scan:stalled": "every 120000 ms",
        }
        clock.advance(14_999)
        scheduler.tick()  # a starting scheduler leaves the first interval to those already running
        assert sent.of("dramatiq_resilience.scan.queue_depth") == []
        clock.advance(1)
        scheduler.tick()
        [message] = sent.of("dramatiq_resilience.scan.queue_depth")
        assert message.queue_name == SCAN_QUEUE
        process_queue(stub_broker, SCAN_QUEUE)
    finally:
        dr.scheduling.unregister_scan("queue_depth")
    assert seen == [T0 + 15_000]
    assert [(e["scan"], e["counts"]) for e in named(captured, "scan_completed")] == [
        ("queue_depth", {"queues": 3})
    ]
    assert "queue_depth" not in registered_scans()


def process_queue(broker: StubBroker, queue: str) -> None:
    worker = Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join(queue, fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def test_a_failing_scan_fails_its_message(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, captured: list[dr.Event]
) -> None:
    """A scan that raises emits scan_failed and fails like any job (Dramatiq dead-letters it)."""
    dr.install(stub_broker, backend=stub_backend, scheduling={"run_scheduler": False})

    def broken(context: dr.ScanContext) -> dict[str, int]:
        raise RuntimeError("no luck")

    dr.register_scan("broken", broken, every=60_000)
    try:
        with pytest.raises(RuntimeError, match="no luck"):
            run_scan(stub_broker, "broken")
    finally:
        dr.scheduling.unregister_scan("broken")
    assert [(e["scan"], str(e["error"])) for e in named(captured, "scan_failed")] == [("broken", "no luck")]


def test_scan_names_and_intervals_are_checked(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """Unknown scan names, bad intervals and bad settings are ConfigurationErrors."""
    with pytest.raises(
        dr.ConfigurationError, match="option 'every': must be an interval in milliseconds >= 1000"
    ):
        dr.register_scan("fast", lambda context: None, every=10)
    known = "dead_letters_import, dead_letters_redrive, dead_letters_trim, dead_workers, health, stalled"
    with pytest.raises(dr.ConfigurationError, match=f"unknown scan\\(s\\) 'nope'; known: {known}"):
        dr.Scheduler(stub_broker, backend=stub_backend, scans=["nope"]).start(timer=False)
    with pytest.raises(dr.ConfigurationError, match="Option 'scan_every\\[stalled\\]': must be a duration"):
        dr.Scheduling(backend=stub_backend, scan_every={"stalled": 5})
    with pytest.raises(dr.ConfigurationError, match="Option 'scans': must be True, False or a list"):
        dr.Scheduling(backend=stub_backend, scans="stalled")


class StandInStore:
    """Answers like DeadLetterStore's trim / redrive_due / import_from (issue 6's API), and records calls."""

    def __init__(self, redrive: tuple[str, ...]) -> None:
        self.redrive = redrive
        self.calls: list[tuple[str, Any]] = []

    def trim(self) -> Any:
        self.calls.append(("trim", None))
        return SimpleNamespace(removed=5, by_age=3, by_count=2, released_claims=1)

    def redrive_due(self, broker: Any) -> Any:
        self.calls.append(("redrive_due", broker))
        return SimpleNamespace(requeued=4, policies={"gateway": object()})

    def import_from(self, broker: Any) -> Any:
        self.calls.append(("import_from", broker))
        return SimpleNamespace(
            imported=2, already_stored=7, queues={"default": object(), "payments": object()}
        )


class StandInDeadLetters(dramatiq.Middleware):
    def __init__(self, store: StandInStore) -> None:
        self.store = store


def test_dead_letter_scans_run_the_store_operations_when_the_piece_is_installed(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock
) -> None:
    """With a DeadLetters piece installed, trim / redrive / import are interval scans calling its store.

    A stand-in store checks the wiring and the intervals; test_dead_letter_scans.py runs the real one.
    """
    stack = dr.install(stub_broker, backend=stub_backend, scheduling={"run_scheduler": False}, health=False)
    stack.middleware.pop("dead_letters", None)  # without the piece, no dead-letter scans
    without = dr.Scheduler(stub_broker, clock=clock).start(timer=False)
    assert sorted(without.jobs) == ["scan:stalled"]
    store = StandInStore(redrive=("gateway",))
    stack.middleware["dead_letters"] = StandInDeadLetters(store)
    scheduler = dr.Scheduler(stub_broker, clock=clock).start(timer=False)
    assert {name: job.schedule.describe() for name, job in scheduler.jobs.items()} == {
        "scan:dead_letters_import": "every 60000 ms",
        "scan:dead_letters_redrive": "every 30000 ms",
        "scan:dead_letters_trim": "every 600000 ms",
        "scan:stalled": "every 60000 ms",
    }
    assert run_scan(stub_broker, "dead_letters_trim") == {
        "removed": 5,
        "by_age": 3,
        "by_count": 2,
        "released_claims": 1,
    }
    assert run_scan(stub_broker, "dead_letters_redrive") == {"requeued": 4, "policies": 1}
    assert run_scan(stub_broker, "dead_letters_import") == {"imported": 2, "already_stored": 7, "queues": 2}
    assert store.calls == [("trim", None), ("redrive_due", stub_broker), ("import_from", stub_broker)]
    store.redrive = ()  # no redrive policy: nothing to redrive, no scan
    assert "scan:dead_letters_redrive" not in dr.Scheduler(stub_broker, clock=clock).start(timer=False).jobs


def test_scans_work_with_the_middleware_added_by_hand(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock
) -> None:
    """Without install(), Scheduling added with add_middleware gives scans their backend and settings."""
    stub_broker.add_middleware(dr.Scheduling(backend=stub_backend, stalled_after=1_000))
    stub_backend.cron_inflight_publish(
        "host:1", [InflightMessage("m1", "report", "default", clock.now_ms())], ttl_ms=30_000
    )
    clock.advance(1_000)
    assert run_scan(stub_broker, "stalled") == {"processes": 1, "running": 1, "stalled": 1}


@pytest.fixture(params=["stub", "redis"])
def any_backend(request: pytest.FixtureRequest, clock: dr.FakeClock) -> Any:
    if request.param == "stub":
        yield dr.StubBackend(clock=clock)
        return
    url, namespace = request.getfixturevalue("redis_url"), request.getfixturevalue("namespace")
    backend = dr.RedisBackend(url=url, namespace=namespace, clock=clock)
    yield backend
    backend.close()


def duplicate_world(broker: StubBroker, backend: dr.StateBackend) -> tuple[list[int], Any]:
    dr.install(
        broker, backend=backend, breaker=False, health=False,
        scheduling={"run_scheduler": False, "scans": False},
    )  # fmt: skip
    ran: list[int] = []

    @dr.cron("0 * * * *")
    @dramatiq.actor(max_retries=0)
    def hourly() -> None:
        ran.append(1)

    return ran, hourly


def test_a_send_whose_confirmation_was_lost_runs_once(
    stub_broker: StubBroker,
    any_backend: dr.StateBackend,
    clock: dr.FakeClock,
    sent: Sent,
    captured: list[dr.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Enqueued, cron_sent failing for 7.5 s: another scheduler sends the same id again after the lease;
    the worker runs the first copy and skips the second (cron_skipped "duplicate")."""
    ran, _ = duplicate_world(stub_broker, any_backend)
    first, second = (dr.Scheduler(stub_broker, clock=clock, scans=False).start(timer=False) for _ in range(2))
    confirm, down = any_backend.cron_sent, [True]

    def flaky(*args: Any, **kwargs: Any) -> None:
        if down[0]:
            raise dr.BackendUnavailable("blip")
        confirm(*args, **kwargs)

    monkeypatch.setattr(any_backend, "cron_sent", flaky)
    clock.advance(3_600_000)
    assert first.fire_due("hourly") == "claimed"
    assert clock.now_ms() == T0 + 3_600_000 + 7_500  # confirmation retried for 3/4 of the lease
    down[0] = False
    clock.advance(2_499)
    second.poll()
    assert len(sent.of("hourly")) == 1
    clock.advance(1)  # the send lease ends
    second.poll()
    message_id = occurrence_message_id("hourly", T0 + 3_600_000)
    copies = sent.of("hourly")
    assert [m.message_id for m in copies] == [message_id, message_id]
    assert len({m.options["cron_send_id"] for m in copies}) == 2
    process(stub_broker)
    assert ran == [1]
    assert [(e["reason"], e["message_id"], e["occurrence_ms"]) for e in named(captured, "cron_skipped")] == [
        ("duplicate", message_id, T0 + 3_600_000)
    ]
    assert [e["status"] for e in named(captured, "cron_finished")] == ["succeeded"]
    state = dr.CronJobs(any_backend).get("hourly")
    assert (state.last_status, state.last_message_id, state.pending_message_id) == (
        "succeeded", message_id, None
    )  # fmt: skip


def test_a_blocked_enqueue_is_abandoned_at_half_the_lease_and_runs_once(
    stub_broker: StubBroker,
    any_backend: dr.StateBackend,
    clock: dr.FakeClock,
    sent: Sent,
    captured: list[dr.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """broker.enqueue hangs: abandoned after 5 s (cron_send_failed, TimeoutError), taken over when the
    lease ends; when the hung call goes through after all, the worker still runs the job once."""
    ran, _ = duplicate_world(stub_broker, any_backend)
    scheduler = dr.Scheduler(stub_broker, clock=clock, scans=False).start(timer=False)
    enqueue, gate, calls = stub_broker.enqueue, threading.Event(), []

    def hangs_once(message: Any, *, delay: Any = None) -> Any:
        calls.append(message.options["cron_send_id"])
        if len(calls) == 1:
            clock.advance(5_000)  # the connection hangs...
            assert gate.wait(10)  # ...until the test lets it go
        return enqueue(message, delay=delay)

    monkeypatch.setattr(stub_broker, "enqueue", hangs_once)
    clock.advance(3_600_000)
    assert scheduler.fire_due("hourly") == "claimed"
    [failed] = named(captured, "cron_send_failed")
    assert (type(failed["error"]), str(failed["error"])) == (
        TimeoutError, "the broker did not answer within 5000 milliseconds"
    )  # fmt: skip
    assert sent.of("hourly") == []
    clock.advance(5_000)  # the send lease ends
    scheduler.poll()
    message_id = occurrence_message_id("hourly", T0 + 3_600_000)
    assert [m.message_id for m in sent.of("hourly")] == [message_id]
    gate.set()
    for thread in threading.enumerate():
        if thread.name == "dramatiq-resilience-enqueue":
            thread.join(5)
    assert [m.options["cron_send_id"] for m in sent.of("hourly")] == [calls[1], calls[0]]
    process(stub_broker)
    assert ran == [1]
    assert [e["reason"] for e in named(captured, "cron_skipped")] == ["duplicate"]
    assert [(e["occurrence_ms"], e["recovered"]) for e in named(captured, "cron_fired")] == [
        (T0 + 3_600_000, True)
    ]


def test_a_hung_broker_gets_at_most_max_blocked_enqueues_at_once(
    stub_broker: StubBroker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    captured: list[dr.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every enqueue hangs: MAX_BLOCKED threads wait in the broker, later sends fail at once, and
    sending works again once the broker answers."""
    from dramatiq_resilience.scheduling.sender import MAX_BLOCKED

    _, _ = duplicate_world(stub_broker, stub_backend)
    scheduler = dr.Scheduler(stub_broker, clock=clock, scans=False).start(timer=False)
    enqueue, gate, calls = stub_broker.enqueue, threading.Event(), []

    def hangs(message: Any, *, delay: Any = None) -> Any:
        calls.append(message.message_id)
        clock.advance(5_000)  # each call hangs past its deadline...
        assert gate.wait(10)  # ...until the test lets them go
        return enqueue(message, delay=delay)

    monkeypatch.setattr(stub_broker, "enqueue", hangs)
    for hour in range(1, MAX_BLOCKED + 3):
        clock.set(T0 + hour * 3_600_000)
        assert scheduler.fire_due("hourly") == "claimed"
    assert len(calls) == MAX_BLOCKED
    errors = [str(e["error"]) for e in named(captured, "cron_send_failed")]
    assert errors[:MAX_BLOCKED] == ["the broker did not answer within 5000 milliseconds"] * MAX_BLOCKED
    assert (
        errors[MAX_BLOCKED:]
        == [f"{MAX_BLOCKED} earlier enqueues of this scheduler are still blocked; not starting another one"]
        * 2
    )
    gate.set()
    for thread in threading.enumerate():
        if thread.name == "dramatiq-resilience-enqueue":
            thread.join(5)
    monkeypatch.setattr(stub_broker, "enqueue", enqueue)
    clock.set(T0 + (MAX_BLOCKED + 3) * 3_600_000)
    assert scheduler.fire_due("hourly") == "claimed"
    assert named(captured, "cron_send_failed")[MAX_BLOCKED + 2 :] == []


def test_a_skipped_second_send_leaves_the_running_copy_tracked(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock
) -> None:
    """The copy that runs and its duplicate share a message id: skipping the duplicate must not untrack
    the running copy (the stalled scan would lose sight of it)."""
    from dramatiq.broker import MessageProxy

    _, hourly = duplicate_world(stub_broker, stub_backend)
    dr.Scheduler(stub_broker, clock=clock, scans=False).start(timer=False)  # registers the job
    scheduling = dr.installed(stub_broker).scheduling
    message = hourly.message_with_options(cron_job="hourly", cron_occurrence=T0)
    running = MessageProxy(message.copy(options={**message.options, "cron_send_id": "first"}))
    duplicate = MessageProxy(message.copy(options={**message.options, "cron_send_id": "second"}))
    scheduling.before_process_message(stub_broker, running)
    with pytest.raises(dramatiq.middleware.SkipMessage):
        scheduling.before_process_message(stub_broker, duplicate)
    scheduling.after_skip_message(stub_broker, duplicate)
    assert [m.message_id for m in scheduling.tracker.snapshot()] == [message.message_id]
    scheduling.after_process_message(stub_broker, running)
    assert scheduling.tracker.snapshot() == []
