"""Contract: breaker operations, on StubBackend and RedisBackend, on a fake clock."""

from __future__ import annotations

import pytest

from dramatiq_resilience import BreakerSettings, FakeClock, StateBackend
from dramatiq_resilience.backends.breaker import BreakerTransition, window_geometry

T0 = 1_767_225_600_000  # the FakeClock's start
DEFAULT = BreakerSettings()


def fail(backend: StateBackend, settings: BreakerSettings = DEFAULT, *, epoch: int = 0, n: int = 1):
    return backend.breaker_record("b", settings=settings, epoch=epoch, calls=n, failures=n)


def succeed(
    backend: StateBackend, settings: BreakerSettings = DEFAULT, *, epoch: int = 0, n: int = 1, at: int = 0
):
    return backend.breaker_record("b", settings=settings, epoch=epoch, calls=n, last_success_ms=at)


def check(
    backend: StateBackend, member: str = "m1", settings: BreakerSettings = DEFAULT, lease_ms: int = 10_000
):
    return backend.breaker_check("b", settings=settings, member=member, lease_ms=lease_ms)


def trip(backend: StateBackend, settings: BreakerSettings = DEFAULT) -> BreakerTransition:
    decision = fail(backend, settings, n=settings.consecutive_failures or 1)
    assert decision.transition is not None
    return decision.transition


def test_a_new_breaker_is_closed_and_created_once(backend: StateBackend) -> None:
    """The first check creates the breaker closed at epoch 0; later checks see it existing."""
    first = check(backend)
    assert (first.state, first.epoch, first.created, first.allowed, first.probe) == (
        "closed",
        0,
        True,
        True,
        False,
    )
    assert first.now_ms == T0
    second = check(backend)
    assert (second.state, second.created, second.retry_after_ms) == ("closed", False, 0)


def test_consecutive_failures_trip_it(backend: StateBackend, clock: FakeClock) -> None:
    """Five failures in a row open the breaker for the cooldown, in one transition."""
    for n in range(1, 5):
        decision = fail(backend)
        assert (decision.state, decision.consecutive, decision.applied, decision.transition) == (
            "closed",
            n,
            True,
            None,
        )
    clock.advance(7)
    decision = fail(backend)
    assert (decision.state, decision.epoch, decision.retry_after_ms) == ("open", 1, 30_000)
    assert decision.transition == BreakerTransition(
        breaker="b",
        from_state="closed",
        to_state="open",
        reason="consecutive_failures",
        cooldown_ms=30_000,
        failures=5,
        calls=5,
        epoch=1,
        at_ms=T0 + 7,
        half_open_at_ms=T0 + 30_007,
    )


def test_a_success_resets_the_streak(backend: StateBackend, clock: FakeClock) -> None:
    """A success after failures resets the consecutive count; failures after it count again."""
    fail(backend, n=4)
    clock.advance(1)
    assert succeed(backend, at=clock.now_ms()).consecutive == 0
    clock.advance(1)
    assert fail(backend, n=4).consecutive == 4


def test_a_late_success_only_drops_older_failures(backend: StateBackend, clock: FakeClock) -> None:
    """A batched success stamped before later failures does not erase them."""
    success_at = clock.now_ms()
    clock.advance(10)
    fail(backend)
    clock.advance(10)
    fail(backend)
    assert succeed(backend, at=success_at).consecutive == 2
    assert succeed(backend, at=clock.now_ms() - 5).consecutive == 1
    # A success stamped in the future (clock skew) counts as now.
    assert succeed(backend, at=clock.now_ms() + 60_000).consecutive == 0
    assert fail(backend).consecutive == 1


def test_the_failure_rate_trips_it_once_min_calls_are_reached(backend: StateBackend) -> None:
    """With the streak off, 5 failures in 10 calls trip a 0.5 rate, not before 10 calls."""
    settings = BreakerSettings(consecutive_failures=None)
    decision = backend.breaker_record("b", settings=settings, epoch=0, calls=9, failures=6)
    assert (decision.state, decision.calls, decision.failures) == ("closed", 9, 6)
    decision = backend.breaker_record("b", settings=settings, epoch=0, calls=1)
    assert decision.state == "open"
    assert decision.transition is not None
    assert (decision.transition.reason, decision.transition.failures, decision.transition.calls) == (
        "failure_rate",
        6,
        10,
    )


def test_exact_rate_threshold(backend: StateBackend) -> None:
    """3 failures in 10 calls reach a 0.3 failure rate."""
    settings = BreakerSettings(failure_rate=0.3, consecutive_failures=None)
    decision = backend.breaker_record("b", settings=settings, epoch=0, calls=10, failures=3)
    assert decision.transition is not None
    assert (decision.transition.reason, decision.transition.failures, decision.transition.calls) == (
        "failure_rate",
        3,
        10,
    )


def test_the_window_slides(backend: StateBackend, clock: FakeClock) -> None:
    """A call counts for window - bucket .. window ms: here until T0 + 60 000 exactly."""
    settings = BreakerSettings(consecutive_failures=None, failure_rate=None)
    assert window_geometry(60_000) == (1_000, 60)
    backend.breaker_record("b", settings=settings, epoch=0, calls=4, failures=4)
    clock.advance(30_500)
    backend.breaker_record("b", settings=settings, epoch=0, calls=2, failures=1)
    clock.set(T0 + 59_999)
    status = backend.breaker_status("b", settings=settings)
    assert (status.calls, status.failures) == (6, 5)
    clock.set(T0 + 60_000)
    status = backend.breaker_status("b", settings=settings)
    assert (status.calls, status.failures) == (2, 1)
    decision = backend.breaker_record("b", settings=settings, epoch=0, calls=1)
    assert (decision.calls, decision.failures) == (3, 1)
    clock.set(T0 + 30_500 + 60_000)
    assert backend.breaker_status("b", settings=settings).calls == 1
    clock.advance(120_000)
    status = backend.breaker_status("b", settings=settings)
    assert (status.calls, status.failures, status.slow) == (0, 0, 0)


def test_old_failures_leave_the_rate(backend: StateBackend, clock: FakeClock) -> None:
    """Failures older than the window do not trip it with new calls."""
    settings = BreakerSettings(consecutive_failures=None, window=10_000)
    backend.breaker_record("b", settings=settings, epoch=0, calls=9, failures=9)
    clock.advance(10_000)
    decision = backend.breaker_record("b", settings=settings, epoch=0, calls=1)
    assert (decision.state, decision.calls, decision.failures) == ("closed", 1, 0)


def test_slow_calls_trip_it(backend: StateBackend) -> None:
    """With slow calls counted, a slow-call rate reached over min_calls opens it."""
    settings = BreakerSettings(slow_call_ms=100, slow_call_rate=0.5, failure_rate=None, min_calls=4)
    assert backend.breaker_record("b", settings=settings, epoch=0, calls=3, slow=3).state == "closed"
    decision = backend.breaker_record("b", settings=settings, epoch=0, calls=1)
    assert decision.transition is not None
    assert (decision.transition.reason, decision.transition.failures, decision.transition.calls) == (
        "slow_call_rate",
        3,
        4,
    )


def test_slow_calls_are_ignored_when_off(backend: StateBackend) -> None:
    """Without slow_call_ms, slow counts never trip it."""
    settings = BreakerSettings(failure_rate=None, min_calls=1)
    assert backend.breaker_record("b", settings=settings, epoch=0, calls=5, slow=5).state == "closed"


def test_open_waits_for_the_cooldown_then_half_opens(backend: StateBackend, clock: FakeClock) -> None:
    """Open answers the time to half-open; at that moment the first check half-opens it and probes."""
    trip(backend)
    clock.advance(29_999)
    decision = check(backend)
    assert (decision.state, decision.retry_after_ms, decision.allowed, decision.transition) == (
        "open",
        1,
        False,
        None,
    )
    clock.advance(1)
    decision = check(backend, "m1")
    assert (decision.state, decision.epoch, decision.probe, decision.allowed) == ("half_open", 2, True, True)
    assert decision.transition is not None
    assert (decision.transition.from_state, decision.transition.to_state, decision.transition.reason) == (
        "open",
        "half_open",
        "cooldown_elapsed",
    )
    other = check(backend, "m2")
    assert (other.state, other.probe, other.retry_after_ms, other.transition) == (
        "half_open",
        False,
        30_000,
        None,
    )
    again = check(backend, "m1")
    assert (again.probe, again.transition) == (True, None)


def test_a_successful_probe_closes_it(backend: StateBackend, clock: FakeClock) -> None:
    """The probe's success closes the breaker with empty counts."""
    trip(backend)
    clock.advance(30_000)
    check(backend, "m1")
    decision = backend.breaker_record("b", settings=DEFAULT, epoch=2, probe="m1", probe_outcome="success")
    assert (decision.state, decision.epoch, decision.applied) == ("closed", 3, True)
    assert decision.transition is not None
    assert (decision.transition.reason, decision.transition.calls) == ("probes_succeeded", 1)
    status = backend.breaker_status("b", settings=DEFAULT)
    assert (status.calls, status.consecutive, status.rounds, status.cooldown_ms) == (0, 0, 0, 30_000)
    assert check(backend, "m2").allowed


def test_failed_probes_double_the_cooldown_up_to_the_max(backend: StateBackend, clock: FakeClock) -> None:
    """Each failed probe round doubles the cooldown: 60 s, 120 s, then capped at 200 s."""
    settings = BreakerSettings(cooldown=30_000, cooldown_max=200_000)
    trip(backend, settings)
    cooldowns = []
    for _ in range(3):
        decision = check(backend, "p", settings)
        clock.advance(decision.retry_after_ms)
        assert check(backend, "p", settings).probe
        decision = backend.breaker_record("b", settings=settings, epoch=0, probe="p", probe_outcome="failure")
        assert decision.transition is not None
        assert (decision.state, decision.transition.reason, decision.transition.from_state) == (
            "open",
            "probe_failed",
            "half_open",
        )
        cooldowns.append(decision.retry_after_ms)
    assert cooldowns == [60_000, 120_000, 200_000]
    status = backend.breaker_status("b", settings=settings)
    assert (status.rounds, status.cooldown_ms, status.retry_after_ms) == (3, 200_000, 200_000)
    # Closing resets the cooldown: the next trip waits the base cooldown again.
    clock.advance(200_000)
    check(backend, "p", settings)
    closed = backend.breaker_record("b", settings=settings, epoch=0, probe="p", probe_outcome="success")
    assert (closed.state, closed.epoch) == ("closed", 9)
    assert fail(backend, settings, epoch=9, n=5).retry_after_ms == 30_000


def test_a_released_probe_frees_its_permit(backend: StateBackend, clock: FakeClock) -> None:
    """A probe that did not run releases its permit, which another message then takes."""
    trip(backend)
    clock.advance(30_000)
    assert check(backend, "m1").probe
    assert not check(backend, "m2").probe
    decision = backend.breaker_record("b", settings=DEFAULT, epoch=2, probe="m1", probe_outcome="release")
    assert (decision.state, decision.applied, decision.transition) == ("half_open", True, None)
    assert check(backend, "m2").probe


def test_a_dead_probers_lease_expires(backend: StateBackend, clock: FakeClock) -> None:
    """A permit whose lease ran out is taken by the next message; the late outcome is dropped."""
    trip(backend)
    clock.advance(30_000)
    assert check(backend, "m1", lease_ms=5_000).probe
    clock.advance(4_999)
    assert not check(backend, "m2").probe
    assert backend.breaker_status("b", settings=DEFAULT).probes_in_flight == 1
    clock.advance(1)
    assert backend.breaker_status("b", settings=DEFAULT).probes_in_flight == 0
    assert check(backend, "m2").probe
    late = backend.breaker_record("b", settings=DEFAULT, epoch=2, probe="m1", probe_outcome="failure")
    assert (late.state, late.applied, late.transition) == ("half_open", False, None)


def test_several_probes_and_successes(backend: StateBackend, clock: FakeClock) -> None:
    """probes=3, successes=2: three permits, a fourth message waits, two successes close it."""
    settings = BreakerSettings(probes=3, successes=2)
    trip(backend, settings)
    clock.advance(30_000)
    assert [check(backend, f"m{n}", settings).probe for n in range(1, 5)] == [True, True, True, False]
    first = backend.breaker_record("b", settings=settings, epoch=2, probe="m1", probe_outcome="success")
    assert (first.state, first.transition) == ("half_open", None)
    # A success used its permit: the round has had 3 probes, so m4 still waits.
    assert not check(backend, "m4", settings).probe
    second = backend.breaker_record("b", settings=settings, epoch=2, probe="m2", probe_outcome="success")
    assert second.transition is not None
    assert (second.state, second.transition.calls) == ("closed", 2)
    # The third probe finishes after the breaker closed: its outcome is dropped.
    third = backend.breaker_record("b", settings=settings, epoch=2, probe="m3", probe_outcome="failure")
    assert (third.state, third.applied) == ("closed", False)


def test_batches_of_an_older_epoch_are_dropped(backend: StateBackend, clock: FakeClock) -> None:
    """Outcomes of calls admitted before a trip never count in the next closed period."""
    trip(backend)
    stale = fail(backend, epoch=0, n=3)
    assert (stale.state, stale.applied) == ("open", False)
    clock.advance(30_000)
    check(backend, "p")
    backend.breaker_record("b", settings=DEFAULT, epoch=2, probe="p", probe_outcome="success")
    stale = fail(backend, epoch=0, n=4)
    assert (stale.state, stale.applied, stale.consecutive) == ("closed", False, 0)
    fresh = fail(backend, epoch=3, n=4)
    assert (fresh.applied, fresh.consecutive) == (True, 4)


def test_outcomes_while_open_are_ignored(backend: StateBackend) -> None:
    """A batch arriving while open changes nothing."""
    trip(backend)
    decision = fail(backend, epoch=1, n=10)
    assert (decision.state, decision.epoch, decision.applied, decision.transition) == ("open", 1, False, None)


def test_force_open_holds_it_open(backend: StateBackend, clock: FakeClock) -> None:
    """Forced open: every check waits the base cooldown, and it never half-opens by itself."""
    transition = backend.breaker_force("b", "open", settings=DEFAULT, origin="op")
    assert (
        transition.from_state,
        transition.to_state,
        transition.reason,
        transition.epoch,
        transition.origin,
    ) == (
        "closed",
        "forced_open",
        "forced_open",
        1,
        "op",
    )
    clock.advance(3_600_000)
    decision = check(backend)
    assert (decision.state, decision.allowed, decision.retry_after_ms, decision.transition) == (
        "forced_open",
        False,
        30_000,
        None,
    )


def test_force_closed_never_trips(backend: StateBackend) -> None:
    """Forced closed: messages run, failures are counted, nothing trips it."""
    backend.breaker_force("b", "closed", settings=DEFAULT)
    decision = fail(backend, epoch=1, n=50)
    assert (decision.state, decision.applied, decision.calls, decision.failures) == (
        "forced_closed",
        True,
        50,
        50,
    )
    assert check(backend).allowed


def test_reset_closes_with_empty_counts(backend: StateBackend, clock: FakeClock) -> None:
    """Reset ends any state: closed, empty window, base cooldown, no failed rounds."""
    trip(backend)
    clock.advance(30_000)
    check(backend, "p")
    backend.breaker_record("b", settings=DEFAULT, epoch=2, probe="p", probe_outcome="failure")
    transition = backend.breaker_force("b", "reset", settings=DEFAULT)
    assert (transition.from_state, transition.to_state, transition.reason, transition.epoch) == (
        "open",
        "closed",
        "reset",
        4,
    )
    status = backend.breaker_status("b", settings=DEFAULT)
    assert (status.state, status.rounds, status.cooldown_ms, status.calls, status.consecutive) == (
        "closed",
        0,
        30_000,
        0,
        0,
    )
    assert fail(backend, epoch=4, n=5).retry_after_ms == 30_000


def test_a_force_voids_half_open_permits(backend: StateBackend, clock: FakeClock) -> None:
    """Forcing during half-open drops the round: the old probe's outcome is not applied."""
    trip(backend)
    clock.advance(30_000)
    assert check(backend, "p").probe
    backend.breaker_force("b", "closed", settings=DEFAULT)
    late = backend.breaker_record("b", settings=DEFAULT, epoch=2, probe="p", probe_outcome="failure")
    assert (late.state, late.applied) == ("forced_closed", False)


def test_status_reports_everything(backend: StateBackend, clock: FakeClock) -> None:
    """Status gives state, counts, cooldown, time to half-open and the last trip."""
    missing = backend.breaker_status("b", settings=DEFAULT)
    assert (missing.exists, missing.state, missing.epoch, missing.now_ms) == (False, "closed", 0, T0)
    backend.breaker_record("b", settings=DEFAULT, epoch=0, calls=3, failures=1, slow=2)
    status = backend.breaker_status("b", settings=DEFAULT)
    assert (status.exists, status.calls, status.failures, status.slow, status.consecutive) == (
        True,
        3,
        1,
        2,
        1,
    )
    assert status.failure_rate == pytest.approx(1 / 3)
    fail(backend, n=4)
    clock.advance(1_000)
    status = backend.breaker_status("b", settings=DEFAULT)
    assert (status.state, status.retry_after_ms, status.half_open_at_ms, status.opened_at_ms) == (
        "open",
        29_000,
        T0 + 30_000,
        T0,
    )
    assert (status.reason, status.trip_failures, status.trip_calls, status.calls, status.changed_at_ms) == (
        "consecutive_failures",
        5,
        5,
        0,
        T0,
    )
    clock.advance(29_000)
    check(backend, "p")
    status = backend.breaker_status("b", settings=DEFAULT)
    assert (status.state, status.probes_in_flight, status.probe_successes, status.retry_after_ms) == (
        "half_open",
        1,
        0,
        0,
    )


def test_history_is_newest_first(backend: StateBackend, clock: FakeClock) -> None:
    """Every transition is kept in the history, newest first, limited on request."""
    trip(backend)
    clock.advance(30_000)
    check(backend, "p")
    backend.breaker_record("b", settings=DEFAULT, epoch=2, probe="p", probe_outcome="success")
    history = backend.breaker_history("b")
    assert [(t.from_state, t.to_state) for t in history] == [
        ("half_open", "closed"),
        ("open", "half_open"),
        ("closed", "open"),
    ]
    assert [t.epoch for t in backend.breaker_history("b", limit=2)] == [3, 2]
    assert backend.breaker_history("other") == []


def test_the_registry_lists_breakers(backend: StateBackend) -> None:
    """Registered names come back with their info; forget removes name and state."""
    assert backend.breaker_names() == {}
    backend.breaker_register("b", {"settings": {"cooldown": 500}, "actors": ["charge"]})
    backend.breaker_register("c", {})
    assert backend.breaker_names() == {"b": {"settings": {"cooldown": 500}, "actors": ["charge"]}, "c": {}}
    trip(backend)
    assert backend.breaker_forget("b") is True
    assert backend.breaker_names() == {"c": {}}
    assert backend.breaker_status("b", settings=DEFAULT).exists is False
    assert backend.breaker_forget("b") is False


def test_transitions_are_published(backend: StateBackend, clock: FakeClock) -> None:
    """A subscription receives every transition; the first poll says it (re)subscribed."""
    subscription = backend.breaker_subscribe()
    try:
        first = subscription.poll(50)
        assert (first.transitions, first.resubscribed) == ([], True)
        opened = trip(backend)
        forced = backend.breaker_force("b", "open", settings=DEFAULT, origin="op")
        received = []
        for _ in range(20):
            notices = subscription.poll(100)
            assert notices.resubscribed is False
            received += notices.transitions
            if len(received) == 2:
                break
        assert received == [opened, forced]
    finally:
        subscription.close()


def test_breakers_are_independent(backend: StateBackend) -> None:
    """Tripping one breaker leaves another closed."""
    trip(backend)
    other = backend.breaker_check("other", settings=DEFAULT, member="m", lease_ms=1_000)
    assert (other.state, other.created) == ("closed", True)


def test_a_batch_after_the_cooldown_reports_no_negative_wait(backend: StateBackend, clock: FakeClock) -> None:
    """Open past its half-open moment (no check yet): a late batch is dropped; the wait is 0, not negative."""
    trip(backend)
    clock.advance(45_000)
    decision = fail(backend, epoch=0, n=1)
    assert (decision.state, decision.applied, decision.retry_after_ms, decision.slow) == ("open", False, 0, 0)


SLOW = BreakerSettings(
    slow_call_ms=100, slow_call_rate=0.5, failure_rate=None, consecutive_failures=None, min_calls=4
)


def test_a_slow_probe_fails_the_round_when_slow_calls_count(backend: StateBackend, clock: FakeClock) -> None:
    """Slow calls counted: a slow but successful probe reopens it (probe_slow, cooldown doubled)."""
    opened = backend.breaker_record("b", settings=SLOW, epoch=0, calls=4, slow=4).transition
    assert opened is not None and opened.reason == "slow_call_rate"
    clock.advance(30_000)
    assert check(backend, "p1", SLOW).probe
    decision = backend.breaker_record(
        "b", settings=SLOW, epoch=2, slow=1, probe="p1", probe_outcome="success"
    )
    assert (decision.state, decision.epoch, decision.applied, decision.retry_after_ms) == (
        "open",
        3,
        True,
        60_000,
    )
    assert decision.transition == BreakerTransition(
        breaker="b",
        from_state="half_open",
        to_state="open",
        reason="probe_slow",
        cooldown_ms=60_000,
        failures=1,
        calls=1,
        epoch=3,
        at_ms=T0 + 30_000,
        half_open_at_ms=T0 + 90_000,
    )
    assert backend.breaker_status("b", settings=SLOW).rounds == 1
    clock.advance(60_000)
    assert check(backend, "p2", SLOW).probe
    fast = backend.breaker_record("b", settings=SLOW, epoch=4, probe="p2", probe_outcome="success")
    assert fast.transition is not None
    assert (fast.state, fast.transition.reason) == ("closed", "probes_succeeded")


def test_a_slow_probe_is_a_success_when_slow_calls_do_not_count(
    backend: StateBackend, clock: FakeClock
) -> None:
    """Without slow_call_ms, a probe reported slow closes the breaker like any success."""
    trip(backend)
    clock.advance(30_000)
    assert check(backend, "p").probe
    decision = backend.breaker_record(
        "b", settings=DEFAULT, epoch=2, slow=1, probe="p", probe_outcome="success"
    )
    assert decision.transition is not None
    assert (decision.state, decision.transition.reason) == ("closed", "probes_succeeded")


def test_a_slow_failed_probe_is_a_failed_probe(backend: StateBackend, clock: FakeClock) -> None:
    """A probe that failed and was slow reopens with reason probe_failed."""
    opened = backend.breaker_record("b", settings=SLOW, epoch=0, calls=4, slow=4)
    assert opened.state == "open"
    clock.advance(30_000)
    assert check(backend, "p", SLOW).probe
    decision = backend.breaker_record("b", settings=SLOW, epoch=2, slow=1, probe="p", probe_outcome="failure")
    assert decision.transition is not None
    assert (decision.state, decision.transition.reason, decision.retry_after_ms) == (
        "open",
        "probe_failed",
        60_000,
    )
