"""CircuitBreaker through a real Worker, on a fake clock, on StubBackend and RedisBackend.

Dramatiq's delayed messages (deferrals, retries) are timed with the same fake
clock (``current_millis`` of the StubBroker and the Worker is patched), so a
30-second cooldown passes with ``clock.advance(...)``, never a sleep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware, SkipMessage

import dramatiq_resilience as dr
from dramatiq_resilience.backends.breaker import BreakerNotices, BreakerSubscription, BreakerTransition

COOLDOWN = 30_000
JITTER = 5_000  # the largest deferral jitter


@pytest.fixture(params=["stub", "redis"])
def backend(request: pytest.FixtureRequest, clock: dr.FakeClock) -> Iterator[dr.StateBackend]:
    if request.param == "stub":
        yield dr.StubBackend(clock=clock)
        return
    backend = dr.RedisBackend(
        url=request.getfixturevalue("redis_url"), namespace=request.getfixturevalue("namespace"), clock=clock
    )
    yield backend
    backend.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


class Harness:
    """A StubBroker whose delayed messages are due on the fake clock, a Worker, and every event by name."""

    def __init__(self, broker: StubBroker, backend: dr.StateBackend, clock: dr.FakeClock) -> None:
        self.broker, self.backend, self.clock = broker, backend, clock
        self.events: dict[str, list[dr.Event]] = {}
        self.worker: Worker | None = None

    def record(self, event: dr.Event) -> None:
        self.events.setdefault(event.name, []).append(event)

    def install(self, backend: dr.StateBackend | None = None, **options: Any) -> dr.CircuitBreaker:
        options.setdefault("clock", self.clock)
        breaker: dr.CircuitBreaker = dr.install(
            self.broker, backend=backend or self.backend, breaker=options
        ).breaker
        return breaker

    def start(self) -> None:
        self.worker = Worker(self.broker, worker_timeout=20, worker_threads=4)
        self.worker.start()

    def parked(self) -> list[Any]:
        """Messages waiting in the worker's delay queues (deferred or retried), by eta."""
        assert self.worker is not None
        consumers = self.worker.consumers.values()
        items = [item for consumer in consumers for item in list(consumer.delay_queue.queue)]
        return [item.message for item in sorted(items, key=lambda item: item.priority)]

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until every message due at the fake clock's time has been processed."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 4:
            assert time.monotonic() < deadline, "messages were still being processed"
            queues = self.broker.queues.items()
            busy = any(queue.unfinished_tasks for name, queue in queues if not name.endswith(".DQ"))
            unfetched = any(queue.qsize() for name, queue in queues if name.endswith(".DQ"))
            due = any(message.options.get("eta", 0) <= self.clock.now_ms() for message in self.parked())
            quiet = 0 if busy or unfetched or due else quiet + 1
            time.sleep(0.015)

    def dependency_actor(self, **options: Any) -> tuple[Any, Dependency]:
        """An actor (``max_retries=0``, breaker ``dep`` unless told) calling a fresh Dependency, started."""
        dependency = Dependency()
        options = {"max_retries": 0, "breaker": "dep", **options}

        @dramatiq.actor(actor_name="call", **options)
        def call(n: int) -> None:
            dependency(n)

        self.start()
        return call, dependency

    def run(self, actor: Any, *args: Any, **kwargs: Any) -> None:
        """Send one message and wait until it was processed."""
        actor.send(*args, **kwargs)
        self.settle()

    def outcomes(self) -> list[str]:
        return [event["outcome"] for event in self.events.get("breaker_call", [])]

    def transitions(self) -> list[tuple[str, str, str]]:
        return [
            (e["from_state"], e["to_state"], e["reason"]) for e in self.events.get("breaker_transition", [])
        ]


@pytest.fixture
def h(
    stub_broker: StubBroker, backend: dr.StateBackend, clock: dr.FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    monkeypatch.setattr("dramatiq.brokers.stub.current_millis", clock.now_ms)
    monkeypatch.setattr("dramatiq.worker.current_millis", clock.now_ms)
    stub_broker.add_middleware(CurrentMessage())
    harness = Harness(stub_broker, backend, clock)
    dr.subscribe("*", harness.record)
    yield harness
    dr.unsubscribe("*", harness.record)
    if harness.worker is not None:
        harness.worker.stop()


class Dependency:
    """A fake dependency that fails while ``down``; records who called it with which options."""

    def __init__(self) -> None:
        self.down = True
        self.calls: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        with self.lock:
            self.calls.append((n, dict(message.options)))
        if self.down:
            raise ConnectionError(f"dependency down for {n}")

    def ran(self) -> list[int]:
        return sorted(n for n, _ in self.calls)


def test_a_healthy_breaker_runs_every_message(h: Harness) -> None:
    """Closed: every message runs once and its success is counted."""
    breaker = h.install()
    call, dependency = h.dependency_actor(breaker=True)
    dependency.down = False
    for n in range(12):
        call.send(n)
    h.settle()
    breaker.flush()
    assert dependency.ran() == list(range(12))
    status = breaker.status("call")
    assert (status.state, status.calls, status.failures) == ("closed", 12, 0)
    assert h.outcomes() == ["success"] * 12
    assert h.events.get("breaker_transition") is None


def test_an_open_breaker_defers_and_a_max_retries_0_message_runs_once_it_closes(h: Harness) -> None:
    """Five failures open it; later messages are deferred (retries untouched) and run once it closes."""
    breaker = h.install()
    call, dependency = h.dependency_actor()
    for n in range(5):
        call.send(n)
    h.settle()
    assert h.transitions() == [("closed", "open", "consecutive_failures")]
    assert len(h.broker.dead_letters) == 5  # they ran and failed, with no retries left

    for n in range(5, 8):
        call.send(n)
    h.settle()
    assert dependency.ran() == [0, 1, 2, 3, 4]
    waiting = h.parked()
    assert sorted(m.args[0] for m in waiting) == [5, 6, 7]
    for message in waiting:
        assert message.options["deferred_reason"] == "circuit_open"
        assert message.options["deferrals"] == 1
        assert "retries" not in message.options
        assert COOLDOWN <= message.options["eta"] - h.clock.now_ms() <= COOLDOWN + 3_000
    assert len(h.broker.dead_letters) == 5

    dependency.down = False
    h.clock.advance(COOLDOWN + JITTER)
    h.settle()
    # One became the probe and closed it; the others found it half-open and waited again.
    assert len(h.events["breaker_probe"]) == 1
    h.clock.advance(COOLDOWN + JITTER)
    h.settle()
    assert dependency.ran() == [0, 1, 2, 3, 4, 5, 6, 7]
    for n, options in dependency.calls[5:]:
        assert options.get("retries", 0) == 0, n
        assert options["deferrals"] >= 1
    assert len(h.broker.dead_letters) == 5
    assert h.transitions() == [
        ("closed", "open", "consecutive_failures"),
        ("open", "half_open", "cooldown_elapsed"),
        ("half_open", "closed", "probes_succeeded"),
    ]
    assert breaker.status("dep").state == "closed"


def test_half_open_runs_exactly_the_probes(h: Harness) -> None:
    """probes=2, successes=2: two probes run while the others wait; two successes close it."""
    breaker = h.install(probes=2, consecutive_failures=2)
    release = threading.Event()
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        ran.append(n)
        if n < 2:
            raise ConnectionError("down")
        release.wait(10)

    h.start()
    call.send(0)
    h.run(call, 1)
    assert breaker.status("call").state == "open"
    for n in range(2, 8):
        call.send(n)
    h.settle()
    h.clock.advance(COOLDOWN + JITTER)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = [m for m in h.parked() if m.options["deferrals"] == 2]
        if len(waiting) == 4 and len(ran) == 4:
            break
        time.sleep(0.01)
    assert len(ran) == 4  # the two failures, then exactly two probes, blocked in the actor
    assert len(h.events["breaker_probe"]) == 2
    status = breaker.status("call")
    assert (status.state, status.probes_in_flight) == ("half_open", 2)
    assert [m.options["deferrals"] for m in h.parked()] == [2, 2, 2, 2]
    release.set()
    h.settle()
    assert breaker.status("call").state == "closed"
    h.clock.advance(COOLDOWN + JITTER)
    h.settle()
    assert sorted(ran) == list(range(8))
    assert h.transitions()[-1] == ("half_open", "closed", "probes_succeeded")
    assert h.events["breaker_transition"][-1]["calls"] == 2


def test_a_failed_probe_reopens_with_a_doubled_cooldown(h: Harness) -> None:
    """Each failed probe round doubles the cooldown, up to cooldown_max; deferrals wait that long."""
    breaker = h.install(consecutive_failures=1, cooldown=1_000, cooldown_max=3_000)
    call, dependency = h.dependency_actor()
    h.run(call, 0)
    for n in range(1, 4):
        h.clock.advance(breaker.status("dep").retry_after_ms)
        call.send(n)  # becomes the probe, and fails
        h.settle()
    opened = [e for e in h.events["breaker_transition"] if e["to_state"] == "open"]
    assert [(e["reason"], e["cooldown_ms"]) for e in opened] == [
        ("consecutive_failures", 1_000),
        ("probe_failed", 2_000),
        ("probe_failed", 3_000),
        ("probe_failed", 3_000),
    ]
    h.run(call, 9)
    assert h.events["message_deferred"][-1]["delay_ms"] >= 3_000
    assert dependency.ran() == [0, 1, 2, 3]


def test_on_open_fail_dead_letters_with_circuit_open(h: Harness) -> None:
    """breaker_on_open="fail": an open breaker dead-letters the message at once, without running it."""
    h.install(consecutive_failures=1)
    call, dependency = h.dependency_actor(max_retries=3, breaker_on_open="fail", breaker=True)
    call.send_with_options(args=(0,), max_retries=0)
    h.settle()
    h.run(call, 1)
    assert dependency.ran() == [0]
    rejected = h.events["message_rejected"]
    assert [(e["reason"], e["actor_name"]) for e in rejected] == [("circuit_open", "call")]
    error = rejected[0]["error"]
    assert isinstance(error, dr.CircuitOpen)
    assert (error.breaker, error.retry_after_ms) == ("call", COOLDOWN)
    assert len(h.broker.dead_letters) == 2
    assert h.parked() == []


def test_message_options_choose_the_breaker_and_the_policy(h: Harness) -> None:
    """A message may bypass the breaker (breaker=False) or fail instead of waiting."""
    breaker = h.install(consecutive_failures=1)
    call, dependency = h.dependency_actor()
    h.run(call, 0)
    call.send_with_options(args=(1,), breaker=False)
    call.send_with_options(args=(2,), breaker_on_open="fail")
    call.send_with_options(args=(3,), breaker="elsewhere")
    h.settle()
    assert dependency.ran() == [0, 1, 3]
    assert [e["reason"] for e in h.events["message_rejected"]] == ["circuit_open"]
    # Message 3 counted against the breaker it named, not against "dep".
    assert (breaker.status("elsewhere").state, breaker.status("dep").epoch) == ("open", 1)


def test_a_bad_message_option_dead_letters_it(h: Harness) -> None:
    """A message naming a bad breaker is rejected as InvalidMessage, not run."""
    h.install()
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    call.send_with_options(args=(1,), breaker="{bad}")
    h.settle()
    assert ran == []
    assert [e["reason"] for e in h.events["message_rejected"]] == ["invalid_message"]


def test_actors_naming_one_breaker_share_it(h: Harness) -> None:
    """Failures of one actor open the breaker for every actor naming it; others are unaffected."""
    breaker = h.install(consecutive_failures=3)
    dependency = Dependency()
    other: list[int] = []

    @dramatiq.actor(max_retries=0, breaker="gateway")
    def charge(n: int) -> None:
        dependency(n)

    @dramatiq.actor(max_retries=0, breaker="gateway")
    def refund(n: int) -> None:
        other.append(n)

    @dramatiq.actor(max_retries=0)
    def unrelated(n: int) -> None:
        other.append(100 + n)

    h.start()
    for n in range(3):
        charge.send(n)
    h.settle()
    refund.send(7)
    h.run(unrelated, 1)
    assert other == [101]
    assert [m.actor_name for m in h.parked()] == ["refund"]
    assert breaker.admin.names()["gateway"]["actors"] == ["charge", "refund"]


def test_throws_ignore_and_record_decide_what_counts(h: Harness) -> None:
    """throws and breaker_ignore never count; with breaker_record only those count, others succeed."""
    breaker = h.install(consecutive_failures=2)

    class Declined(Exception):
        pass

    class Busy(Exception):
        pass

    @dramatiq.actor(max_retries=0, throws=(Declined,), breaker_ignore=(Busy,))
    def plain(kind: str) -> None:
        raise {"declined": Declined, "busy": Busy, "bug": KeyError}[kind]()

    @dramatiq.actor(max_retries=0, throws=(Declined,), breaker_record=(ConnectionError, Declined))
    def strict(kind: str) -> None:
        raise {"declined": Declined, "down": ConnectionError, "bug": KeyError}[kind]()

    h.start()
    for kind in ("declined", "busy", "declined", "busy", "bug"):
        h.run(plain, kind)
    assert h.outcomes() == ["ignored", "ignored", "ignored", "ignored", "failure"]
    assert breaker.status("plain").state == "closed"
    for kind in ("down", "bug", "down", "declined"):
        h.run(strict, kind)
    assert h.outcomes()[5:] == ["failure", "success", "failure", "failure"]
    assert breaker.status("strict").state == "open"


def test_slow_calls_open_it(h: Harness) -> None:
    """With breaker_slow_call_ms, 3 slow calls in 4 reach a 0.5 slow-call rate and open it."""
    breaker = h.install(consecutive_failures=None, failure_rate=None, min_calls=4)

    @dramatiq.actor(max_retries=0, breaker_slow_call_ms=100, breaker_slow_call_rate=0.5)
    def call(ms: int) -> None:
        h.clock.advance(ms)

    h.start()
    for ms in (150, 20, 100, 99, 300):
        h.run(call, ms)
    assert [e["slow"] for e in h.events["breaker_call"]] == [True, False, True, False]
    assert h.transitions() == [("closed", "open", "slow_call_rate")]
    assert (h.events["breaker_transition"][0]["failures"], h.events["breaker_transition"][0]["calls"]) == (
        2,
        4,
    )
    assert breaker.status("call").state == "open"
    assert len(h.parked()) == 1


def test_a_skipped_probe_gives_its_permit_back(h: Harness) -> None:
    """A probe skipped by a later middleware releases its permit; the next message probes."""
    breaker = h.install(consecutive_failures=1)

    class SkipSome(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            if message.kwargs.get("skip"):
                raise SkipMessage("skipped by a later middleware")

    h.broker.add_middleware(SkipSome(), before=dramatiq.middleware.Retries)
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int, skip: bool = False) -> None:
        ran.append(n)
        if n == 0:
            raise ConnectionError("down")

    h.start()
    h.run(call, 0)
    h.clock.advance(COOLDOWN)
    h.run(call, 1, skip=True)
    status = breaker.status("call")
    assert (status.state, status.probes_in_flight, len(h.events["breaker_probe"])) == ("half_open", 0, 1)
    h.run(call, 2)
    assert ran == [0, 2]
    assert len(h.events["breaker_probe"]) == 2
    assert breaker.status("call").state == "closed"


def test_a_dead_probers_permit_expires_after_its_lease(h: Harness) -> None:
    """A probe permit is leased for the actor's time limit plus 5 s; then another message probes."""
    breaker = h.install(consecutive_failures=1)
    hang = threading.Event()
    ran: list[int] = []

    @dramatiq.actor(max_retries=0, time_limit=10_000)
    def call(n: int) -> None:
        ran.append(n)
        if n == 0:
            raise ConnectionError("down")
        if n == 1:
            hang.wait(10)  # the prober "dies": it never reports

    h.start()
    h.run(call, 0)
    h.clock.advance(COOLDOWN)
    call.send(1)
    wait_until(lambda: breaker.status("call").probes_in_flight == 1)
    h.clock.advance(14_999)
    call.send(2)
    wait_until(lambda: [m.args for m in h.parked()] == [(2,)])
    h.clock.advance(1)
    assert breaker.status("call").probes_in_flight == 0
    call.send(3)
    wait_until(lambda: breaker.status("call").state == "closed")
    assert ran == [0, 1, 3]
    first, second = h.events["breaker_probe"]
    assert first["message_id"] != second["message_id"]
    hang.set()


def test_max_deferrals_dead_letters_a_message_deferred_too_often(h: Harness) -> None:
    """breaker_max_deferrals=1: the second deferral dead-letters with TooManyDeferrals."""
    breaker = h.install(consecutive_failures=1, max_deferrals=1)

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        raise ConnectionError("down")

    h.start()
    h.run(call, 0)
    breaker.force_open("call")
    h.run(call, 1)
    h.clock.advance(COOLDOWN + JITTER)
    h.settle()
    assert [e["reason"] for e in h.events["message_rejected"]] == ["too_many_deferrals"]
    assert h.parked() == []


def test_cache_and_batches_keep_redis_quiet(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed: one check per cache period, one record per 10 outcomes; a failure is sent at once."""
    breaker = h.install(cache_ms=1_000, flush_every=10)
    counts = {"breaker_check": 0, "breaker_record": 0}
    for name in counts:
        original = getattr(h.backend, name)

        def counting(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(h.backend, name, counting)

    @dramatiq.actor(max_retries=0)
    def call(fail: bool = False) -> None:
        if fail:
            raise ConnectionError("down")

    h.start()
    assert breaker.local.wait_listening(5)  # subscribing drops the cache: notices may have been missed
    h.run(call)
    for _ in range(29):
        call.send()
    h.settle()
    assert counts == {"breaker_check": 1, "breaker_record": 3}
    h.run(call, fail=True)
    assert counts == {"breaker_check": 1, "breaker_record": 4}
    h.clock.advance(1_000)
    h.run(call)
    assert counts["breaker_check"] == 2


def test_caching_off_asks_for_every_message(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """cache_ms=0: every message is admitted by the h.backend."""
    h.install(cache_ms=0)
    checks: list[str] = []
    original = h.backend.breaker_check

    def counting(name: str, **kwargs: Any) -> Any:
        checks.append(name)
        return original(name, **kwargs)

    monkeypatch.setattr(h.backend, "breaker_check", counting)

    @dramatiq.actor(max_retries=0)
    def call() -> None:
        pass

    h.start()
    for _ in range(7):
        call.send()
    h.settle()
    assert checks == ["call"] * 7


def test_a_transition_elsewhere_drops_the_cache(h: Harness) -> None:
    """An operator forcing the breaker open elsewhere is honoured at once despite a long cache."""
    breaker = h.install(cache_ms=3_600_000)
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    assert breaker.local.wait_listening(5)
    h.run(call, 0)
    assert breaker.local.cached("call") is not None
    operator = dr.Breakers(h.backend)
    operator.force_open("call")
    deadline = time.monotonic() + 5
    while breaker.local.cached("call") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    h.run(call, 1)
    assert ran == [0]
    assert [m.args for m in h.parked()] == [(1,)]
    notices = h.events["breaker_notice"]
    assert [(e["to_state"], e["reason"]) for e in notices] == [("forced_open", "forced_open")]
    operator.reset("call")
    deadline = time.monotonic() + 5
    while h.events["breaker_notice"][-1]["reason"] != "reset" and time.monotonic() < deadline:
        time.sleep(0.01)
    h.clock.advance(COOLDOWN + JITTER)
    h.settle()
    assert ran == [0, 1]


def test_forced_closed_runs_everything(h: Harness) -> None:
    """Forced closed: failures are counted, nothing trips it, until a reset."""
    breaker = h.install(consecutive_failures=1)

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        raise ConnectionError("down")

    breaker.force_closed("call")
    h.start()
    for n in range(6):
        call.send(n)
    h.settle()
    breaker.flush()
    status = breaker.status("call")
    assert (status.state, status.failures, len(h.broker.dead_letters)) == ("forced_closed", 6, 6)
    breaker.reset("call")
    h.run(call, 7)
    assert breaker.status("call").state == "open"


def test_transitions_are_logged_announced_and_heard(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Each transition logs one line, emits breaker_transition, and calls on_state_change listeners."""
    heard: list[tuple[BreakerTransition, bool]] = []
    breaker = h.install(on_state_change=[lambda t, local: heard.append((t, local))])

    @dramatiq.actor(max_retries=0, breaker="payments-gateway")
    def call(n: int) -> None:
        raise ConnectionError("down")

    h.start()
    caplog.set_level(logging.INFO)
    for n in range(5):
        call.send(n)
    h.settle()
    assert "Circuit 'payments-gateway' opened for 30000 ms after 5 failures in 5 calls." in caplog.messages
    event = h.events["breaker_transition"][0]
    assert {
        k: event[k]
        for k in ("breaker", "from_state", "to_state", "reason", "cooldown_ms", "failures", "calls")
    } == {
        "breaker": "payments-gateway",
        "from_state": "closed",
        "to_state": "open",
        "reason": "consecutive_failures",
        "cooldown_ms": 30_000,
        "failures": 5,
        "calls": 5,
    }
    assert [(t.to_state, local) for t, local in heard] == [("open", True)]
    assert breaker.on_state_change(print) is print


def test_a_broken_listener_does_not_break_the_breaker(h: Harness) -> None:
    """A listener that raises is logged; the transition still happens."""
    breaker = h.install(consecutive_failures=1)

    def broken(transition: BreakerTransition, local: bool) -> None:
        raise RuntimeError("listener bug")

    breaker.on_state_change(broken)

    @dramatiq.actor(max_retries=0)
    def call() -> None:
        raise ConnectionError("down")

    h.start()
    h.run(call)
    assert breaker.status("call").state == "open"


def test_a_backend_outage_lets_messages_run_and_is_logged_once(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """on_backend_error="allow": messages run while the backend is down; one warning, then a recovery line."""
    backend = dr.StubBackend(clock=h.clock)
    h.install(backend=backend, cache_ms=0)
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    caplog.set_level(logging.INFO)
    backend.unavailable = True
    for n in range(4):
        call.send(n)
    h.settle()
    assert sorted(ran) == [0, 1, 2, 3]
    warnings = [  # the breaker's (the scheduler, polling meanwhile, says so too, once)
        r
        for r in caplog.records
        if r.name.endswith(".CircuitBreaker") and "cannot reach its state backend" in r.getMessage()
    ]
    assert len(warnings) == 1
    backend.unavailable = False
    h.run(call, 4)
    assert any("reached its state backend again" in r.getMessage() for r in caplog.records)


def test_a_backend_outage_can_defer_instead(h: Harness) -> None:
    """on_backend_error="defer": messages wait backend_retry_delay ms, then run."""
    backend = dr.StubBackend(clock=h.clock)
    h.install(backend=backend, on_backend_error="defer", backend_retry_delay=2_000)
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    backend.unavailable = True
    h.run(call, 1)
    assert ran == []
    assert h.parked()[0].options["deferred_reason"] == "backend_unavailable"
    backend.unavailable = False
    h.clock.advance(2_000 + JITTER)
    h.settle()
    assert ran == [1]


def test_conflicting_settings_for_one_breaker_are_refused(h: Harness) -> None:
    """Two actors configuring one breaker differently: the second declaration names both."""
    h.install(breakers={"gateway": {"cooldown": 1_000}})

    @dramatiq.actor(breaker="gateway", breaker_consecutive_failures=3)
    def charge() -> None: ...

    @dramatiq.actor(breaker="gateway", breaker_min_calls=20)
    def refund() -> None: ...  # a setting charge does not set: fine

    with pytest.raises(dr.ConfigurationError) as raised:

        @dramatiq.actor(breaker="gateway", breaker_consecutive_failures=4)
        def capture() -> None: ...

    assert str(raised.value) == (
        "Actor 'capture', option 'breaker_consecutive_failures': breaker 'gateway' is shared with actor "
        "'charge', which sets breaker_consecutive_failures=3; actors sharing a breaker must agree, got 4"
    )
    with pytest.raises(
        dr.ConfigurationError, match="configured with breaker_cooldown=1000 by CircuitBreaker"
    ):

        @dramatiq.actor(breaker="gateway", breaker_cooldown=2_000)
        def void() -> None: ...


def test_named_breaker_settings_combine(h: Harness) -> None:
    """A named breaker's settings: defaults, then breakers=, then its actors' options."""
    breaker = h.install(cooldown=5_000, breakers={"gateway": {"probes": 3}})

    @dramatiq.actor(breaker="gateway", breaker_successes=2)
    def charge() -> None: ...

    settings = breaker.settings("gateway")
    assert (settings.cooldown, settings.probes, settings.successes, settings.required_successes) == (
        5_000,
        3,
        2,
        2,
    )
    assert breaker.settings("charge").probes == 1


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"breaker_successes": 2},
            "Actor 'a', option 'breaker_successes': breaker 'a': must be at most breaker_probes (1), got 2",
        ),
        (
            {"breaker_slow_call_ms": 100},
            "breaker_slow_call_ms and breaker_slow_call_rate must be set together",
        ),
        (
            {"breaker_cooldown": 0},
            "Actor 'a', option 'breaker_cooldown': must be a duration in milliseconds >= 1, got 0",
        ),
        ({"breaker": "{x}"}, "a breaker name must be a non-empty string without braces"),
        ({"breaker_on_open": "drop"}, "must be one of 'defer', 'fail', got 'drop'"),
        ({"breaker_ignore": "ValueError"}, "must be an exception class or a tuple of them"),
        ({"breaker_cooldown_max": 10}, "must be at least breaker_cooldown (30000 ms), got 10"),
    ],
)
def test_bad_actor_options_are_refused_at_declaration(
    h: Harness, options: dict[str, Any], expected: str
) -> None:
    """Bad breaker options raise ConfigurationError naming the actor and the option."""
    h.install()
    with pytest.raises(dr.ConfigurationError) as raised:
        dramatiq.actor(actor_name="a", **options)(lambda: None)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"failure_rate": 2}, "Option 'breaker_failure_rate': must be a number greater than 0 and at most 1"),
        ({"cache_ms": -1}, "Option 'cache_ms': must be an integer >= 0"),
        ({"breakers": {"g": {"colldown": 1}}}, "unknown breaker setting 'colldown'"),
        ({"breakers": {"g": {"probes": 1, "successes": 2}}}, "breaker 'g': must be at most breaker_probes"),
        ({"probes": 2, "successes": 3}, "Option 'breaker_successes'"),
    ],
)
def test_bad_middleware_options_are_refused(options: dict[str, Any], expected: str) -> None:
    """Bad constructor values raise ConfigurationError naming the option."""
    with pytest.raises(dr.ConfigurationError, match=expected):
        dr.CircuitBreaker(backend=dr.StubBackend(), **options)


def test_no_import_or_construction_side_effects() -> None:
    """Building the middleware starts no thread and connects nowhere."""
    before = threading.active_count()
    breaker = dr.CircuitBreaker(backend=dr.RedisBackend(url="redis://127.0.0.1:1/0"))
    assert threading.active_count() == before
    assert breaker.local.listening is False


def test_the_failure_rate_over_the_window_opens_it(h: Harness) -> None:
    """Rate rule: outcomes older than the window drop out; min_calls calls at the rate open it."""
    breaker = h.install(consecutive_failures=None, failure_rate=0.5, min_calls=6, window=10_000)

    @dramatiq.actor(max_retries=0)
    def call(fail: bool) -> None:
        if fail:
            raise ConnectionError("down")

    h.start()
    for fail in (True, True, True, False, False):
        h.run(call, fail)
    breaker.flush()  # batched outcomes count when they arrive: send them now
    h.clock.advance(10_000)  # all five leave the window; had they stayed, 6 of 10 would trip it below
    for fail in (True, False, True, False, True):
        h.run(call, fail)
    assert h.events.get("breaker_transition") is None  # 3 failures in 5 calls: under min_calls
    h.run(call, True)
    event = h.events["breaker_transition"][0]
    assert (event["reason"], event["failures"], event["calls"]) == ("failure_rate", 4, 6)


def test_successes_below_probes_and_an_explicit_probe_lease(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """probes=2, successes=1: the first success closes it; breaker_probe_lease sets the permit's lease."""
    breaker = h.install(consecutive_failures=1, probes=2, successes=1, probe_lease=2_500)
    leases: list[int] = []
    original = h.backend.breaker_check

    def spy(name: str, **kwargs: Any) -> Any:
        leases.append(kwargs["lease_ms"])
        return original(name, **kwargs)

    monkeypatch.setattr(h.backend, "breaker_check", spy)

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        if n == 0:
            raise ConnectionError("down")

    h.start()
    h.run(call, 0)
    h.clock.advance(COOLDOWN)
    h.run(call, 1)
    assert breaker.status("call").state == "closed"
    assert set(leases) == {2_500}


def test_batches_are_sent_after_flush_ms(h: Harness) -> None:
    """A batch that is not full is sent by the listener once its first outcome is flush_ms old."""
    breaker = h.install(flush_every=1_000, flush_ms=2_000)

    @dramatiq.actor(max_retries=0)
    def call() -> None:
        pass

    h.start()
    assert breaker.local.wait_listening(5)
    for _ in range(3):
        call.send()
    h.settle()
    assert breaker.status("call").calls == 0
    h.clock.advance(1_999)
    time.sleep(0.3)  # two listener ticks
    assert breaker.status("call").calls == 0
    h.clock.advance(1)
    wait_until(lambda: breaker.status("call").calls == 3)


def test_a_forked_process_starts_afresh(clock: dr.FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """After fork, the cache, batches, lock and listener of the parent are not reused."""
    local = dr.CircuitBreaker(backend=dr.StubBackend(clock=clock), clock=clock).local
    settings = dr.BreakerSettings()
    local.check("b", settings, member="m", lease_ms=1_000)
    local.record("b", settings, epoch=0, outcome="success")
    parent = local._local
    assert local.cached("b") is not None
    monkeypatch.setattr("os.getpid", lambda: parent.pid + 1)
    assert local.cached("b") is None
    child = local._local
    assert child is not parent
    assert (child.batches, child.thread, child.origin == parent.origin) == ({}, None, False)


def test_a_slow_probe_reopens_a_breaker_opened_by_slow_calls(h: Harness) -> None:
    """Opened by slow calls: a slow successful probe reopens it (cooldown doubled); a fast one closes it."""
    breaker = h.install(consecutive_failures=None, failure_rate=None, min_calls=2)

    @dramatiq.actor(max_retries=0, breaker_slow_call_ms=100, breaker_slow_call_rate=0.5)
    def call(ms: int) -> None:
        h.clock.advance(ms)

    h.start()
    h.run(call, 150)
    h.run(call, 150)
    h.clock.advance(COOLDOWN)
    h.run(call, 150)  # the probe: it succeeds, slowly
    status = breaker.status("call")
    assert (status.state, status.rounds, status.retry_after_ms) == ("open", 1, 2 * COOLDOWN)
    h.clock.advance(2 * COOLDOWN)
    h.run(call, 20)
    assert h.transitions() == [
        ("closed", "open", "slow_call_rate"),
        ("open", "half_open", "cooldown_elapsed"),
        ("half_open", "open", "probe_slow"),
        ("open", "half_open", "cooldown_elapsed"),
        ("half_open", "closed", "probes_succeeded"),
    ]
    assert [(e["slow"], e["probe"]) for e in h.events["breaker_call"]] == [
        (True, False),
        (True, False),
        (True, True),
        (False, True),
    ]
    assert breaker.status("call").state == "closed"


@pytest.mark.parametrize(
    ("value", "shown"), [("soon", "'soon'"), (0, "0"), (-5, "-5"), (True, "True"), ([1_000], "[1000]")]
)
def test_a_bad_time_limit_option_dead_letters_the_message(h: Harness, value: Any, shown: str) -> None:
    """A non-numeric or non-positive time_limit option dead-letters with InvalidMessage, cached or not."""
    h.install(cache_ms=3_600_000)
    ran: list[int] = []

    @dramatiq.actor(max_retries=3)
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    h.run(call, 0)  # the breaker's state is now cached for an hour
    call.send_with_options(args=(1,), time_limit=value)
    call.send_with_options(args=(2,), time_limit=None)  # unset: the actor's limit
    h.settle()
    assert sorted(ran) == [0, 2]
    [rejected] = h.events["message_rejected"]
    error = rejected["error"]
    assert isinstance(error, dr.InvalidMessage)
    assert (rejected["reason"], error.actor_name, error.option) == ("invalid_message", "call", "time_limit")
    assert (
        str(error)
        == f"Actor 'call', option 'time_limit': must be a positive number of milliseconds, got {shown}"
    )
    assert [m.args for m in h.broker.dead_letters] == [(1,)]


def test_a_bad_time_limit_is_refused_when_the_backend_is_asked(h: Harness) -> None:
    """cache_ms=0: the probe lease is derived from time_limit for the check; a bad one dead-letters."""
    h.install(cache_ms=0)
    ran: list[int] = []

    @dramatiq.actor(max_retries=0, time_limit="10 s")
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    h.run(call, 0)
    assert ran == []
    [rejected] = h.events["message_rejected"]
    assert str(rejected["error"]) == (
        "Actor 'call', option 'time_limit': must be a positive number of milliseconds, got '10 s'"
    )


class ScriptedSubscription(BreakerSubscription):
    """Each poll runs the next step (a callable returning notices, or raising); the last sets ``stop``."""

    def __init__(self, steps: list[Callable[[], BreakerNotices]], stop: threading.Event) -> None:
        self.steps, self.stop, self.closed = list(steps), stop, False

    def poll(self, timeout_ms: int) -> BreakerNotices:
        step = self.steps.pop(0)
        if not self.steps:
            self.stop.set()
        return step()

    def close(self) -> None:
        self.closed = True


def notices(*transitions: BreakerTransition, resubscribed: bool = False, malformed: tuple[str, ...] = ()):
    """A step answering these notices."""
    return lambda: BreakerNotices(list(transitions), resubscribed=resubscribed, malformed=list(malformed))


def after(action: Callable[[], Any]) -> Callable[[], BreakerNotices]:
    """A step that runs ``action`` (while "polling"), then answers no notices."""

    def step() -> BreakerNotices:
        action()
        return BreakerNotices([])

    return step


def raising(error: BaseException, before: Callable[[], Any] = lambda: None) -> Callable[[], BreakerNotices]:
    """A step that runs ``before``, then raises ``error``."""

    def step() -> BreakerNotices:
        before()
        raise error

    return step


def listen(
    monkeypatch: pytest.MonkeyPatch, local: Any, stop: threading.Event, *subscriptions: ScriptedSubscription
) -> None:
    """Run the listener loop in this thread over ``subscriptions`` (one per subscription) until stopped."""
    queue = list(subscriptions)
    local.stop()  # the worker's listener thread: a process has one listener
    monkeypatch.setattr(local, "start", lambda: None)
    monkeypatch.setattr("dramatiq_resilience.breaker_local.RECONNECT_DELAY", 0)
    monkeypatch.setattr(local.backend, "breaker_subscribe", lambda: queue.pop(0))
    local._listen(local._local, stop)


def backend_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The outage lines logged, up to their first parenthesis or "after" (the rest varies)."""
    lines = [r.getMessage() for r in caplog.records if "its state backend" in r.getMessage()]
    return [line.split(" (")[0].split(" after ")[0] for line in lines]


def test_script_errors_while_pub_sub_works_are_one_outage(
    h: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks failing while the listener polls fine: one warning, and one "back" line once a check works."""
    backend = dr.StubBackend(clock=h.clock)
    breaker = h.install(backend=backend, cache_ms=0)
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    caplog.set_level(logging.INFO)
    original = backend.breaker_check

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise dr.BackendError("Redis failed: OOM command not allowed when used memory > 'maxmemory'")

    monkeypatch.setattr(backend, "breaker_check", oom)
    stop = threading.Event()
    steps = [notices(resubscribed=True)]
    for n in range(3):  # a failing check, then the listener polls successfully, five times
        steps += [after(lambda n=n: h.run(call, n)), *[notices()] * 5]
    listen(monkeypatch, breaker.local, stop, ScriptedSubscription(steps, stop))
    assert backend_lines(caplog) == ["CircuitBreaker cannot reach its state backend"]
    monkeypatch.setattr(backend, "breaker_check", original)
    h.run(call, 3)
    assert ran == [0, 1, 2, 3]
    assert backend_lines(caplog) == [
        "CircuitBreaker cannot reach its state backend",
        "CircuitBreaker reached its state backend again",
    ]
    assert caplog.records[-1].getMessage().endswith(" milliseconds and 3 errors.")


def test_pub_sub_errors_are_the_listeners_own_outage(
    h: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription failing while checks work: one listener warning, one recovery, nothing from checks."""
    breaker = h.install(cache_ms=0)
    ran: list[int] = []

    @dramatiq.actor(max_retries=0)
    def call(n: int) -> None:
        ran.append(n)

    h.start()
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    down = dr.BackendUnavailable("Redis is unavailable: Connection reset by peer")
    steps = [raising(down, before=lambda n=n: h.run(call, n)) for n in range(3)]
    steps.append(notices(resubscribed=True))
    listen(monkeypatch, breaker.local, stop, ScriptedSubscription(steps, stop))
    assert ran == [0, 1, 2]
    assert backend_lines(caplog) == [
        "CircuitBreaker notice listener cannot reach its state backend",
        "CircuitBreaker notice listener reached its state backend again",
    ]
    assert breaker.local.wait_listening(0)


def test_a_malformed_notice_and_an_unexpected_error_do_not_stop_the_listener(
    h: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad notice is logged, skipped and drops the cache; a bug is logged once and survived."""
    heard: list[tuple[str, bool]] = []
    breaker = h.install(
        cache_ms=3_600_000, on_state_change=[lambda t, local: heard.append((t.reason, local))]
    )
    local, settings = breaker.local, dr.BreakerSettings()
    cached: list[bool] = []

    def check() -> BreakerNotices:
        local.check("b", settings, member="m", lease_ms=1_000)
        return BreakerNotices([])

    def look() -> BreakerNotices:
        cached.append(local.cached("b") is not None)
        return BreakerNotices([])

    bad = "b'not json' (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"
    forced = BreakerTransition("b", "closed", "forced_open", "forced_open", 0, 0, 0, 1, 0, origin="api:x")
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    subscriptions = [
        ScriptedSubscription(
            [notices(resubscribed=True), check, look, notices(malformed=(bad,)), look, check, look],
            threading.Event(),
        ),
        ScriptedSubscription([raising(RuntimeError("a bug"))], threading.Event()),
        ScriptedSubscription([raising(RuntimeError("the same bug"))], threading.Event()),
        ScriptedSubscription([notices(resubscribed=True), check, look, notices(forced), look], stop),
    ]
    subscriptions[0].steps.append(raising(KeyError("from_state")))
    listen(monkeypatch, local, stop, *subscriptions)
    assert cached == [True, False, True, True, False]
    assert heard == [("forced_open", False)]
    assert [s.closed for s in subscriptions] == [True, True, True, True]
    lines = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "dramatiq_resilience.breaker_local"
    ]
    assert lines == [
        ("WARNING", f"Skipping a malformed breaker notice (every cached breaker state was dropped): {bad}"),
        (
            "ERROR",
            "The breaker notice listener failed; it dropped the cached breaker states and goes on. "
            "Further failures are counted, not logged, until it works again.",
        ),
        ("INFO", "The breaker notice listener works again after 3 failures."),
    ]


def test_the_redis_subscription_skips_malformed_notices(redis_url: str, namespace: str) -> None:
    """Notices that are not JSON, or lack fields, are reported as malformed; the valid one still comes."""
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    subscription = backend.breaker_subscribe()
    try:
        assert subscription.poll(0).resubscribed is True
        valid = BreakerTransition("b", "closed", "forced_open", "forced_open", 0, 0, 0, 1, 5, origin="api:x")
        for data in ("not json", '{"breaker": "b"}', "[1]", valid.to_json()):
            backend.client.publish(backend.breaker_channel(), data)
        received: list[BreakerTransition] = []
        malformed: list[str] = []
        for _ in range(50):
            polled = subscription.poll(100)
            received += polled.transitions
            malformed += polled.malformed
            if received:
                break
        assert received == [valid]
        assert malformed == [
            "b'not json' (JSONDecodeError: Expecting value: line 1 column 1 (char 0))",
            "b'{\"breaker\": \"b\"}' (missing field 'from_state')",
            "b'[1]' (TypeError: list indices must be integers or slices, not str)",
        ]
    finally:
        subscription.close()
        backend.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the killing, on purpose
def test_start_restarts_a_listener_thread_that_died(
    h: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener thread killed by something it could not catch is started again by start()."""
    breaker = h.install()
    local = breaker.local
    real = h.backend.breaker_subscribe
    dying = ScriptedSubscription([raising(KeyboardInterrupt())], threading.Event())
    queue: list[Any] = [dying]
    monkeypatch.setattr(h.backend, "breaker_subscribe", lambda: queue.pop(0) if queue else real())
    local.start()
    thread = local._local.thread
    assert thread is not None
    thread.join(5)
    assert (local.listening, dying.closed) == (False, True)
    caplog.set_level(logging.WARNING)
    local.start()
    assert local.wait_listening(5)
    assert local.listening is True
    assert local._local.thread is not thread
    assert "The breaker notice listener thread had died; starting it again." in caplog.messages
    local.stop()
