"""Contract: the limiter's window operations, identical on StubBackend and RedisBackend."""

from __future__ import annotations

import math
import random

import pytest
import redis
from redis.crc import key_slot

from dramatiq_resilience import BackendUnavailable, FakeClock, RedisBackend, StateBackend
from dramatiq_resilience.backends.window import (
    HeldLease,
    LeaseSpec,
    LimitDefinition,
    RateSpec,
    WindowDecision,
    WindowUsage,
    bucket_width,
)

T = 1_767_225_600_000  # the FakeClock's start: a multiple of every bucket width used here


def rate(count: int, per: int, *, limit: str = "api", key: str = "acme") -> RateSpec:
    return RateSpec(limit, key, count, per)


def pool(n: int, lease: int = 1_000, *, limit: str = "slots", key: str = "acme") -> LeaseSpec:
    return LeaseSpec(limit, key, n, lease)


def granted(
    backend: StateBackend, *rates: RateSpec, token: str = "m", leases: tuple[LeaseSpec, ...] = ()
) -> bool:
    return backend.window_acquire(token, list(rates), list(leases)).granted


def test_bucket_width_is_a_hundredth_of_the_window() -> None:
    """Windows are cut into 100 buckets; windows up to 100 ms are exact to the millisecond."""
    assert [bucket_width(per) for per in (1, 100, 101, 1_000, 60_000, 3_600_000)] == [
        1,
        1,
        2,
        10,
        600,
        36_000,
    ]


def test_rate_admits_count_starts_then_refuses_until_a_slot_frees(
    backend: StateBackend, clock: FakeClock
) -> None:
    """3 per second: three starts, then a refusal naming the moment the oldest start's bucket leaves."""
    for step in (0, 100, 200):
        clock.set(T + step)
        assert backend.window_acquire("m", [rate(3, 1_000)]).granted
    clock.set(T + 300)
    refused = backend.window_acquire("m4", [rate(3, 1_000)])
    # The start at T sits in bucket [T, T+10); that bucket leaves the window at T+10+999.
    assert (refused.granted, refused.now_ms, refused.retry_at_ms, refused.blocked_by, refused.spacing_ms) == (
        False,
        T + 300,
        T + 1_009,
        0,
        334,
    )
    clock.set(T + 1_008)
    assert not granted(backend, rate(3, 1_000))
    clock.set(T + 1_009)
    assert granted(backend, rate(3, 1_000))
    assert not granted(backend, rate(3, 1_000))


def test_small_windows_are_exact_to_the_millisecond(backend: StateBackend, clock: FakeClock) -> None:
    """2 per 100 ms: a start at T+5 frees its slot at exactly T+105."""
    clock.set(T + 5)
    assert granted(backend, rate(2, 100))
    clock.set(T + 7)
    assert granted(backend, rate(2, 100))
    assert backend.window_acquire("m", [rate(2, 100)]).retry_at_ms == T + 105
    clock.set(T + 104)
    assert not granted(backend, rate(2, 100))
    clock.set(T + 105)
    assert granted(backend, rate(2, 100))


def test_refused_waiters_come_back_on_a_grid_at_the_limits_rate(
    backend: StateBackend, clock: FakeClock
) -> None:
    """The n-th waiter gets the slot-free moment plus (n - 1) * per / count: not all at once."""
    assert granted(backend, rate(2, 1_000))
    assert granted(backend, rate(2, 1_000))
    retries = [backend.window_acquire(f"w{n}", [rate(2, 1_000)]).retry_at_ms for n in range(4)]
    assert retries == [T + 1_009, T + 1_509, T + 2_009, T + 2_509]
    [usage] = backend.window_inspect()
    assert usage.waiting_until_ms == T + 3_009
    # Once the horizon has passed, a refusal starts from the slot-free moment again.
    clock.set(T + 3_100)
    assert granted(backend, rate(2, 1_000))
    assert granted(backend, rate(2, 1_000))
    assert backend.window_acquire("late", [rate(2, 1_000)]).retry_at_ms == T + 4_109


def test_a_start_at_the_boundary_never_makes_more_than_count_in_a_window(
    backend: StateBackend, clock: FakeClock
) -> None:
    """One start at T, then hammering from T+900 to T+1100: 99 before T+1009, one more after, no more."""
    clock.set(T)
    assert granted(backend, rate(100, 1_000))
    starts = [T]
    for step in range(900, 1_101):
        clock.set(T + step)
        for _ in range(3):
            if granted(backend, rate(100, 1_000)):
                starts.append(T + step)
    assert len(starts) == 101
    assert starts[99] == T + 932  # 3 attempts a millisecond: the 99 free starts go by T+932
    assert starts[100] == T + 1_009
    assert max(sum(1 for s in starts if first <= s < first + 1_000) for first in starts) == 100


class ReferenceWindow:
    """The admission rule written plainly, to check the backends' incremental bookkeeping."""

    def __init__(self, count: int, per: int) -> None:
        self.count, self.per, self.width = count, per, bucket_width(per)
        self.starts: list[int] = []
        self.horizon: float | None = None

    def acquire(self, now: int) -> tuple[bool, int | None]:
        cut = (now - self.per + 1) // self.width
        live = sorted(s // self.width for s in self.starts if s // self.width >= cut)
        if len(live) < self.count:
            self.starts.append(now)
            return True, None
        bucket = live[len(live) - self.count]
        at = max(self.horizon or 0, (bucket + 1) * self.width + self.per - 1)
        self.horizon = at + self.per / self.count
        return False, math.ceil(at)


@pytest.mark.parametrize(("count", "per"), [(5, 1_000), (7, 250), (3, 60_000)])
def test_rate_decisions_match_the_plain_rule_on_a_random_walk(
    backend: StateBackend, clock: FakeClock, count: int, per: int
) -> None:
    """600 attempts at random moments: every decision and retry moment is the reference's."""
    rng = random.Random(f"{count}/{per}")
    reference = ReferenceWindow(count, per)
    for _ in range(600):
        clock.advance(rng.choice([0, 0, 1, 3, per // 40, per // 7, per // 2, per + 13]))
        decision = backend.window_acquire("m", [rate(count, per)])
        assert (decision.granted, decision.retry_at_ms) == reference.acquire(clock.now_ms())
    starts = reference.starts
    assert max(sum(1 for s in starts if first <= s < first + per) for first in starts) == count


def test_all_limits_are_taken_or_none(backend: StateBackend, clock: FakeClock) -> None:
    """A message refused by its second limit takes nothing from its first."""
    fast, slow = rate(5, 1_000, limit="fast"), rate(1, 60_000, limit="slow")
    assert granted(backend, fast, slow)
    refused = backend.window_acquire("m2", [fast, slow])
    assert (refused.granted, refused.blocked_by, refused.retry_at_ms) == (False, 1, T + 600 + 59_999)
    assert [(u.limit, u.used) for u in backend.window_inspect()] == [("fast", 1), ("slow", 1)]
    leases = (pool(1, limit="one"),)
    assert backend.window_acquire("holder", [], list(leases)).granted
    refused = backend.window_acquire("m3", [fast], list(leases))
    assert (refused.granted, refused.blocked_by) == (False, 1)
    assert [(u.limit, u.used) for u in backend.window_inspect()] == [("fast", 1), ("one", 1), ("slow", 1)]


def test_the_latest_refusing_limit_sets_the_retry_and_only_its_horizon_moves(
    backend: StateBackend, clock: FakeClock
) -> None:
    """Two full limits: the message comes back when both could admit it; the other keeps its line."""
    short, long = rate(1, 1_000, limit="short"), rate(1, 10_000, limit="long")
    assert granted(backend, short, long)
    refused = backend.window_acquire("m", [short, long])
    assert (refused.retry_at_ms, refused.blocked_by, refused.spacing_ms) == (T + 100 + 9_999, 1, 10_000)
    assert backend.window_acquire("m", [short]).retry_at_ms == T + 1_009


def test_keys_and_limits_have_their_own_budgets(backend: StateBackend) -> None:
    """One tenant's full window does not touch another's, nor another limit's."""
    assert granted(backend, rate(1, 1_000, key="acme"))
    assert not granted(backend, rate(1, 1_000, key="acme"))
    assert granted(backend, rate(1, 1_000, key="globex"))
    assert granted(backend, rate(1, 1_000, key="acme", limit="other"))
    assert granted(backend, rate(1, 1_000, key="a:b{c}*"))
    assert not granted(backend, rate(1, 1_000, key="a:b{c}*"))


def test_a_new_count_keeps_the_windows_starts(backend: StateBackend, clock: FakeClock) -> None:
    """Changing `count` keeps the starts: 1 per second is full, 2 per second has one slot left."""
    assert granted(backend, rate(1, 1_000))
    assert not granted(backend, rate(1, 1_000))
    assert granted(backend, rate(2, 1_000))
    assert not granted(backend, rate(2, 1_000))
    [usage] = backend.window_inspect()
    assert (usage.used, usage.capacity, usage.window_ms) == (2, 2, 1_000)


def test_two_definitions_of_one_limit_keep_their_own_windows_and_cannot_reset_each_other(
    backend: StateBackend, clock: FakeClock
) -> None:
    """Processes alternating 2 per 1 s and 2 per 2 s (a rolling deploy) admit 2 each, 4 in all, not 20."""
    old, new = rate(2, 1_000), rate(2, 2_000)
    admitted = [granted(backend, spec) for _ in range(10) for spec in (old, new)]
    assert admitted.count(True) == 4
    assert [(u.used, u.capacity, u.window_ms) for u in backend.window_inspect()] == [
        (2, 2, 1_000),
        (2, 2, 2_000),
    ]
    # Each window frees on its own definition's time.
    clock.advance(1_009)
    assert (granted(backend, new), granted(backend, old), granted(backend, old)) == (False, True, True)


def test_processes_that_disagree_on_a_limit_see_each_others_definitions_until_they_expire(
    backend: StateBackend, clock: FakeClock
) -> None:
    """window_announce returns the other live definitions of the same kind and limit, sorted."""
    old = LimitDefinition("rate", "stripe-api", "100 per 60000 ms")
    new = LimitDefinition("rate", "stripe-api", "50 per 60000 ms")
    pool_named_alike = LimitDefinition("concurrency", "stripe-api", "2 at once (lease 30000 ms)")
    other = LimitDefinition("rate", "other", "1 per 1000 ms")
    assert backend.window_announce([old, other], 180_000) == [[], []]
    clock.advance(1_000)
    assert backend.window_announce([new, pool_named_alike], 180_000) == [["100 per 60000 ms"], []]
    assert backend.window_announce([old], 180_000) == [["50 per 60000 ms"]]
    assert backend.window_announce([], 180_000) == []
    # The new definition stops being announced: 180 s later nobody disagrees any more.
    clock.advance(180_000)
    assert backend.window_announce([old, other], 180_000) == [[], []]


def test_concurrency_admits_n_holders_and_refuses_until_a_lease_could_end(
    backend: StateBackend, clock: FakeClock
) -> None:
    """2 slots: two holders; the third waits for the earliest lease or the 1 s default hold."""
    slots = (pool(2, lease=5_000),)
    assert backend.window_acquire("a", [], list(slots)).granted
    clock.advance(100)
    assert backend.window_acquire("b", [], list(slots)).granted
    refused = backend.window_acquire("c", [], list(slots))
    assert (refused.granted, refused.retry_at_ms, refused.blocked_by, refused.spacing_ms) == (
        False,
        T + 100 + 1_000,
        0,
        500,
    )
    assert backend.window_acquire("d", [], list(slots)).retry_at_ms == T + 1_600
    # A redelivered holder keeps its slot (its lease starts again) and takes no second one.
    assert backend.window_acquire("a", [], list(slots)).granted
    [usage] = backend.window_inspect()
    assert (usage.kind, usage.used, usage.capacity, usage.next_free_ms, usage.resets_at_ms) == (
        "concurrency",
        2,
        2,
        T + 5_100,
        T + 5_100,
    )
    assert backend.window_release("a", list(slots), held_ms=100) == 1
    assert backend.window_acquire("c", [], list(slots)).granted


def test_releases_teach_the_hold_time_that_spaces_out_waiters(
    backend: StateBackend, clock: FakeClock
) -> None:
    """After holds of 200 then 400 ms (average 240 ms) a waiter comes back 240 ms later."""
    one = (pool(1, lease=10_000),)
    for token, held in (("a", 200), ("b", 400)):
        assert backend.window_acquire(token, [], list(one)).granted
        assert backend.window_release(token, list(one), held_ms=held) == 1
    assert backend.window_acquire("c", [], list(one)).granted
    refused = backend.window_acquire("d", [], list(one))
    assert (refused.retry_at_ms, refused.spacing_ms) == (T + 240, 240)


def test_an_expired_lease_frees_its_slot_and_cannot_be_released_or_renewed(
    backend: StateBackend, clock: FakeClock
) -> None:
    """A holder that died loses its slot when its lease expires; its late release frees nothing."""
    one = (pool(1, lease=2_000),)
    assert backend.window_acquire("dead", [], list(one)).granted
    clock.advance(1_999)
    assert not backend.window_acquire("next", [], list(one)).granted
    clock.advance(1)
    assert backend.window_acquire("next", [], list(one)).granted
    assert backend.window_release("dead", list(one)) == 0
    assert backend.window_renew([HeldLease("dead", one[0])]) == [False]
    assert backend.window_renew([HeldLease("next", one[0])]) == [True]


def test_renewal_keeps_a_long_running_holder(backend: StateBackend, clock: FakeClock) -> None:
    """A renewed lease outlives its first expiry; the slot stays taken."""
    one = (pool(1, lease=1_000),)
    assert backend.window_acquire("long", [], list(one)).granted
    for _ in range(5):
        clock.advance(600)
        assert backend.window_renew([HeldLease("long", one[0])]) == [True]
    assert not backend.window_acquire("other", [], list(one)).granted
    [usage] = backend.window_inspect()
    assert usage.resets_at_ms == T + 3_000 + 1_000
    assert backend.window_release("long", list(one), held_ms=3_000) == 1
    assert backend.window_acquire("other", [], list(one)).granted


def test_inspect_reports_use_next_free_reset_and_waiters_with_filters(
    backend: StateBackend, clock: FakeClock
) -> None:
    """Per limit and key: use, capacity, window, when a slot frees, when all is free, the waiters' horizon."""
    assert granted(backend, rate(2, 1_000, key="acme"))
    clock.advance(300)
    assert granted(backend, rate(2, 1_000, key="acme"))
    assert granted(backend, rate(2, 1_000, key="globex"))
    assert not granted(backend, rate(2, 1_000, key="acme"))
    assert backend.window_acquire("h", [], [pool(3, lease=4_000)]).granted
    acme, globex = backend.window_inspect(limit="api")
    assert acme == WindowUsage("rate", "api", "acme", 2, 2, 1_000, T + 1_009, T + 1_309, T + 1_509, T + 300)
    assert globex == WindowUsage("rate", "api", "globex", 1, 2, 1_000, None, T + 1_309, None, T + 300)
    assert [(u.limit, u.key) for u in backend.window_inspect(key="acme")] == [
        ("api", "acme"),
        ("slots", "acme"),
    ]
    assert backend.window_inspect(limit="api", key="initech") == []
    assert backend.window_inspect(limit="nope") == []
    # Idle keys (nothing in the window, nobody waiting) are not reported.
    clock.advance(5_000)
    assert backend.window_inspect() == []


def test_every_window_operation_raises_backend_unavailable_when_down(down_backend: StateBackend) -> None:
    """Acquire, release, renew, announce and inspect all raise BackendUnavailable when the backend is down."""
    with pytest.raises(BackendUnavailable):
        down_backend.window_acquire("m", [rate(1, 1_000)], [pool(1)])
    with pytest.raises(BackendUnavailable):
        down_backend.window_release("m", [pool(1)], held_ms=5)
    with pytest.raises(BackendUnavailable):
        down_backend.window_renew([HeldLease("m", pool(1))])
    with pytest.raises(BackendUnavailable):
        down_backend.window_announce([LimitDefinition("rate", "api", "1 per 1000 ms")], 1_000)
    with pytest.raises(BackendUnavailable):
        down_backend.window_inspect()


def test_redis_window_keys_share_one_slot_and_expire_when_idle(redis_backend: RedisBackend) -> None:
    """Every limiter key is hash-tagged {limits}; a window (named with its layout) lives per + width ms."""
    decision = redis_backend.window_acquire(
        "m", [rate(5, 1_000), rate(5, 60_000, limit="b")], [pool(2, 7_000)]
    )
    assert decision == WindowDecision(granted=True, now_ms=T)
    assert redis_backend.window_announce([LimitDefinition("rate", "b", "5 per 60000 ms")], 180_000) == [[]]
    client = redis_backend.client
    keys = sorted(k.decode() for k in client.keys(f"{redis_backend.namespace}:*"))
    ns = redis_backend.namespace
    assert keys == [
        f"{ns}:window:{{limits}}:c:slots:acme",
        f"{ns}:window:{{limits}}:d:r:b",
        f"{ns}:window:{{limits}}:m:slots:acme",
        f"{ns}:window:{{limits}}:r:api:acme:1000:10",
        f"{ns}:window:{{limits}}:r:b:acme:60000:600",
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert 1_000 < client.pttl(keys[3]) <= 1_010
    assert 60_000 < client.pttl(keys[4]) <= 60_600
    assert 6_000 < client.pttl(keys[0]) <= 7_000
    assert 13_000 < client.pttl(keys[2]) <= 14_000
    assert 179_000 < client.pttl(keys[1]) <= 180_000


def test_redis_window_memory_peaks_at_101_buckets_and_8_fields(
    redis_backend: RedisBackend, clock: FakeClock
) -> None:
    """One start per 10 ms bucket at 101 per second, each followed by a refusal: at most 109 fields."""
    spec = rate(101, 1_000)
    key = f"{redis_backend.namespace}:window:{{limits}}:r:api:acme:1000:10"
    decisions, sizes = [], []
    for step in range(301):
        clock.set(T + 10 * step)
        decisions.append(granted(redis_backend, spec))
        sizes.append(redis_backend.client.hlen(key))
        if step >= 100:  # the window holds 101 starts from here on: the next one waits
            decisions.append(granted(redis_backend, spec, token="waiter"))
            sizes.append(redis_backend.client.hlen(key))
    assert decisions == [True] * 101 + [False] + [True, False] * 200
    assert (max(sizes), sizes[-1]) == (109, 109)
    fields = sorted(name.decode() for name in redis_backend.client.hkeys(key))
    assert [name for name in fields if not name.isdigit()] == ["c", "e", "n", "o", "p", "q", "t", "w"]
    assert len([name for name in fields if name.isdigit()]) == 101
    assert int(redis_backend.client.memory_usage(key) or 0) < 4_096


def test_redis_window_uses_server_time_without_a_clock(redis_url: str) -> None:
    """Without an injected clock a decision is stamped with Redis TIME."""
    backend = RedisBackend(url=redis_url, namespace="servertime")
    server_ms = backend.now_ms()
    decision = backend.window_acquire("m", [rate(1, 1_000)])
    assert server_ms <= decision.now_ms <= backend.now_ms()
    redis.Redis.from_url(redis_url).flushdb()
