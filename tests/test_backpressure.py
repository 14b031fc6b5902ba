"""Backpressure on the StubBroker: levels, refusals, slowing, exemptions, origins, cache, breakers."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import MiddlewareError

import dramatiq_resilience as dr
from dramatiq_resilience.depth_cache import DepthCache
from dramatiq_resilience.middleware.backpressure import NOT_BEFORE, Backpressure
from dramatiq_resilience.queue_depth import DepthReader, QueueDepth, StubDepthReader

LEVELS = {"work": dr.Thresholds(warning=2, critical=4, emergency=6)}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def named(events: list[dr.Event], name: str, *fields: str) -> list[tuple[Any, ...]]:
    return [tuple(event[f] for f in fields) for event in events if event.name == name]


class CountingReader(DepthReader):
    """The stub reader, counting calls; ``failing`` makes it raise DepthUnavailable."""

    def __init__(self, broker: Any) -> None:
        super().__init__(broker)
        self.inner = StubDepthReader(broker)
        self.calls: list[list[str]] = []
        self.failing = False

    def read(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        self.calls.append(list(queue_names))
        if self.failing:
            raise dr.DepthUnavailable("the broker is down", queue_name=queue_names[0])
        return self.inner.read(queue_names)


def install(broker: Any, clock: dr.FakeClock, **options: Any) -> Backpressure:
    """Backpressure (and the guard) only, on the fake clock, never really sleeping."""
    options.setdefault("thresholds", LEVELS)
    options.setdefault("sleep", lambda seconds: None)
    stack = dr.install(
        broker,
        backend=dr.StubBackend(clock=clock),
        scheduling=False,
        breaker=options.pop("breaker", False),
        dedup=options.pop("dedup", False),
        limiter=False,
        dead_letters=False,
        backpressure={"clock": clock, **options},
    )
    return stack.backpressure


@pytest.fixture
def worker(stub_broker: StubBroker) -> Iterator[Any]:
    """Start a worker on demand (after the test has filled its queues)."""
    started: list[Worker] = []

    def start() -> Worker:
        worker = Worker(stub_broker, worker_timeout=50, worker_threads=2)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def fill(actor: Any, count: int, clock: dr.FakeClock, cache_ms: int = 1_000) -> None:
    """Send ``count`` exempt messages, then let any cached reading expire: the next send reads the depth."""
    for n in range(count):
        actor.send_with_options(args=(n,), backpressure_exempt=True)
    clock.advance(cache_ms)


def test_emergency_refuses_sends_while_a_retry_is_enqueued_until_workers_drain_it(
    stub_broker: StubBroker, clock: dr.FakeClock, worker: Any, seen: list[dr.Event]
) -> None:
    """Past emergency a send raises QueueOverloaded, a retry passes; drained below critical, sends pass."""
    backpressure = install(stub_broker, clock)
    attempts: list[int] = []

    @dramatiq.actor(queue_name="work", max_retries=3, min_backoff=10, max_backoff=10)
    def job(n: int) -> None:
        attempts.append(n)
        if attempts.count(0) == 1 and n == 0:
            raise RuntimeError("the first attempt of message 0 fails")

    fill(job, 6, clock)
    with pytest.raises(dr.QueueOverloaded) as info:
        job.send(99)
    error = info.value
    assert isinstance(error, MiddlewareError)
    assert (error.queue_name, error.depth, error.threshold, error.actor_name) == ("work", 6, 6, "job")
    assert "Queue 'work' holds 6 messages, at or past its emergency threshold of 6" in str(error)

    worker()
    stub_broker.join("work")  # message 0 failed, and Retries enqueued its retry (which ran)
    assert sorted(attempts) == [0, 0, 1, 2, 3, 4, 5]
    assert backpressure.level("work") == "emergency"  # the retry passed while sends are refused
    with pytest.raises(dr.QueueOverloaded):
        job.send(98)

    clock.advance(1_000)  # the drained queue is read again
    job.send(7)
    stub_broker.join("work")
    assert sorted(attempts) == [0, 0, 1, 2, 3, 4, 5, 7]
    assert named(seen, "backpressure_level", "queue_name", "previous", "level", "depth") == [
        ("work", "normal", "emergency", 6),
        ("work", "emergency", "normal", 0),
    ]
    assert named(seen, "backpressure_refused", "reason", "depth", "threshold", "breaker") == [
        ("emergency", 6, 6, None),
        ("emergency", 7, 6, None),  # the last reading, plus the retry this process enqueued since
    ]


def test_a_warm_cache_reads_the_broker_once_per_cache_period(
    stub_broker: StubBroker, clock: dr.FakeClock
) -> None:
    """1 000 sends within cache_ms cost one depth read; the next read comes once cache_ms has passed."""
    reader = CountingReader(stub_broker)
    install(
        stub_broker, clock, reader=reader, cache_ms=500, thresholds={"work": dr.Thresholds(emergency=10**6)}
    )

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    for n in range(1_000):
        job.send(n)
    assert reader.calls == [["work"]]
    clock.advance(499)
    job.send(0)
    assert len(reader.calls) == 1
    clock.advance(1)
    job.send(0)
    assert reader.calls == [["work"], ["work"]]


def test_a_fast_producer_stops_at_the_threshold_within_one_cache_period(
    stub_broker: StubBroker, clock: dr.FakeClock
) -> None:
    """Between readings a process adds its own enqueues to the last reading: the sixth send is refused."""
    reader = CountingReader(stub_broker)
    backpressure = install(stub_broker, clock, reader=reader, thresholds={"work": dr.Thresholds(emergency=5)})

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    for n in range(5):
        job.send(n)
    with pytest.raises(dr.QueueOverloaded) as info:
        job.send(5)
    assert (info.value.depth, stub_broker.queues["work"].qsize(), len(reader.calls)) == (5, 5, 1)
    assert backpressure.depth("work").depth == 0  # type: ignore[union-attr]  # the reading itself
    stub_broker.flush("work")  # workers drained it: seen at the next reading
    clock.advance(1_000)
    job.send(6)


def test_cache_ms_zero_reads_on_every_send(stub_broker: StubBroker, clock: dr.FakeClock) -> None:
    """cache_ms=0: every send reads the depth, so the third send already sees two messages."""
    reader = CountingReader(stub_broker)
    install(stub_broker, clock, reader=reader, cache_ms=0, thresholds={"work": dr.Thresholds(emergency=2)})

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    job.send(1)
    job.send(2)
    with pytest.raises(dr.QueueOverloaded):
        job.send(3)
    assert len(reader.calls) == 3


def test_warning_passes_and_logs_once_per_interval(
    stub_broker: StubBroker, clock: dr.FakeClock, caplog: pytest.LogCaptureFixture, seen: list[dr.Event]
) -> None:
    """At warning sends pass; the change is logged once, then reminded once per log_interval, not per send."""
    caplog.set_level(logging.INFO, logger="dramatiq_resilience")
    install(stub_broker, clock, thresholds={"work": dr.Thresholds(warning=2)}, log_interval=60_000)

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    fill(job, 2, clock)
    for n in range(70):
        job.send(n)
        clock.advance(1_000)  # a fresh reading for every send
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("Backpressure")]
    assert messages == [
        "Queue 'work' is at its warning level: 2 messages (warning 2).",
        "Queue 'work' is still at its warning level: 62 messages (warning 2).",
    ]
    assert stub_broker.queues["work"].qsize() == 72
    assert named(seen, "backpressure_level", "previous", "level", "depth") == [("normal", "warning", 2)]
    assert len(named(seen, "backpressure_depth", "depth")) == 70


def test_critical_waits_in_send_in_proportion_to_the_depth(
    stub_broker: StubBroker, clock: dr.FakeClock, seen: list[dr.Event]
) -> None:
    """Critical at 10, emergency at 20: a depth of 10 waits 1/10 of max_wait, a depth of 19 all of it."""
    waits: list[float] = []
    install(
        stub_broker,
        clock,
        thresholds={"work": dr.Thresholds(critical=10, emergency=20)},
        max_wait=2_000,
        sleep=waits.append,
    )

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    fill(job, 10, clock)
    job.send(10)  # depth 10
    fill(job, 8, clock)
    job.send(19)  # depth 19
    assert waits == [0.2, 2.0]
    assert named(seen, "backpressure_slowed", "mode", "depth", "threshold", "wait_ms", "delay_ms") == [
        ("wait", 10, 10, 200, 0),
        ("wait", 19, 10, 2_000, 0),
    ]


def test_critical_without_emergency_scales_up_to_twice_critical(
    stub_broker: StubBroker, clock: dr.FakeClock
) -> None:
    """With no emergency threshold the wait reaches max_wait at twice the critical depth."""
    waits: list[float] = []
    install(
        stub_broker, clock, thresholds={"work": dr.Thresholds(critical=4)}, max_wait=400, sleep=waits.append
    )

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    fill(job, 5, clock)
    job.send(0)  # depth 5: (5 - 4 + 1) / 4 of 400 ms
    fill(job, 10, clock)
    job.send(0)  # depth 16, past 8: all of it
    assert waits == [0.2, 0.4]


def test_critical_delay_returns_at_once_and_the_worker_holds_the_message_back(
    stub_broker: StubBroker, clock: dr.FakeClock, worker: Any, seen: list[dr.Event]
) -> None:
    """on_critical="delay": send does not wait; the message carries not-before and is deferred until then."""
    waits: list[float] = []
    install(
        stub_broker,
        clock,
        thresholds={"work": dr.Thresholds(critical=2, emergency=4)},
        on_critical="delay",
        max_delay=60,
        sleep=waits.append,
    )
    runs: list[int] = []

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None:
        runs.append(n)

    fill(job, 2, clock)
    held = job.send(100)  # depth 2: (2 - 2 + 1) / 2 of 60 ms
    assert waits == []
    assert held.options[NOT_BEFORE] == clock.now_ms() + 30
    worker()
    wait_until(lambda: bool(named(seen, "message_deferred", "message_id")))
    [(message_id, reason, delay_ms)] = named(seen, "message_deferred", "message_id", "reason", "delay_ms")
    assert (message_id, reason) == (held.message_id, "backpressure")
    assert 30 <= delay_ms <= 30 + 100  # the remaining 30 ms, plus jitter
    wait_until(lambda: len(runs) == 2)
    assert sorted(runs) == [0, 1]  # 100 was deferred to its not-before moment
    clock.advance(30)
    stub_broker.join("work")
    assert sorted(runs) == [0, 1, 100]
    assert named(seen, "backpressure_slowed", "mode", "wait_ms", "delay_ms") == [("delay", 0, 30)]


def test_exempt_actors_and_messages_are_never_slowed_nor_refused(
    stub_broker: StubBroker, clock: dr.FakeClock
) -> None:
    """backpressure_exempt on the actor, or on one message, lets it through at emergency."""
    waits: list[float] = []
    install(stub_broker, clock, sleep=waits.append)

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    @dramatiq.actor(queue_name="work", backpressure_exempt=True)
    def urgent(n: int) -> None: ...

    fill(job, 6, clock)
    urgent.send(1)
    job.send_with_options(args=(2,), backpressure_exempt=True)
    with pytest.raises(dr.QueueOverloaded):
        job.send(3)
    assert stub_broker.queues["work"].qsize() == 8
    assert waits == []


@pytest.mark.parametrize("origin", ["retry", "deferral", "delayed_move", "redrive", "scheduled"])
def test_re_enqueues_are_never_refused(stub_broker: StubBroker, clock: dr.FakeClock, origin: Any) -> None:
    """Retries, deferrals, delayed moves, redrives and scheduler sends pass at emergency."""
    install(stub_broker, clock)

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    fill(job, 6, clock)
    with pytest.raises(dr.QueueOverloaded):
        job.send(0)
    with dr.internal_enqueue(origin):
        job.send(1)
    retry = job.message_with_options(args=(2,), retries=1)
    stub_broker.enqueue(retry)  # what Retries does: retries > 0
    assert stub_broker.queues["work"].qsize() == 8


@pytest.mark.parametrize("how", ["pipeline", "on_success"])
def test_sends_from_after_hooks_are_never_refused(
    stub_broker: StubBroker, clock: dr.FakeClock, worker: Any, how: str
) -> None:
    """A pipeline's next step and an on_success callback pass at emergency: refusing would lose them."""
    backpressure = install(stub_broker, clock, thresholds={"busy": dr.Thresholds(emergency=1)})
    runs: list[str] = []

    @dramatiq.actor
    def first() -> int:
        runs.append("first")
        return 1

    @dramatiq.actor(queue_name="busy")
    def second(*args: Any) -> None:  # on_success passes the message and the result
        runs.append("second")

    second.send_with_options(backpressure_exempt=True)
    assert backpressure.level("busy") == "emergency"  # cached: the clock does not move
    if how == "pipeline":
        dramatiq.pipeline([first.message(), second.message()]).run()
    else:
        first.send_with_options(on_success=second)
    worker()
    stub_broker.join("default")
    stub_broker.join("busy")
    assert sorted(runs) == ["first", "second", "second"]
    with pytest.raises(dr.QueueOverloaded):
        second.send()


def test_an_actor_sending_to_an_overloaded_queue_fails_into_its_retries(
    stub_broker: StubBroker, clock: dr.FakeClock, worker: Any
) -> None:
    """A send from an actor's body is a producer's send: refused, the actor fails (and may retry)."""
    install(stub_broker, clock, thresholds={"busy": dr.Thresholds(emergency=1)})
    errors: list[BaseException] = []

    @dramatiq.actor(queue_name="busy")
    def second() -> None: ...

    @dramatiq.actor(max_retries=0)
    def fan_out() -> None:
        try:
            second.send()
        except dr.QueueOverloaded as exc:
            errors.append(exc)
            raise

    second.send_with_options(delay=60_000)  # waits in the delay queue: counted, not run
    clock.advance(1_000)
    fan_out.send()
    worker()
    with pytest.raises(dr.QueueOverloaded):
        stub_broker.join("default")  # the actor failed with it (max_retries=0: dead-lettered)
    assert [type(e) for e in errors] == [dr.QueueOverloaded]
    assert len(stub_broker.dead_letters_by_queue["default"]) == 1


def test_unchecked_queues_are_never_read(stub_broker: StubBroker, clock: dr.FakeClock) -> None:
    """A queue without thresholds (and no default) costs no depth read."""
    reader = CountingReader(stub_broker)
    install(stub_broker, clock, reader=reader)

    @dramatiq.actor(queue_name="other")
    def job() -> None: ...

    job.send()
    assert reader.calls == []


def test_the_default_applies_to_every_other_queue_and_delayed_sends_count(
    stub_broker: StubBroker, clock: dr.FakeClock
) -> None:
    """default= checks any queue; a delayed send is checked against its canonical queue and counted."""
    install(stub_broker, clock, thresholds={}, default=dr.Thresholds(emergency=3))

    @dramatiq.actor(queue_name="anything")
    def job() -> None: ...

    job.send()
    job.send_with_options(delay=60_000)
    job.send_with_options(delay=60_000)
    clock.advance(1_000)
    with pytest.raises(dr.QueueOverloaded) as info:
        job.send_with_options(delay=60_000)
    assert (info.value.queue_name, info.value.depth) == ("anything", 3)


def test_an_unreadable_depth_lets_sends_through_and_is_logged_once(
    stub_broker: StubBroker, clock: dr.FakeClock, caplog: pytest.LogCaptureFixture, seen: list[dr.Event]
) -> None:
    """While depths cannot be read sends pass, asking once per cache_ms; recovery is logged."""
    caplog.set_level(logging.INFO, logger="dramatiq_resilience")
    reader = CountingReader(stub_broker)
    install(stub_broker, clock, reader=reader, thresholds={"work": dr.Thresholds(emergency=1)})

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    reader.failing = True
    for n in range(3):
        job.send(n)
    clock.advance(1_000)
    job.send(3)
    assert len(reader.calls) == 2
    reader.failing = False
    clock.advance(1_000)
    with pytest.raises(dr.QueueOverloaded):
        job.send(4)
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("Backpressure")]
    assert messages[0] == (
        "Backpressure cannot read queue depths (the broker is down); sends pass unchecked until it can. "
        "Further errors are not logged."
    )
    assert messages[1] == "Backpressure reads queue depths again (queue 'work': 4 messages)."
    assert named(seen, "backpressure_depth_failed", "queue_name", "first") == [
        ("work", True),
        ("work", False),
    ]


def test_open_breakers_refuse_sends_when_asked(
    stub_broker: StubBroker, clock: dr.FakeClock, seen: list[dr.Event]
) -> None:
    """A forced-open breaker refuses sends of actors that ask; once closed, sends pass after cache_ms."""
    backpressure = install(stub_broker, clock, thresholds={}, breaker=True)
    breaker = dr.installed(stub_broker).breaker  # type: ignore[union-attr]

    @dramatiq.actor(backpressure_refuse_open_breaker=True)
    def charge() -> None: ...

    @dramatiq.actor
    def refund() -> None: ...

    @dramatiq.actor(breaker=False, backpressure_refuse_open_breaker=True)
    def unguarded() -> None: ...

    for name in ("charge", "refund", "unguarded"):
        breaker.force_open(name)
    with pytest.raises(dr.CircuitOpenOnSend) as info:
        charge.send()
    error = info.value
    assert (error.actor_name, error.queue_name, error.breaker, error.state, error.retry_after_ms) == (
        "charge",
        "default",
        "charge",
        "forced_open",
        0,
    )
    refund.send()  # not asked
    unguarded.send()  # no breaker
    with pytest.raises(dr.CircuitOpenOnSend):
        refund.send_with_options(backpressure_refuse_open_breaker=True)  # asked by the message
    breaker.force_closed("charge")
    with pytest.raises(dr.CircuitOpenOnSend):
        charge.send()  # the answer is cached for cache_ms
    clock.advance(backpressure.cache_ms)
    charge.send()
    assert named(seen, "backpressure_refused", "reason", "breaker", "actor_name") == [
        ("breaker_open", "charge", "charge"),
        ("breaker_open", "refund", "refund"),
        ("breaker_open", "charge", "charge"),
    ]


def test_a_refused_unique_send_takes_no_reservation(stub_broker: StubBroker, clock: dr.FakeClock) -> None:
    """Backpressure runs before Deduplication: after a refusal the same unique send succeeds once drained."""
    backpressure = install(stub_broker, clock, dedup=True, thresholds={"work": dr.Thresholds(emergency=1)})

    @dramatiq.actor(queue_name="work", dedup_key=lambda order: order, dedup_on_enqueue=True)
    def charge(order: str) -> None: ...

    charge.send("a")
    clock.advance(1_000)
    with pytest.raises(dr.QueueOverloaded):
        charge.send("b")
    stub_broker.flush("work")
    clock.advance(1_000)
    charge.send("b")  # not DuplicateMessage: the refused send reserved nothing
    assert stub_broker.queues["work"].qsize() == 1
    assert backpressure.depth("work") == dr.QueueDepth("work", 0, 0, backpressure.depth("work").read_at_ms)


def test_options_are_checked_at_declaration_and_per_message(
    stub_broker: StubBroker, clock: dr.FakeClock
) -> None:
    """Bad actor options fail the declaration; a bad message option fails the send; both name the option."""
    waits: list[float] = []
    install(stub_broker, clock, sleep=waits.append, thresholds={"work": dr.Thresholds(critical=1)})
    with pytest.raises(dr.ConfigurationError) as info:

        @dramatiq.actor(backpressure_on_critical="later")
        def bad() -> None: ...

    assert (
        str(info.value)
        == "Actor 'bad', option 'backpressure_on_critical': must be one of 'wait', 'delay', got 'later'"
    )

    @dramatiq.actor(queue_name="work", backpressure_max_wait=100)
    def job() -> None: ...

    with pytest.raises(dr.ConfigurationError) as info:
        job.send_with_options(backpressure_max_wait=-1)
    assert info.value.option == "backpressure_max_wait"
    job.send_with_options(backpressure_max_wait=300)  # depth 0: normal
    clock.advance(1_000)
    job.send_with_options(backpressure_max_wait=300)  # depth 1: critical, 1/1 of 300 ms
    job.send()  # the actor's 100 ms
    assert waits == [0.3, 0.1]


@pytest.mark.parametrize(
    ("kwargs", "option", "problem"),
    [
        (
            {},
            "thresholds",
            "Backpressure needs thresholds: thresholds={queue_name: Thresholds(...)} and/or "
            "default=Thresholds(...) (or refuse_open_breaker=True)",
        ),
        ({"default": {"warning": 1}, "cache_ms": -1}, "cache_ms", "must be an integer >= 0, got -1"),
        (
            {"default": {"warning": 1}, "on_critical": "drop"},
            "backpressure_on_critical",
            "must be one of 'wait', 'delay', got 'drop' (the default on_critical=)",
        ),
        (
            {"default": {"warning": 1}, "max_wait": -5},
            "backpressure_max_wait",
            "must be a duration in milliseconds >= 0, got -5 (the default max_wait=)",
        ),
    ],
)
def test_bad_constructor_arguments_are_configuration_errors(
    kwargs: dict[str, Any], option: str, problem: str
) -> None:
    """Each bad constructor argument names the option and the problem."""
    with pytest.raises(dr.ConfigurationError) as info:
        Backpressure(**kwargs)
    assert (info.value.option, info.value.problem) == (option, problem)


def test_status_reads_every_queue_now(stub_broker: StubBroker, clock: dr.FakeClock) -> None:
    """status() reads fresh depths of the named and declared queues, with their level and thresholds."""
    backpressure = install(stub_broker, clock, thresholds={**LEVELS, "idle": None})

    @dramatiq.actor(queue_name="work")
    def job(n: int) -> None: ...

    @dramatiq.actor(queue_name="other")
    def other() -> None: ...

    fill(job, 3, clock)
    job.send_with_options(args=(9,), delay=60_000)
    other.send()
    rows = {
        s.queue_name: (s.depth.ready if s.depth else None, s.depth.delayed if s.depth else None, s.level)
        for s in backpressure.status()
    }
    assert rows == {"idle": (0, 0, None), "other": (1, 0, None), "work": (3, 1, "critical")}
    assert [s.queue_name for s in backpressure.status(["work.DQ"])] == ["work"]


def test_a_forked_child_starts_with_an_empty_cache(stub_broker: StubBroker, clock: dr.FakeClock) -> None:
    """After a real fork, the child reads depths again instead of trusting the parent's cached reading."""
    reader = CountingReader(stub_broker)
    cache = DepthCache(reader, cache_ms=60_000, clock=clock)
    assert cache.get("work") == QueueDepth("work", 0, 0, cache.get("work").read_at_ms)  # type: ignore[union-attr]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        before = len(reader.calls)
        cache.get("work")
        os.write(write, b"fresh" if len(reader.calls) == before + 1 else b"stale")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"fresh"
    assert len(reader.calls) == 1


def test_a_read_interrupted_by_a_time_limit_is_read_again(
    stub_broker: StubBroker, clock: dr.FakeClock
) -> None:
    """A BaseException (Dramatiq's TimeLimitExceeded) during a read leaves no queue "being read" forever."""
    reader = CountingReader(stub_broker)
    cache = DepthCache(reader, cache_ms=1_000, clock=clock, wait_ms=0)
    assert cache.get("work") is not None
    clock.advance(1_000)
    real_read = reader.inner.read

    def interrupted(queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        raise dramatiq.middleware.time_limit.TimeLimitExceeded()

    reader.inner.read = interrupted  # type: ignore[method-assign]
    with pytest.raises(dramatiq.middleware.time_limit.TimeLimitExceeded):
        cache.get("work")
    reader.inner.read = real_read  # type: ignore[method-assign]
    before = len(reader.calls)
    depth = cache.get("work")
    assert len(reader.calls) - before == 1
    assert depth == QueueDepth("work", 0, 0, depth.read_at_ms)  # type: ignore[union-attr]


def test_install_puts_it_before_the_breaker_and_dedup(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """install(backpressure=...) places it before every other check, so a refused send takes nothing."""
    dr.install(stub_broker, backend=stub_backend, backpressure={"default": {"emergency": 10}})
    names = [type(m).__name__ for m in stub_broker.middleware]
    assert names[names.index("Pipelines") + 1 :] == [
        "Backpressure",
        "CircuitBreaker",
        "Deduplication",
        "SlidingWindowLimiter",
        "SentryReporter",
        "DeadLetters",
        "Retries",
    ]
    assert "Backpressure" not in [
        type(m).__name__ for m in dr.install(StubBroker(), backend=stub_backend).middleware.values()
    ]
