"""The scheduler on a fake clock: claims, coalescing, overlap, enable/disable, run-now, takeover."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.scheduling import occurrence_message_id

from .conftest import Sent, named

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the FakeClock's start


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def make_scheduler(broker: Any, backend: dr.StateBackend, clock: dr.FakeClock, **kwargs: Any) -> dr.Scheduler:
    return dr.Scheduler(broker, backend=backend, clock=clock, scans=False, **kwargs).start(timer=False)


@dataclass
class World:
    broker: StubBroker
    backend: dr.StubBackend
    clock: dr.FakeClock


@pytest.fixture
def world(stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock) -> World:
    return World(stub_broker, stub_backend, clock)


@pytest.fixture
def tick_actor(stub_broker: StubBroker) -> Any:
    @dramatiq.actor(max_retries=0)
    def tick() -> None:
        pass

    return tick


def test_an_interval_job_fires_each_occurrence_once_across_schedulers(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent, tick_actor: Any
) -> None:
    """Three schedulers ticking together send each occurrence once, with derived message ids."""
    dr.schedule(tick_actor, every=10_000, overlap="allow")
    schedulers = [make_scheduler(stub_broker, stub_backend, clock) for _ in range(3)]
    for _ in range(5):
        clock.advance(10_000)
        for scheduler in schedulers:
            scheduler.tick()
    assert sent.occurrences("tick") == [T0 + 10_000, T0 + 20_000, T0 + 30_000, T0 + 40_000, T0 + 50_000]
    assert [m.message_id for m in sent.of("tick")] == [
        occurrence_message_id("tick", T0 + n * 10_000) for n in range(1, 6)
    ]
    state = dr.CronJobs(stub_backend).get("tick")
    assert (state.last_fired_ms, state.next_run_ms, state.last_status) == (T0 + 50_000, T0 + 60_000, "queued")


def test_cron_jobs_follow_their_time_zone(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent
) -> None:
    """09:00 in Paris and in New York are 08:00 and 14:00 UTC in January."""

    @dr.cron("0 9 * * *", tz="Europe/Paris", name="paris")
    @dr.cron("0 9 * * *", tz="America/New_York", name="new-york")
    @dramatiq.actor
    def report() -> None:
        pass

    scheduler = make_scheduler(stub_broker, stub_backend, clock)
    for _ in range(24 * 4):
        clock.advance(15 * 60_000)
        scheduler.tick()
    fired = sorted((m.options["cron_job"], m.options["cron_occurrence"]) for m in sent.of("report"))
    assert fired == [("new-york", utc(2026, 1, 1, 14)), ("paris", utc(2026, 1, 1, 8))]


def run_day(broker: Any, backend: dr.StateBackend, clock: dr.FakeClock, start: int, hours: int) -> None:
    clock.set(start)
    scheduler = make_scheduler(broker, backend, clock)
    for _ in range(hours * 12):
        clock.advance(5 * 60_000)
        scheduler.tick()


def test_dst_skipped_hour_runs_fixed_jobs_once_an_hour_later(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent
) -> None:
    """Europe/Paris 2026-03-29 02:00 -> 03:00: "30 2" runs once at 03:30 CEST; "*/30" has no 02:xx."""

    @dr.cron("30 2 * * *", tz="Europe/Paris", name="fixed")
    @dr.cron("*/30 * * * *", tz="Europe/Paris", name="half-hourly", overlap="allow")
    @dramatiq.actor
    def job() -> None:
        pass

    run_day(stub_broker, stub_backend, clock, utc(2026, 3, 28, 23), 4)  # 00:00 to 05:00 Paris
    by_job = sent.by_job("job")
    assert by_job["fixed"] == [utc(2026, 3, 29, 1, 30)]  # 03:30 CEST
    assert by_job["half-hourly"] == [
        utc(2026, 3, 28, 23, 30),  # 00:30 CET
        utc(2026, 3, 29, 0, 0),  # 01:00 CET
        utc(2026, 3, 29, 0, 30),  # 01:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST: 02:00 and 02:30 do not exist
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2, 0),
        utc(2026, 3, 29, 2, 30),
        utc(2026, 3, 29, 3, 0),  # 05:00 CEST
    ]


def test_dst_repeated_hour_runs_fixed_jobs_once_and_wildcard_hours_twice(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent
) -> None:
    """Europe/Paris 2026-10-25 03:00 -> 02:00: "30 2" runs once (CEST); "0 *" runs at both 02:00."""

    @dr.cron("30 2 * * *", tz="Europe/Paris", name="fixed")
    @dr.cron("0 * * * *", tz="Europe/Paris", name="hourly", overlap="allow")
    @dramatiq.actor
    def job() -> None:
        pass

    run_day(stub_broker, stub_backend, clock, utc(2026, 10, 24, 22), 5)  # 00:00 CEST to 04:00 CET
    by_job = sent.by_job("job")
    assert by_job["fixed"] == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST only
    assert by_job["hourly"] == [
        utc(2026, 10, 24, 23),  # 01:00 CEST
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 1),  # 02:00 CET, the repeated hour
        utc(2026, 10, 25, 2),  # 03:00 CET
        utc(2026, 10, 25, 3),  # 04:00 CET
    ]


def test_missed_occurrences_within_grace_coalesce_into_one_run(
    world: World, sent: Sent, tick_actor: Any, captured: list[dr.Event]
) -> None:
    """A scheduler that wakes up late sends only the latest occurrence within grace."""
    stub_broker, stub_backend, clock = world.broker, world.backend, world.clock
    dr.schedule(tick_actor, every=1_000, misfire_grace=5_000, overlap="allow")
    scheduler = make_scheduler(stub_broker, stub_backend, clock)
    clock.advance(4_500)  # 4 occurrences due: T0+1s..T0+4s
    scheduler.tick()
    assert sent.occurrences("tick") == [T0 + 4_000]
    assert [(e["occurrence_ms"], e["coalesced"]) for e in named(captured, "cron_fired")] == [(T0 + 4_000, 3)]


def test_occurrences_later_than_the_grace_are_reported_missed_once(
    stub_broker: StubBroker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    sent: Sent,
    captured: list[dr.Event],
) -> None:
    """Beyond the grace nothing is sent, and one of two late schedulers reports the miss."""

    @dr.cron("0 * * * *", misfire_grace=60_000)
    @dramatiq.actor
    def hourly() -> None:
        pass

    first = make_scheduler(stub_broker, stub_backend, clock)
    second = make_scheduler(stub_broker, stub_backend, clock)
    clock.advance(3_600_000 + 61_000)  # both asleep until 01:01:01
    first.tick()
    second.tick()
    assert sent.of("hourly") == []
    assert [(e["job"], e["occurrence_ms"], e["late_ms"]) for e in named(captured, "cron_missed")] == [
        ("hourly", T0 + 3_600_000, 61_000)
    ]
    clock.advance(3_600_000 - 61_000)
    first.tick()
    assert sent.occurrences("hourly") == [T0 + 7_200_000]


def test_overlap_skip_waits_for_the_previous_run(
    stub_broker: StubBroker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    sent: Sent,
    captured: list[dr.Event],
) -> None:
    """overlap="skip": occurrences are skipped while the last run is queued; its end frees the job."""
    stack = dr.install(stub_broker, backend=stub_backend, scheduling={"run_scheduler": False})
    ran: list[int] = []

    @dr.cron(every=60_000)
    @dramatiq.actor
    def slow() -> None:
        ran.append(1)

    scheduler = make_scheduler(stub_broker, stub_backend, clock)
    clock.advance(60_000)
    scheduler.tick()
    clock.advance(60_000)
    scheduler.tick()  # the first run is still queued: skipped
    assert sent.occurrences("slow") == [T0 + 60_000]
    skipped = named(captured, "cron_skipped")
    assert [(e["occurrence_ms"], e["reason"], e["pending_message_id"]) for e in skipped] == [
        (T0 + 120_000, "overlap", occurrence_message_id("slow", T0 + 60_000))
    ]
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    stack.scheduling.scans = False
    worker.start()
    try:
        stub_broker.join("default")
        worker.join()
    finally:
        worker.stop()
    assert ran == [1]
    clock.advance(60_000)
    scheduler.tick()
    assert sent.occurrences("slow") == [T0 + 60_000, T0 + 180_000]


def test_disabled_jobs_are_skipped_by_every_scheduler_until_enabled(
    world: World, sent: Sent, tick_actor: Any, captured: list[dr.Event]
) -> None:
    """disable() is honoured by every instance (one skip event per occurrence); enable() resumes."""
    stub_broker, stub_backend, clock = world.broker, world.backend, world.clock
    dr.schedule(tick_actor, every=10_000, overlap="allow")
    schedulers = [make_scheduler(stub_broker, stub_backend, clock) for _ in range(2)]
    jobs = dr.CronJobs(stub_backend)
    jobs.disable("tick")
    assert jobs.get("tick").enabled is False
    for _ in range(2):
        clock.advance(10_000)
        for scheduler in schedulers:
            scheduler.tick()
    assert sent.of("tick") == []
    assert [(e["occurrence_ms"], e["reason"]) for e in named(captured, "cron_skipped")] == [
        (T0 + 10_000, "disabled"),
        (T0 + 20_000, "disabled"),
    ]
    jobs.enable("tick")
    clock.advance(10_000)
    for scheduler in schedulers:
        scheduler.tick()
    assert sent.occurrences("tick") == [T0 + 30_000]
    with pytest.raises(dr.UnknownJob, match=r"No cron job 'tock' is registered; known jobs: tick\."):
        jobs.disable("tock")


def test_run_now_requests_are_sent_once_by_one_scheduler(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent, tick_actor: Any
) -> None:
    """A run-now request is taken by one scheduler's poll and sent once, marked cron_run_now."""
    dr.schedule(tick_actor, "0 0 1 1 *")
    schedulers = [make_scheduler(stub_broker, stub_backend, clock) for _ in range(3)]
    dr.CronJobs(stub_backend).run_now("tick")
    for scheduler in schedulers:
        scheduler.poll()
    [message] = sent.of("tick")
    assert (message.options["cron_job"], message.options["cron_run_now"]) == ("tick", True)
    state = dr.CronJobs(stub_backend).get("tick")
    assert (state.run_requested, state.pending_message_id, state.last_status) == (
        False,
        message.message_id,
        "queued",
    )


def test_a_claim_whose_sender_died_is_sent_by_another_scheduler(
    world: World, sent: Sent, tick_actor: Any, captured: list[dr.Event]
) -> None:
    """A scheduler that claimed an occurrence and died: another sends it after the send lease."""
    stub_broker, stub_backend, clock = world.broker, world.backend, world.clock
    dr.schedule(tick_actor, "0 * * * *")  # hourly: recovered by a poll, not by the next claim
    survivor = make_scheduler(stub_broker, stub_backend, clock)
    clock.advance(3_600_000)
    message_id = occurrence_message_id("tick", T0 + 3_600_000)
    claim = stub_backend.cron_claim(  # what the dead scheduler did before it died
        "tick", T0 + 3_600_000, message_id, next_run_ms=None, skip_if_pending=True,
        lease_ms=3_600_000, send_lease_ms=10_000, grace_ms=60_000,
    )  # fmt: skip
    assert claim.status == "claimed"
    survivor.tick()  # "taken": the dead one holds it
    assert sent.of("tick") == []
    clock.advance(10_001)
    survivor.tick()
    assert [m.message_id for m in sent.of("tick")] == [message_id]
    assert [(e["occurrence_ms"], e["recovered"]) for e in named(captured, "cron_fired")] == [
        (T0 + 3_600_000, True)
    ]
    clock.advance(60_000)
    survivor.tick()
    assert len(sent.of("tick")) == 1


def test_a_new_scheduler_sends_the_latest_occurrence_missed_while_none_ran(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent, tick_actor: Any
) -> None:
    """After every scheduler was down, the first to start sends the latest occurrence within grace."""
    dr.schedule(tick_actor, every=10_000, misfire_grace=30_000, overlap="allow")
    first = make_scheduler(stub_broker, stub_backend, clock)
    clock.advance(10_000)
    first.tick()
    first.shutdown()
    clock.advance(45_000)  # T0+55s: 20s..50s missed, 30s..50s within grace
    make_scheduler(stub_broker, stub_backend, clock)
    assert sent.occurrences("tick") == [T0 + 10_000, T0 + 50_000]


def test_a_new_job_does_not_fire_for_the_past(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent, tick_actor: Any
) -> None:
    """A job that never fired starts from now: no catch-up at first start."""
    clock.advance(5_000)
    dr.schedule(tick_actor, every=10_000, misfire_grace=30_000)
    make_scheduler(stub_broker, stub_backend, clock).tick()
    assert sent.of("tick") == []


def test_jitter_delays_each_run_by_a_derived_amount(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent, tick_actor: Any
) -> None:
    """jitter=ms delays the message by the same value in [0, jitter] whichever scheduler sends it."""
    job = dr.schedule(tick_actor, every=10_000, jitter=5_000, overlap="allow")
    scheduler = make_scheduler(stub_broker, stub_backend, clock)
    delays = []
    for n in range(1, 6):
        clock.advance(10_000)
        scheduler.tick()
        delays.append(job.delay_for(occurrence_message_id("tick", T0 + n * 10_000)))
    assert [delay for _, delay in sent.messages] == delays
    assert all(0 <= delay <= 5_000 for delay in delays) and len(set(delays)) == 5


def test_a_backend_outage_delays_the_occurrence_within_grace(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, clock: dr.FakeClock, sent: Sent, tick_actor: Any
) -> None:
    """While the backend is down nothing is sent; when it answers the occurrence goes out."""
    dr.schedule(tick_actor, every=10_000, overlap="allow")
    scheduler = make_scheduler(stub_broker, stub_backend, clock)
    clock.advance(10_000)
    stub_backend.unavailable = True
    scheduler.tick()
    assert sent.of("tick") == []
    stub_backend.unavailable = False
    clock.advance(2_000)
    scheduler.tick()
    assert sent.occurrences("tick") == [T0 + 10_000]


def test_a_send_the_broker_refused_is_retried_by_the_next_claim(
    world: World, sent: Sent, tick_actor: Any, captured: list[dr.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broker down: the send fails after retries (cron_send_failed); after the send lease it goes out."""
    broker, clock = world.broker, world.clock
    dr.schedule(tick_actor, every=10_000, overlap="allow")
    scheduler = make_scheduler(broker, world.backend, clock, send_lease=1_000)
    enqueue = broker.enqueue

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("broker down")

    monkeypatch.setattr(broker, "enqueue", down)
    clock.advance(10_000)
    scheduler.tick()  # retries for half the send lease (0.5 s), then gives up
    assert [(e["job"], type(e["error"]).__name__) for e in named(captured, "cron_send_failed")] == [
        ("tick", "ConnectionError")
    ]
    monkeypatch.setattr(broker, "enqueue", enqueue)
    clock.advance(10_000)
    scheduler.tick()
    assert sent.occurrences("tick") == [T0 + 10_000, T0 + 20_000]
    assert [(e["occurrence_ms"], e["recovered"]) for e in named(captured, "cron_fired")] == [
        (T0 + 10_000, True),
        (T0 + 20_000, False),
    ]


@pytest.fixture(params=["stub", "redis"])
def make_backend(request: pytest.FixtureRequest) -> Any:
    """Builds a StubBackend or a RedisBackend (private server, own namespace) on a given clock."""
    made: list[dr.StateBackend] = []

    def make(clock: dr.FakeClock) -> dr.StateBackend:
        if request.param == "stub":
            backend: dr.StateBackend = dr.StubBackend(clock=clock)
        else:
            url, namespace = request.getfixturevalue("redis_url"), request.getfixturevalue("namespace")
            backend = dr.RedisBackend(url=url, namespace=namespace, clock=clock)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def died_after_claiming(backend: dr.StateBackend, job: str, occurrence: int, **kwargs: Any) -> str:
    """What a scheduler that died between its claim and its send left: a claim, nothing sent."""
    message_id = occurrence_message_id(job, occurrence)
    options = {"skip_if_pending": True, "lease_ms": 3_600_000, "grace_ms": 60_000, **kwargs}
    claim = backend.cron_claim(job, occurrence, message_id, next_run_ms=None, send_lease_ms=10_000, **options)
    assert claim.status == "claimed"
    return message_id


def test_a_restarted_single_scheduler_sends_what_it_claimed_before_it_died(
    stub_broker: StubBroker,
    clock: dr.FakeClock,
    sent: Sent,
    tick_actor: Any,
    make_backend: Any,
    captured: list[dr.Event],
) -> None:
    """The only scheduler claims 01:00 and dies; restarted, its poll sends 01:00 when the lease ends."""
    backend = make_backend(clock)
    dr.schedule(tick_actor, "0 * * * *")
    first = make_scheduler(stub_broker, backend, clock)
    first.sender.send = lambda *args, **kwargs: True  # type: ignore[method-assign]  # dies before sending
    clock.advance(3_600_000)
    assert first.fire_due("tick") == "claimed"
    first.shutdown()
    clock.advance(5_000)
    restarted = make_scheduler(stub_broker, backend, clock)
    assert sent.of("tick") == []
    clock.advance(4_999)
    restarted.poll()
    assert sent.of("tick") == []  # the lease (10 s from the claim) has not ended
    clock.advance(1)
    restarted.poll()
    assert [m.message_id for m in sent.of("tick")] == [occurrence_message_id("tick", T0 + 3_600_000)]
    assert [(e["occurrence_ms"], e["recovered"]) for e in named(captured, "cron_fired")] == [
        (T0 + 3_600_000, True)
    ]
    assert dr.CronJobs(backend).get("tick").last_status == "queued"
    clock.advance(3_600_000)
    restarted.tick()
    assert sent.occurrences("tick") == [T0 + 3_600_000, T0 + 7_200_000]
    assert named(captured, "cron_missed") == []


def test_a_scheduler_started_after_the_lease_ended_sends_the_unsent_occurrence_at_once(
    stub_broker: StubBroker, clock: dr.FakeClock, sent: Sent, tick_actor: Any, make_backend: Any
) -> None:
    """A fresh scheduler that never saw the claim takes the expired send over in start()."""
    backend = make_backend(clock)
    dr.schedule(tick_actor, "0 * * * *")
    clock.advance(3_600_000)
    message_id = died_after_claiming(backend, "tick", T0 + 3_600_000)
    clock.advance(10_000)
    make_scheduler(stub_broker, backend, clock)
    assert [m.message_id for m in sent.of("tick")] == [message_id]


def test_an_unsent_occurrence_past_its_grace_is_reported_once_and_does_not_block_the_job(
    stub_broker: StubBroker,
    clock: dr.FakeClock,
    sent: Sent,
    tick_actor: Any,
    make_backend: Any,
    captured: list[dr.Event],
) -> None:
    """misfire_grace (5 s) < send_lease (10 s): a dead claimer's occurrence is missed ("unsent"), once;
    overlap="skip" skips only the occurrence during its lease, then the job runs again."""
    backend = make_backend(clock)
    dr.schedule(tick_actor, every=5_000, misfire_grace=5_000)
    schedulers = [make_scheduler(stub_broker, backend, clock) for _ in range(2)]
    clock.advance(5_000)
    died_after_claiming(backend, "tick", T0 + 5_000, grace_ms=5_000)
    for _ in range(2):  # T0+10s (its lease still runs), T0+15s (it ended at T0+15s)
        clock.advance(5_000)
        for scheduler in schedulers:
            scheduler.tick()
    assert sent.occurrences("tick") == [T0 + 15_000]
    assert [(e["occurrence_ms"], e["reason"]) for e in named(captured, "cron_skipped")] == [
        (T0 + 10_000, "overlap")
    ]
    state = dr.CronJobs(backend).get("tick")
    assert state.pending_message_id == occurrence_message_id("tick", T0 + 15_000)
    assert [(e["occurrence_ms"], e["reason"], e["late_ms"]) for e in named(captured, "cron_missed")] == [
        (T0 + 5_000, "unsent", 10_000)
    ]


def test_a_poll_before_the_lease_ends_does_not_forget_the_takeover(
    stub_broker: StubBroker,
    clock: dr.FakeClock,
    sent: Sent,
    tick_actor: Any,
    make_backend: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dead claimer claimed 500 ms after the survivor read its clock: the poll at the survivor's
    idea of the lease end finds nothing, a later poll still sends the occurrence."""
    backend = make_backend(clock)
    dr.schedule(tick_actor, "0 * * * *")
    survivor = make_scheduler(stub_broker, backend, clock)
    claim, raced = backend.cron_claim, []

    def slow_claim(name: str, occurrence: Any, *args: Any, **kwargs: Any) -> Any:
        if occurrence is not None and not raced:  # the survivor's call reaches the backend late
            clock.advance(500)
            raced.append(occurrence_message_id(name, occurrence))
            died = claim(name, occurrence, raced[0], *args[1:], **kwargs)  # the other scheduler's
            assert died.status == "claimed"
        return claim(name, occurrence, *args, **kwargs)

    monkeypatch.setattr(backend, "cron_claim", slow_claim)
    clock.advance(3_600_000)
    assert survivor.fire_due("tick") == "taken"  # the lease ends at T0+1h+10.5s
    clock.advance(10_001 - 500)
    survivor.poll()
    assert sent.of("tick") == []
    clock.advance(499)
    survivor.poll()
    assert [m.message_id for m in sent.of("tick")] == raced


def test_a_failed_confirmation_is_retried_so_nobody_sends_again(
    stub_broker: StubBroker,
    clock: dr.FakeClock,
    sent: Sent,
    tick_actor: Any,
    make_backend: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cron_sent fails twice (a blip): retried after 50 and 100 ms; no takeover after the lease."""
    backend = make_backend(clock)
    dr.schedule(tick_actor, "0 * * * *")
    schedulers = [make_scheduler(stub_broker, backend, clock) for _ in range(2)]
    confirm, failures = backend.cron_sent, [2]

    def blip(*args: Any, **kwargs: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise dr.BackendUnavailable("blip")
        confirm(*args, **kwargs)

    monkeypatch.setattr(backend, "cron_sent", blip)
    clock.advance(3_600_000)
    schedulers[0].tick()
    state = dr.CronJobs(backend).get("tick")
    assert (state.last_run_ms, state.last_status, clock.now_ms()) == (
        T0 + 3_600_150,
        "queued",
        T0 + 3_600_150,
    )
    clock.advance(60_000)
    for scheduler in schedulers:
        scheduler.tick()
    assert sent.occurrences("tick") == [T0 + 3_600_000]
