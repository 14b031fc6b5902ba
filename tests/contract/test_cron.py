"""Contract: the scheduler's backend operations (``cron_*``), on StubBackend and RedisBackend."""

from __future__ import annotations

import pytest

from dramatiq_resilience import FakeClock, StateBackend
from dramatiq_resilience.backends.cron import (
    RUN_MEMORY,
    RUN_MEMORY_COUNT,
    CronClaim,
    CronJobState,
    CronSend,
    InflightMessage,
)

T0 = 1_767_225_600_000  # the FakeClock's start
SPEC = {"actor_name": "report", "queue_name": "default", "schedule": "*/5 * * * *", "timezone": "UTC"}


def claim(
    backend: StateBackend, occurrence: int | None, message_id: str = "m", **kwargs: object
) -> CronClaim:
    options: dict = {
        "next_run_ms": None,
        "skip_if_pending": False,
        "lease_ms": 60_000,
        "send_lease_ms": 10_000,
        "grace_ms": 30_000,
        **kwargs,
    }
    return backend.cron_claim("report", occurrence, message_id, **options)


def test_register_creates_an_enabled_job_and_keeps_state(backend: StateBackend, clock: FakeClock) -> None:
    """A registered job is listed, enabled, with its definition; registering again keeps its state."""
    backend.cron_register("report", SPEC, next_run_ms=T0 + 300_000)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.enabled, state.actor_name, state.schedule, state.next_run_ms) == (
        True, "report", "*/5 * * * *", T0 + 300_000
    )  # fmt: skip
    assert state.registered_ms == T0
    assert backend.cron_set_enabled("report", False) is True
    clock.advance(1_000)
    backend.cron_register("report", {**SPEC, "schedule": "0 * * * *"}, next_run_ms=None)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.enabled, state.schedule, state.next_run_ms, state.registered_ms) == (
        False, "0 * * * *", T0 + 300_000, T0 + 1_000
    )  # fmt: skip
    assert [job.name for job in backend.cron_jobs()] == ["report"]
    assert backend.cron_job("nope") is None


def test_an_occurrence_is_claimed_once(backend: StateBackend) -> None:
    """The first claim of an occurrence wins; the same or an older one is "taken"."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    first = claim(backend, T0, "m1", next_run_ms=T0 + 300_000)
    assert first == CronClaim("claimed", previous_ms=None)
    assert claim(backend, T0, "m1") == CronClaim("taken", previous_ms=T0)
    assert claim(backend, T0 - 300_000, "m0") == CronClaim("taken", previous_ms=T0)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.last_fired_ms, state.next_run_ms, state.pending_message_id) == (T0, T0 + 300_000, "m1")
    assert claim(backend, T0 + 300_000, "m2") == CronClaim("claimed", previous_ms=T0)


def test_a_disabled_job_skips_its_occurrence_once(backend: StateBackend) -> None:
    """Disabled: the first caller hears "disabled" (and reports the skip), the others "taken"."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    assert backend.cron_set_enabled("report", False) is True
    assert claim(backend, T0).status == "disabled"
    assert claim(backend, T0).status == "taken"
    assert backend.cron_set_enabled("report", True) is True
    assert claim(backend, T0 + 1).status == "claimed"
    assert backend.cron_set_enabled("missing", True) is False


def test_overlap_skip_until_the_pending_run_finishes_or_its_lease_ends(
    backend: StateBackend, clock: FakeClock
) -> None:
    """With skip_if_pending, an occurrence is skipped while the previous run is pending."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    assert claim(backend, T0, "m1", skip_if_pending=True).status == "claimed"
    backend.cron_sent("report", "m1", occurrence_ms=T0)
    second = claim(backend, T0 + 1_000, "m2", skip_if_pending=True)
    assert (second.status, second.pending_message_id) == ("overlap", "m1")
    assert claim(backend, T0 + 2_000, "m3", skip_if_pending=False).status == "claimed"  # overlap="allow"
    backend.cron_finished("report", "m3", status="succeeded")
    backend.cron_finished("report", "m1", status="succeeded")  # m3 took pending over: nothing to clear
    assert claim(backend, T0 + 3_000, "m4", skip_if_pending=True).status == "claimed"
    backend.cron_sent("report", "m4", occurrence_ms=T0 + 3_000)  # sent, then lost
    clock.advance(59_999)
    assert claim(backend, T0 + 4_000, "m5", skip_if_pending=True).status == "overlap"
    clock.advance(1)  # m4's 60 s lease is over: a lost message no longer blocks the job
    assert claim(backend, T0 + 5_000, "m6", skip_if_pending=True).status == "claimed"


def test_run_lifecycle_statuses_and_errors(backend: StateBackend, clock: FakeClock) -> None:
    """sent -> started -> finished record last run, status, error and clear the pending run."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    claim(backend, T0, "m1")
    clock.advance(5)
    backend.cron_sent("report", "m1", occurrence_ms=T0)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.last_run_ms, state.last_message_id, state.last_status) == (T0 + 5, "m1", "queued")
    clock.advance(1_000)
    backend.cron_started("report", "m1", lease_ms=60_000)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.last_status, state.pending_until_ms) == ("running", T0 + 61_005)
    backend.cron_finished("report", "m1", status="retrying", error="ValueError: boom", keep_pending=True)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.last_status, state.last_error, state.last_error_ms, state.pending_message_id) == (
        "retrying", "ValueError: boom", T0 + 1_005, "m1"
    )  # fmt: skip
    clock.advance(1_000)
    backend.cron_finished("report", "m1", status="succeeded")
    state = backend.cron_job("report")
    assert state is not None
    assert (state.last_status, state.last_error, state.last_finished_ms, state.pending_message_id) == (
        "succeeded", "ValueError: boom", T0 + 2_005, None
    )  # fmt: skip


def test_a_fast_worker_status_is_not_overwritten_by_the_confirmation(backend: StateBackend) -> None:
    """If the worker reported the run before the scheduler confirmed its send, the status stays."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    claim(backend, T0, "m1")
    backend.cron_started("report", "m1", lease_ms=60_000)
    backend.cron_finished("report", "m1", status="succeeded")
    backend.cron_sent("report", "m1", occurrence_ms=T0)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.last_status, state.pending_message_id, state.last_run_ms) == ("succeeded", None, T0)


def test_run_now_sent_marks_the_run_pending(backend: StateBackend, clock: FakeClock) -> None:
    """A run-now confirmed with a lease becomes the pending run (it claims no occurrence)."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    backend.cron_sent("report", "manual", lease_ms=5_000)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.pending_message_id, state.pending_until_ms, state.last_fired_ms) == (
        "manual",
        T0 + 5_000,
        None,
    )


def test_an_unconfirmed_send_is_taken_over_after_its_lease(backend: StateBackend, clock: FakeClock) -> None:
    """A claimer that died before confirming: its send is leased to the next caller, once."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    claim(backend, T0, "m1")
    clock.advance(9_999)
    assert claim(backend, None).recovered == ()
    clock.advance(1)
    taken = claim(backend, T0 + 60_000, "m2")
    assert (taken.status, taken.recovered) == ("claimed", (CronSend(T0, "m1"),))
    assert claim(backend, None).recovered == ()  # leased to the caller above for 10 s
    backend.cron_sent("report", "m1", occurrence_ms=T0)
    clock.advance(10_000)
    assert claim(backend, None) == CronClaim(
        "none", previous_ms=T0 + 60_000, recovered=(CronSend(T0 + 60_000, "m2"),)
    )


def test_an_unconfirmed_send_older_than_the_grace_is_dropped(backend: StateBackend, clock: FakeClock) -> None:
    """An unconfirmed send whose occurrence is older than the grace is dropped, not sent late."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    claim(backend, T0, "m1")
    clock.advance(30_001)
    assert claim(backend, None, grace_ms=30_000) == CronClaim(
        "none", previous_ms=T0, expired=(CronSend(T0, "m1"),)
    )
    assert claim(backend, None, grace_ms=30_000) == CronClaim("none", previous_ms=T0)


def job(backend: StateBackend, name: str = "report") -> CronJobState:
    state = backend.cron_job(name)
    assert state is not None
    return state


def test_an_unsent_occurrence_dropped_after_the_grace_stops_blocking_overlap_skip(
    backend: StateBackend, clock: FakeClock
) -> None:
    """Dropping an expired unconfirmed send clears the pending run it set, in the same claim."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    assert claim(backend, T0, "m1", skip_if_pending=True).status == "claimed"
    clock.advance(30_001)
    nxt = claim(backend, T0 + 31_000, "m2", skip_if_pending=True)
    assert nxt == CronClaim("claimed", previous_ms=T0, expired=(CronSend(T0, "m1"),))
    assert (job(backend).pending_message_id, job(backend).pending_until_ms) == ("m2", T0 + 90_001)


def test_dropping_an_unsent_occurrence_keeps_a_later_pending_run(
    backend: StateBackend, clock: FakeClock
) -> None:
    """A dropped send that is no longer the pending run leaves the pending run alone."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    claim(backend, T0, "m1")
    claim(backend, T0 + 1_000, "m2")  # overlap="allow": m2 is pending now
    backend.cron_sent("report", "m2", occurrence_ms=T0 + 1_000)
    clock.advance(30_001)
    assert claim(backend, None) == CronClaim("none", previous_ms=T0 + 1_000, expired=(CronSend(T0, "m1"),))
    assert (job(backend).pending_message_id, job(backend).pending_until_ms) == ("m2", T0 + 60_000)


def test_recover_runs_recovery_for_every_job_given(backend: StateBackend, clock: FakeClock) -> None:
    """cron_recover answers per job: expired sends leased to the caller or, past each grace, dropped."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    backend.cron_register("digest", SPEC, next_run_ms=None)
    claim(backend, T0, "r1")
    backend.cron_claim(
        "digest", T0, "d1", next_run_ms=None, skip_if_pending=True, lease_ms=60_000,
        send_lease_ms=10_000, grace_ms=60_000,
    )  # fmt: skip
    clock.advance(10_000)
    graces = {"report": 5_000, "digest": 60_000, "idle": 60_000}
    assert backend.cron_recover(graces, send_lease_ms=10_000) == {
        "report": CronClaim("none", previous_ms=T0, expired=(CronSend(T0, "r1"),)),
        "digest": CronClaim("none", previous_ms=T0, recovered=(CronSend(T0, "d1"),)),
        "idle": CronClaim("none"),
    }
    assert (job(backend, "report").pending_message_id, job(backend, "digest").pending_message_id) == (
        None, "d1"
    )  # fmt: skip
    assert backend.cron_recover(graces, send_lease_ms=10_000)["digest"] == CronClaim("none", previous_ms=T0)
    assert backend.cron_recover({}, send_lease_ms=10_000) == {}


def test_a_second_send_of_a_started_run_is_refused(backend: StateBackend, clock: FakeClock) -> None:
    """The first send id started wins; its redeliveries run, another send of the id is refused."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    claim(backend, T0, "m1")
    assert backend.cron_run_started("report", "m1") is False
    assert backend.cron_started("report", "m1", lease_ms=60_000, send_id="a") is True
    assert backend.cron_run_started("report", "m1") is True
    backend.cron_finished("report", "m1", status="succeeded")
    clock.advance(1_000)
    assert backend.cron_started("report", "m1", lease_ms=60_000, send_id="b") is False
    state = job(backend)
    assert (state.last_status, state.last_message_id, state.pending_message_id) == ("succeeded", "m1", None)
    assert backend.cron_started("report", "m1", lease_ms=60_000, send_id="a") is True  # a redelivery
    assert job(backend).last_status == "running"
    assert backend.cron_started("report", "m1", lease_ms=60_000) is True  # no send id: not checked
    assert backend.cron_started("report", "m3", lease_ms=60_000) is True
    assert backend.cron_run_started("report", "m3") is False  # nor remembered
    assert backend.cron_started("report", "m2", lease_ms=60_000, send_id="b") is True
    assert backend.cron_started("ghost", "m1", lease_ms=60_000, send_id="b") is True
    assert [state.name for state in backend.cron_jobs()] == ["report"]


def test_started_runs_are_remembered_for_a_day_and_a_thousand_runs(
    backend: StateBackend, clock: FakeClock
) -> None:
    """A started run is forgotten after RUN_MEMORY ms, or once RUN_MEMORY_COUNT later runs started."""
    assert (RUN_MEMORY, RUN_MEMORY_COUNT) == (86_400_000, 1_000)
    backend.cron_register("report", SPEC, next_run_ms=None)
    backend.cron_started("report", "old", lease_ms=1_000, send_id="a")
    clock.advance(RUN_MEMORY - 1)
    backend.cron_started("report", "new", lease_ms=1_000, send_id="a")
    assert backend.cron_started("report", "old", lease_ms=1_000, send_id="b") is False
    clock.advance(1)
    backend.cron_started("report", "newer", lease_ms=1_000, send_id="a")  # trims "old"
    assert backend.cron_started("report", "old", lease_ms=1_000, send_id="b") is True  # as a new run
    for n in range(RUN_MEMORY_COUNT - 3):  # "new", "newer" and "old" are remembered
        clock.advance(1)
        backend.cron_started("report", f"m{n}", lease_ms=1_000, send_id="a")
    assert backend.cron_started("report", "new", lease_ms=1_000, send_id="b") is False
    clock.advance(1)
    backend.cron_started("report", "last", lease_ms=1_000, send_id="a")  # one over the count
    assert backend.cron_started("report", "newer", lease_ms=1_000, send_id="b") is False
    assert backend.cron_started("report", "new", lease_ms=1_000, send_id="b") is True


def test_a_missed_occurrence_is_reported_once(backend: StateBackend) -> None:
    """Marking an occurrence missed moves the high-water mark for one caller, sends nothing."""
    assert backend.cron_register("report", SPEC, next_run_ms=None) is None
    assert claim(backend, T0, missed=True) == CronClaim("missed")
    assert claim(backend, T0, missed=True) == CronClaim("taken", previous_ms=T0)
    state = backend.cron_job("report")
    assert state is not None
    assert (state.last_fired_ms, state.pending_message_id) == (T0, None)
    assert backend.cron_register("report", SPEC, next_run_ms=None) == T0


def test_run_now_requests_are_taken_once_by_schedulers_that_know_the_job(backend: StateBackend) -> None:
    """A request for a known job is taken by one scheduler that has the job; unknown jobs are refused."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    assert backend.cron_request_run("nope") is False
    assert backend.cron_request_run("report") is True
    state = backend.cron_job("report")
    assert state is not None and state.run_requested is True
    assert backend.cron_take_requests(["other"]) == []
    assert backend.cron_take_requests(["other", "report"]) == ["report"]
    assert backend.cron_take_requests(["report"]) == []
    assert backend.cron_take_requests([]) == []


def test_started_and_finished_ignore_unknown_jobs(backend: StateBackend) -> None:
    """Reports for a job no scheduler registered create nothing."""
    backend.cron_started("ghost", "m", lease_ms=1_000)
    backend.cron_finished("ghost", "m", status="succeeded")
    backend.cron_sent("ghost", "m", occurrence_ms=T0)
    assert backend.cron_jobs() == []


def test_inflight_snapshots_expire(backend: StateBackend, clock: FakeClock) -> None:
    """Snapshots are replaced per process, deleted when empty, and expire after their TTL."""
    one = InflightMessage("m1", "report", "default", T0 - 5_000)
    two = InflightMessage("m2", "charge", "payments", T0 - 1_000)
    backend.cron_inflight_publish("host:1", [one], ttl_ms=30_000)
    backend.cron_inflight_publish("host:2", [one, two], ttl_ms=10_000)
    snapshots = backend.cron_inflight()
    assert [(s.process, s.published_ms, s.messages) for s in snapshots] == [
        ("host:1", T0, (one,)),
        ("host:2", T0, (one, two)),
    ]
    clock.advance(10_000)
    assert [s.process for s in backend.cron_inflight()] == ["host:1"]
    backend.cron_inflight_publish("host:1", [], ttl_ms=30_000)
    assert backend.cron_inflight() == []


@pytest.mark.parametrize("enabled", [True, False])
def test_set_enabled_shows_in_the_listing(backend: StateBackend, enabled: bool) -> None:
    """enable/disable is what every scheduler (and the listing) reads."""
    backend.cron_register("report", SPEC, next_run_ms=None)
    backend.cron_set_enabled("report", enabled)
    assert [job.enabled for job in backend.cron_jobs()] == [enabled]


def test_recover_leaves_out_a_job_whose_keys_are_corrupt(
    redis_url: str, namespace: str, clock: FakeClock
) -> None:
    """RedisBackend: one job's corrupt key fails its own step only; every job's failing is an error."""
    from dramatiq_resilience import RedisBackend
    from dramatiq_resilience.errors import BackendError

    backend = RedisBackend(url=redis_url, namespace=namespace, clock=clock)
    try:
        backend.cron_register("report", SPEC, next_run_ms=None)
        backend.client.set(backend.key("cron", "broken", "job"), "not a hash")
        graces = {"report": 60_000, "broken": 60_000}
        assert backend.cron_recover(graces, send_lease_ms=10_000) == {"report": CronClaim("none")}
        with pytest.raises(BackendError, match="WRONGTYPE"):
            backend.cron_recover({"broken": 60_000}, send_lease_ms=10_000)
    finally:
        backend.close()


def test_started_runs_expire_with_the_last_start(redis_url: str, namespace: str, clock: FakeClock) -> None:
    """RedisBackend: the runs and started sets of a job expire RUN_MEMORY after its last start."""
    from dramatiq_resilience import RedisBackend
    from dramatiq_resilience.backends.cron import RUN_MEMORY

    backend = RedisBackend(url=redis_url, namespace=namespace, clock=clock)
    try:
        backend.cron_register("report", SPEC, next_run_ms=None)
        assert backend.cron_started("report", "m1", lease_ms=60_000, send_id="s1") is True
        for part in ("runs", "started"):
            ttl = backend.client.pttl(backend.key("cron", "report", part))
            assert RUN_MEMORY - 5_000 < ttl <= RUN_MEMORY
    finally:
        backend.close()
