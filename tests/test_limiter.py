"""SlidingWindowLimiter through a real Worker on the StubBroker (time from a FakeClock)."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage

import dramatiq_resilience as dr
from dramatiq_resilience.backends.window import HeldLease, LeaseSpec, LimitDefinition, RateSpec
from dramatiq_resilience.middleware.limiter_announce import ANNOUNCE_TTL
from dramatiq_resilience.middleware.limiter_leases import LeaseRenewer
from dramatiq_resilience.outage import OutageLog

T = 1_767_225_600_000


class NoJitter:
    """An rng whose jitter is always 0, so deferral delays are exact."""

    def randint(self, low: int, high: int) -> int:
        return low


class Recorder(Middleware):
    """Records every enqueue (message, delay, origin)."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[Any, Any, str]] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.enqueued.append((message, delay, dr.enqueue_origin(message)))

    def deferrals(self) -> list[tuple[str, Any]]:
        return [(m.message_id, delay) for m, delay, origin in self.enqueued if origin == "deferral"]


@pytest.fixture
def events() -> Iterator[list[dr.Event]]:
    seen: list[dr.Event] = []
    dr.subscribe("*", seen.append)
    yield seen
    dr.unsubscribe("*", seen.append)


def named(events: list[dr.Event], name: str) -> list[dict[str, Any]]:
    return [event.fields for event in events if event.name == name]


def install(broker: StubBroker, backend: dr.StateBackend, **limiter: Any) -> dr.SlidingWindowLimiter:
    # The breaker (on by default) is not what these tests are about.
    stack = dr.install(broker, backend=backend, breaker=False, limiter=limiter or True)
    stack.limiter.rng = NoJitter()
    return stack.limiter  # type: ignore[no-any-return]


def drain(broker: StubBroker, worker: Worker, queue: str = "default") -> None:
    """Wait until nothing is queued, running or delayed (only when no deferral waits on the frozen clock)."""
    broker.join(queue, fail_fast=False)
    worker.join()


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` is true (messages deferred on a frozen clock never drain)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_over_the_limit_is_deferred_to_the_moment_a_slot_frees_then_runs(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, clock: dr.FakeClock
) -> None:
    """2 per 100 ms: the third message is deferred exactly 100 ms, retries untouched, and runs later."""
    install(stub_broker, stub_backend)
    recorder = Recorder()
    stub_broker.add_middleware(recorder)
    stub_broker.add_middleware(dramatiq.middleware.CurrentMessage())
    runs: list[tuple[int, dict[str, Any]]] = []
    deferred = threading.Event()
    dr.subscribe("message_deferred", lambda event: deferred.set())

    @dramatiq.actor(max_retries=0, rate_limits=dr.Limit(2, per=100))
    def charge(n: int) -> None:
        runs.append((n, dict(dramatiq.middleware.CurrentMessage.get_current_message().options)))

    for n in range(3):
        charge.send(n)
    assert deferred.wait(5)
    clock.advance(100)  # the slot frees at T+100 on the backend's clock
    drain(stub_broker, stub_worker)
    assert sorted(n for n, _ in runs) == [0, 1, 2]
    [(_, delay)] = recorder.deferrals()
    assert delay == 100
    late = next(options for _, options in runs if options.get("deferrals"))
    assert (late["deferral_counts"], late["deferred_reason"], late.get("retries", 0)) == (
        {"rate_limited": 1},
        "rate_limited",
        0,
    )
    assert stub_broker.dead_letters == []


def test_rate_max_deferrals_dead_letters_a_message_deferred_too_often(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, events: list[dr.Event]
) -> None:
    """rate_max_deferrals=0: a message over the limit is dead-lettered with TooManyDeferrals."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(max_retries=3, rate_limits="1/second", rate_max_deferrals=0)
    def charge(n: int) -> None: ...

    charge.send(1)
    drain(stub_broker, stub_worker)
    charge.send(2)
    drain(stub_broker, stub_worker)
    [dead] = stub_broker.dead_letters
    assert isinstance(dead._exception, dr.TooManyDeferrals)
    assert (dead._exception.deferred_for, dead._exception.max_deferrals) == ("rate_limited", 0)
    [exceeded] = named(events, "rate_limit_exceeded")
    assert (exceeded["limit"], exceeded["key"], exceeded["kind"], exceeded["delay_ms"]) == (
        "charge.rate_limits[0]",
        "",
        "rate",
        1_009,
    )


def test_a_message_option_overrides_rate_max_deferrals(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """send_with_options(rate_max_deferrals=0) caps that message only; a bad value dead-letters it."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(max_retries=0, rate_limits="1/second")
    def charge(n: int) -> None: ...

    charge.send(0)
    drain(stub_broker, stub_worker)
    charge.send_with_options(args=(1,), rate_max_deferrals=0)
    charge.send_with_options(args=(2,), rate_max_deferrals="never")
    drain(stub_broker, stub_worker)
    errors = sorted(type(dead._exception).__name__ for dead in stub_broker.dead_letters)
    assert errors == ["InvalidMessage", "TooManyDeferrals"]


def test_per_tenant_keys_have_their_own_budgets(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, events: list[dr.Event]
) -> None:
    """1 per second per tenant: acme's second message waits, globex's first runs."""
    limiter = install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(max_retries=0, rate_limits=dr.Limit(1, per=1_000, key=lambda tenant, event: tenant))
    def deliver(tenant: str, event: str) -> None:
        runs.append(event)

    deliver.send("acme", "a1")
    wait_for(lambda: runs == ["a1"])
    deliver.send("acme", "a2")
    deliver.send("globex", "g1")
    wait_for(lambda: len(runs) == 2 and named(events, "message_deferred"))
    assert sorted(runs) == ["a1", "g1"]
    admitted = named(events, "rate_limit_admitted")
    assert sorted(fields["keys"]["deliver.rate_limits[0]"] for fields in admitted) == ["acme", "globex"]
    assert {fields["now_ms"] for fields in admitted} == {T}
    [exceeded] = named(events, "rate_limit_exceeded")
    assert (exceeded["key"], exceeded["retry_at_ms"]) == ("acme", T + 1_009)
    usage = {(u.key, u.used, u.waiting_until_ms) for u in limiter.inspect()}
    assert usage == {("acme", 1, T + 2_009), ("globex", 1, None)}


def test_key_functions_get_the_arguments_by_name_however_the_message_was_sent(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, events: list[dr.Event]
) -> None:
    """``lambda order_id, tenant, **_: tenant`` gets the tenant of positional, keyword and default sends."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(
        max_retries=0,
        rate_limits=dr.Limit(10, per=1_000, key=lambda order_id, tenant, **_: tenant),
        rate_concurrency=dr.Concurrency(5, key=lambda tenant, **_: tenant),
    )
    def charge(order_id: str, tenant: str = "acme", amount_cents: int = 0) -> None:
        runs.append(order_id)

    charge.send("o-1", "globex", 500)
    charge.send(order_id="o-2", tenant="initech", amount_cents=100)
    charge.send("o-3")
    drain(stub_broker, stub_worker)
    assert sorted(runs) == ["o-1", "o-2", "o-3"]
    keys = sorted(tuple(sorted(fields["keys"].values())) for fields in named(events, "rate_limit_admitted"))
    assert keys == [("acme", "acme"), ("globex", "globex"), ("initech", "initech")]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (lambda tenant: tenant["id"], "raised TypeError: string indices must be integers"),
        (lambda tenant: 42, "must return a string, got 42"),
    ],
)
def test_a_failing_key_function_dead_letters_the_message_with_invalid_message(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, key: Any, problem: str
) -> None:
    """A key function that raises or returns a non-string: InvalidMessage naming actor and option."""
    install(stub_broker, stub_backend)
    runs: list[str] = []

    @dramatiq.actor(max_retries=5, rate_concurrency=dr.Concurrency(1, key=key))
    def deliver(tenant: Any) -> None:
        runs.append(tenant)

    @dramatiq.actor(max_retries=0)
    def other() -> None:
        runs.append("other")

    deliver.send("acme")
    other.send()
    drain(stub_broker, stub_worker)
    assert runs == ["other"]
    [dead] = stub_broker.dead_letters
    error = dead._exception
    assert isinstance(error, dr.InvalidMessage)
    assert (error.actor_name, error.option) == ("deliver", "rate_concurrency")
    assert str(error).startswith(
        "Actor 'deliver', option 'rate_concurrency': the key function of limit 'deliver.rate_concurrency[0]' "
    )
    assert problem in error.problem


def test_a_named_limit_is_one_budget_for_every_actor_naming_it(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """Two actors naming 'stripe-api' (2 per second) share it: the third call waits."""
    limiter = install(stub_broker, stub_backend)
    stripe = dr.Limit(2, per=1_000, name="stripe-api")
    runs: list[str] = []

    @dramatiq.actor(max_retries=0, rate_limits=stripe)
    def charge() -> None:
        runs.append("charge")

    @dramatiq.actor(max_retries=0, rate_limits=[dr.Limit(2, per=1_000, name="stripe-api"), "100/second"])
    def refund() -> None:
        runs.append("refund")

    deferred = threading.Event()
    dr.subscribe("message_deferred", lambda event: deferred.set())
    charge.send()
    refund.send()
    charge.send()
    wait_for(lambda: len(runs) == 2 and deferred.is_set())
    assert sorted(runs) == ["charge", "refund"] or sorted(runs) == ["charge", "charge"]
    assert [(u.limit, u.used) for u in limiter.inspect(limit="stripe-api")] == [("stripe-api", 2)]


def test_one_name_with_two_definitions_is_a_configuration_error(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """The same name with another count or per on a second actor is refused at declaration."""
    install(stub_broker, stub_backend)

    @dramatiq.actor(rate_limits=dr.Limit(100, per=1_000, name="stripe-api"))
    def charge() -> None: ...

    with pytest.raises(dr.ConfigurationError) as info:

        @dramatiq.actor(rate_limits=dr.Limit(50, per=1_000, name="stripe-api"))
        def refund() -> None: ...

    assert str(info.value) == (
        "Actor 'refund', option 'rate_limits': limit 'stripe-api' is 50 per 1000 ms here, but actor "
        "'charge' declared it as 100 per 1000 ms; a named limit is one budget and needs one definition"
    )

    @dramatiq.actor(rate_limits=dr.Limit(100, per=1_000, name="stripe-api"))
    def refund_again() -> None: ...

    with pytest.raises(
        dr.ConfigurationError,
        match="limit 'db' is 2 at once \\(lease 30000 ms\\) here, but this actor declared it as 1",
    ):

        @dramatiq.actor(rate_concurrency=[dr.Concurrency(1, name="db"), dr.Concurrency(2, name="db")])
        def both() -> None: ...


def test_processes_that_disagree_on_a_named_limit_keep_their_windows_and_it_is_logged_once(
    stub_broker: StubBroker,
    stub_worker: Worker,
    stub_backend: dr.StubBackend,
    clock: dr.FakeClock,
    events: list[dr.Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A newer process's 2 per 2 s neither resets nor eats this 2 per 1 s; the conflict is logged once."""
    caplog.set_level(logging.INFO)
    limiter = install(stub_broker, stub_backend)
    newer = LimitDefinition("rate", "stripe-api", "2 per 2000 ms")
    # The other process (a newer deploy) announced its definition and took its two starts.
    assert stub_backend.window_announce([newer], ANNOUNCE_TTL) == [[]]
    for token in ("n1", "n2"):
        assert stub_backend.window_acquire(token, [RateSpec("stripe-api", "", 2, 2_000)]).granted
    runs: list[int] = []

    @dramatiq.actor(
        max_retries=0, rate_limits=dr.Limit(2, per=1_000, name="stripe-api"), rate_max_deferrals=0
    )
    def charge(n: int) -> None:
        runs.append(n)

    for n in range(3):
        charge.send(n)
    drain(stub_broker, stub_worker)
    assert (len(runs), len(stub_broker.dead_letters)) == (2, 1)
    assert [(u.used, u.window_ms) for u in limiter.inspect(limit="stripe-api")] == [(2, 1_000), (2, 2_000)]
    assert named(events, "rate_limit_disagreement") == [
        {"kind": "rate", "limit": "stripe-api", "definition": "2 per 1000 ms", "others": ["2 per 2000 ms"]}
    ]
    warning = (
        "Processes disagree on rate limit 'stripe-api': it is 2 per 1000 ms here, but 2 per 2000 ms "
        "elsewhere (a rolling deploy?). Each process enforces its own definition (in a window of its own "
        "where the windows differ), so until they agree up to the sum of their limits may be admitted."
    )
    assert caplog.messages.count(warning) == 1
    # The newer process hears of this one; once it is gone, the next announcement says they agree.
    assert stub_backend.window_announce([newer], ANNOUNCE_TTL) == [["2 per 1000 ms"]]
    clock.advance(ANNOUNCE_TTL)
    charge.send(3)
    drain(stub_broker, stub_worker)
    assert runs[2:] == [3]
    assert "Every process now defines rate limit 'stripe-api' as 2 per 1000 ms." in caplog.messages
    assert len(named(events, "rate_limit_disagreement")) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limits": 5}, "option 'rate_limits': must be a Limit, a rate string such as '100/minute'"),
        ({"rate_limits": "100/fortnight"}, "'100/fortnight' is not a rate"),
        ({"rate_concurrency": "two"}, "option 'rate_concurrency': must be a Concurrency, an int"),
        ({"rate_max_deferrals": -1}, "option 'rate_max_deferrals': must be an integer >= 0, got -1"),
    ],
)
def test_bad_actor_options_are_configuration_errors(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, options: dict[str, Any], message: str
) -> None:
    """Bad rate_* options fail at declaration with the actor, the option and the problem."""
    install(stub_broker, stub_backend)
    with pytest.raises(dr.ConfigurationError, match=message):
        dramatiq.actor(**options)(lambda: None)


def test_constructor_defaults_apply_to_actors_without_options(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """limits= on the middleware limits every actor; rate_limits=[] turns it off for one."""
    install(stub_broker, stub_backend, limits="1/minute")
    runs: list[str] = []

    @dramatiq.actor(max_retries=0)
    def limited() -> None:
        runs.append("limited")

    @dramatiq.actor(max_retries=0, rate_limits=[])
    def free() -> None:
        runs.append("free")

    for _ in range(2):
        limited.send()
        free.send()
    wait_for(lambda: len(runs) == 3)
    time.sleep(0.05)
    assert sorted(runs) == ["free", "free", "limited"]


def test_concurrency_defers_the_extra_message_and_releases_after_success_failure_and_skip(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, events: list[dr.Event]
) -> None:
    """1 at once: a second message waits while the first runs; every way out releases the slot."""
    limiter = install(stub_broker, stub_backend)
    release = threading.Event()
    started = threading.Event()
    deferred = threading.Event()
    dr.subscribe("message_deferred", lambda event: deferred.set())

    class SkipMarked(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            if message.args == ("skip",):
                raise SkipMessage()

    stub_broker.add_middleware(SkipMarked())

    @dramatiq.actor(max_retries=0, rate_concurrency=dr.Concurrency(1, lease=60_000))
    def job(kind: str) -> None:
        if kind == "block":
            started.set()
            assert release.wait(5)
        if kind == "fail":
            raise RuntimeError("boom")

    job.send("block")
    assert started.wait(5)
    job.send("waits")
    assert deferred.wait(5)
    [usage] = limiter.inspect()
    assert (usage.kind, usage.used, usage.capacity) == ("concurrency", 1, 1)
    release.set()
    drain(stub_broker, stub_worker)
    assert limiter.inspect() == []
    for kind in ("fail", "skip"):
        job.send(kind)
        drain(stub_broker, stub_worker)
        assert limiter.inspect() == []
    assert limiter.renewer._held == {}
    admitted = [fields["message_id"] for fields in named(events, "rate_limit_admitted")]
    assert len(admitted) == 4  # block, waits (on its return), fail, skip: each took the slot


class CountingBackend(dr.StubBackend):
    """A StubBackend that records every renewal call: (clock time, tokens renewed)."""

    def __init__(self, clock: dr.FakeClock) -> None:
        super().__init__(clock=clock)
        self.renewals: list[tuple[int, list[str]]] = []
        self.renewed = threading.Event()

    def window_renew(self, held: Sequence[HeldLease]) -> list[bool]:
        self.renewals.append((self.clock.now_ms(), [lease.token for lease in held]))
        self.renewed.set()
        return super().window_renew(held)


def renewer_for(backend: dr.StubBackend, clock: dr.FakeClock, *, threaded: bool = False) -> LeaseRenewer:
    logger = logging.getLogger("test.renewer")
    return LeaseRenewer(backend, OutageLog("test", logger), logger, clock=clock, threaded=threaded)


def take(renewer: LeaseRenewer, token: str, lease_ms: int) -> LeaseSpec:
    """Acquire a slot of ``lease_ms`` for ``token`` (a pool of its own) and start renewing it."""
    spec = LeaseSpec(f"pool-{token}", "", 1_000, lease_ms)
    assert renewer.backend.window_acquire(token, [], [spec]).granted
    renewer.hold(token, [spec])
    return spec


def run_until(renewer: LeaseRenewer, clock: dr.FakeClock, until: int) -> None:
    """Tick at every moment the renewer's thread would wake, up to ``until`` (where the clock stays)."""
    while (at := renewer.wakes_at) is not None and at <= until:
        clock.set(at)
        renewer.tick()
    clock.set(until)


def test_a_short_lease_taken_while_a_long_one_is_held_is_renewed_every_third_of_it(
    clock: dr.FakeClock, events: list[dr.Event]
) -> None:
    """A 2 000 ms lease taken while a 30 000 ms one is held is renewed every 666 ms (6 times in 4.5 s)."""
    backend = CountingBackend(clock)
    renewer = renewer_for(backend, clock)
    take(renewer, "long", 30_000)
    assert renewer.wakes_at == T + 10_000
    clock.set(T + 500)
    short = take(renewer, "short", 2_000)
    assert renewer.wakes_at == T + 1_166
    run_until(renewer, clock, T + 5_000)
    assert backend.renewals == [(T + 500 + 666 * k, ["short"]) for k in range(1, 7)]
    assert [u.resets_at_ms for u in backend.window_inspect(limit=short.limit)] == [T + 4_496 + 2_000]
    assert named(events, "rate_lease_lost") == []


def test_a_lease_taken_after_idle_is_renewed_every_third_of_it(
    clock: dr.FakeClock, events: list[dr.Event]
) -> None:
    """After every lease was released, a 300 ms lease is renewed every 100 ms (15 times in 1.5 s)."""
    backend = CountingBackend(clock)
    renewer = renewer_for(backend, clock)
    take(renewer, "first", 30_000)
    renewer.drop("first")
    run_until(renewer, clock, T + 20_000)
    assert (renewer.wakes_at, backend.renewals) == (None, [])
    take(renewer, "late", 300)
    run_until(renewer, clock, T + 21_500)
    assert backend.renewals == [(T + 20_000 + 100 * k, ["late"]) for k in range(1, 16)]
    assert named(events, "rate_lease_lost") == []


@pytest.mark.parametrize("seed", range(5))
def test_every_lease_is_renewed_within_a_third_of_it_whatever_the_order(
    clock: dr.FakeClock, events: list[dr.Event], seed: int
) -> None:
    """Leases of 10 ms to 30 s taken and released in a random order: none waits over a third for renewal."""
    rng = random.Random(seed)
    backend = CountingBackend(clock)
    renewer = renewer_for(backend, clock)
    steps: list[tuple[int, str, str, int]] = []
    for n in range(40):
        start = rng.randrange(0, 60_000)
        lease = rng.choice([10, 300, 2_000, 7_000, 30_000])
        steps += [(start, "hold", f"m{n}", lease), (start + rng.randrange(1, 20_000), "drop", f"m{n}", lease)]
    life: dict[str, tuple[int, int, int]] = {}
    for at, action, token, lease in sorted(steps):
        run_until(renewer, clock, T + at)
        if action == "hold":
            take(renewer, token, lease)
        else:
            renewer.drop(token)
        life[token] = (*life.get(token, (T + at,))[:1], T + at, lease)
    late = []
    early = []
    for token, (held_at, dropped_at, lease) in life.items():
        moments = [held_at, *(at for at, tokens in backend.renewals if token in tokens), dropped_at]
        gaps = [b - a for a, b in itertools.pairwise(moments)]
        if max(gaps) > lease // 3:
            late.append((token, lease, max(gaps)))
        if any(gap < (lease // 3) // 2 for gap in gaps[:-1]):
            early.append((token, lease, gaps))
    assert (late, early, named(events, "rate_lease_lost")) == ([], [], [])


def test_the_renewer_thread_wakes_for_a_sooner_lease_and_after_idle(clock: dr.FakeClock) -> None:
    """The thread, asleep for a 30 s lease or idle, wakes when a 30 ms lease is held and renews it on time."""
    backend = CountingBackend(clock)
    renewer = renewer_for(backend, clock, threaded=True)
    try:
        take(renewer, "long", 30_000)
        take(renewer, "short", 30)
        clock.advance(10)
        assert backend.renewed.wait(5)
        assert backend.renewals == [(T + 10, ["short"])]
        renewer.drop("long")
        renewer.drop("short")
        clock.advance(10)  # the tick at T + 20 finds nothing to renew: the thread goes idle
        wait_for(lambda: renewer.wakes_at is None)
        backend.renewed.clear()
        take(renewer, "late", 30)
        clock.advance(10)
        assert backend.renewed.wait(5)
        assert backend.renewals == [(T + 10, ["short"]), (T + 30, ["late"])]
    finally:
        renewer.stop()


def test_the_renewer_reports_a_lost_lease_once_and_stops_renewing_it(
    clock: dr.FakeClock, events: list[dr.Event]
) -> None:
    """A lease gone from the backend is announced as rate_lease_lost once; the others are kept."""
    backend = CountingBackend(clock)
    renewer = renewer_for(backend, clock)
    spec = take(renewer, "kept", 1_000)
    renewer.hold("gone", [spec])  # never acquired: the backend does not know it
    run_until(renewer, clock, T + 1_000)
    assert backend.renewals == [(T + 333, ["kept", "gone"]), (T + 666, ["kept"]), (T + 999, ["kept"])]
    [usage] = backend.window_inspect()
    assert usage.resets_at_ms == T + 1_999
    assert named(events, "rate_lease_lost") == [{"message_id": "gone", "limit": spec.limit, "key": ""}]


@pytest.mark.parametrize("policy", ["allow", "defer"])
def test_backend_errors_follow_on_backend_error(
    stub_broker: StubBroker,
    stub_worker: Worker,
    stub_backend: dr.StubBackend,
    policy: str,
    events: list[dr.Event],
) -> None:
    """Backend down: "allow" runs the message unlimited; "defer" puts it back (backend_unavailable)."""
    install(stub_broker, stub_backend, on_backend_error=policy, backend_retry_delay=60_000)
    stub_backend.unavailable = True
    runs: list[int] = []

    @dramatiq.actor(max_retries=0, rate_limits="1/second", rate_concurrency=1)
    def job() -> None:
        runs.append(1)

    job.send()
    wait_for(lambda: named(events, "message_deferred") or runs)
    assert runs == ([1] if policy == "allow" else [])
    assert [e["component"] for e in named(events, "backend_error")] == ["SlidingWindowLimiter"]
    deferred = named(events, "message_deferred")
    assert [e["reason"] for e in deferred] == ([] if policy == "allow" else ["backend_unavailable"])


def test_actors_without_limits_never_touch_the_backend(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend, events: list[dr.Event]
) -> None:
    """No rate_* option and no default: the limiter does nothing, even with the backend down."""
    install(stub_broker, stub_backend)
    stub_backend.unavailable = True
    runs: list[int] = []

    @dramatiq.actor(max_retries=0)
    def job() -> None:
        runs.append(1)

    job.send()
    drain(stub_broker, stub_worker)
    assert runs == [1]
    assert named(events, "backend_error") == []
