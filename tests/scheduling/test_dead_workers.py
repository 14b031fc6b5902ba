"""Dead-worker recovery judged on the backend's clock, and scans that a dead worker cannot block for long."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.scheduling import occurrence_message_id
from dramatiq_resilience.scheduling.dead_workers import broker_identity, recover_dead_workers
from dramatiq_resilience.scheduling.scans import SCAN_QUEUE, scan_actor_name, scan_jobs

from .conftest import Sent, named

T0 = 1_767_225_600_000  # the FakeClock's start: a multiple of every scan interval used here
HOUR = 3_600_000


def other_worker(broker: RedisBroker) -> RedisBroker:
    """Another worker on the same Redis and namespace (its own broker id)."""
    return RedisBroker(
        client=broker.client, namespace=broker.namespace, heartbeat_timeout=broker.heartbeat_timeout
    )


def holding(broker: RedisBroker, queue: str, count: int) -> RedisBroker:
    """Another worker that fetched ``count`` messages of ``queue`` and acks none of them."""
    worker = other_worker(broker)
    worker.do_fetch(queue, count)
    return worker


class FakeSleep:
    """A ``sleep`` for the scan that moves the fake clock and records what it was asked."""

    def __init__(self, clock: dr.FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(round(seconds * 1000))


@pytest.fixture
def sleep(clock: dr.FakeClock) -> FakeSleep:
    return FakeSleep(clock)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for the in-process worker's threads (no clock to move there)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def declare_work(broker: RedisBroker, count: int) -> Any:
    @dramatiq.actor(max_retries=0)
    def work(n: int) -> None: ...

    for n in range(count):
        work.send(n)
    # The sender is done: its heartbeat would be one more (dead) worker in the reports.
    broker.client.zrem(f"{broker.namespace}:__heartbeats__", broker.broker_id)
    return work


def test_a_live_worker_whose_clock_trails_by_an_hour_is_never_recovered(
    redis_broker: RedisBroker, redis_backend: dr.RedisBackend, clock: dr.FakeClock, sleep: FakeSleep
) -> None:
    """Scores an hour behind the backend's clock, but changing between scans: alive, scan after scan."""
    redis_broker.heartbeat_timeout = 10_000
    declare_work(redis_broker, 2)
    worker = holding(redis_broker, "default", 2)
    heartbeats = f"{redis_broker.namespace}:__heartbeats__"
    reports = []
    for scan in range(12):  # a minute of scans, 5 s apart
        redis_broker.client.zadd(heartbeats, {worker.broker_id: T0 - HOUR + scan * 5_000})  # it polls
        assert redis_broker.client.zscore(heartbeats, worker.broker_id) <= clock.now_ms() - 10_000
        report = recover_dead_workers(redis_broker, redis_backend, sleep=sleep)
        reports.append((report.dead_workers, report.requeued))
        clock.advance(5_000)
    assert (reports, sleep.calls) == ([([], {})] * 12, [])
    assert redis_broker.client.scard(f"{redis_broker.namespace}:__acks__.{worker.broker_id}.default") == 2
    assert redis_broker.client.llen(f"{redis_broker.namespace}:default") == 0


def test_a_dead_worker_whose_clock_runs_a_day_ahead_is_recovered_after_the_timeout(
    redis_broker: RedisBroker,
    redis_backend: dr.RedisBackend,
    clock: dr.FakeClock,
    sleep: FakeSleep,
    captured: list[dr.Event],
) -> None:
    """Scores a day ahead that stop changing: recovered once unchanged for heartbeat_timeout, not before."""
    redis_broker.heartbeat_timeout = 10_000
    declare_work(redis_broker, 3)
    worker = holding(redis_broker, "default", 3)
    heartbeats = f"{redis_broker.namespace}:__heartbeats__"
    reports = []
    for scan, at in enumerate([0, 5_000, 10_000, 15_000, 18_999, 19_400]):
        clock.set(T0 + at)
        if scan < 3:  # it polls until it is killed, after the third scan
            redis_broker.client.zadd(heartbeats, {worker.broker_id: T0 + 24 * HOUR + scan * 5_000})
        report = recover_dead_workers(redis_broker, redis_backend, sleep=sleep)
        reports.append((at, clock.now_ms() - T0, report.dead_workers, report.requeued))
    assert reports == [
        (0, 0, [], {}),
        (5_000, 5_000, [], {}),
        (10_000, 10_000, [], {}),  # its final score, first seen
        (15_000, 15_000, [], {}),
        (18_999, 18_999, [], {}),  # 1 001 ms to go: left to the next scan
        (19_400, 20_000, [worker.broker_id], {"default": 3}),  # 600 ms to go: waited for, then recovered
    ]
    assert sleep.calls == [0.6]
    assert redis_broker.client.llen(f"{redis_broker.namespace}:default") == 3
    assert redis_broker.client.zscore(heartbeats, worker.broker_id) is None
    recovered = [
        (e["worker_id"], e["queue_name"], e["messages"]) for e in named(captured, "dead_worker_recovered")
    ]
    assert recovered == [(worker.broker_id, "default", 3)]


def test_tracking_of_workers_gone_from_the_heartbeats_is_deleted(
    redis_broker: RedisBroker, redis_backend: dr.RedisBackend, clock: dr.FakeClock, sleep: FakeSleep
) -> None:
    """Workers recovered by the scan or removed by Dramatiq's maintenance leave no tracking entry behind."""
    redis_broker.heartbeat_timeout = 10_000
    declare_work(redis_broker, 1)
    recovered = holding(redis_broker, "default", 1)
    removed = other_worker(redis_broker)
    removed.do_fetch("default", 1)  # nothing left to fetch: only its heartbeat
    tracking = redis_backend.key("broker_heartbeats", broker_identity(redis_broker))
    assert recover_dead_workers(redis_broker, redis_backend, sleep=sleep).dead_workers == []
    assert sorted(redis_backend.client.hkeys(tracking)) == sorted(
        w.broker_id.encode() for w in (recovered, removed)
    )
    redis_broker.client.zrem(f"{redis_broker.namespace}:__heartbeats__", removed.broker_id)  # maintenance
    clock.advance(10_000)
    assert recover_dead_workers(redis_broker, redis_backend, sleep=sleep).dead_workers == [
        recovered.broker_id
    ]
    assert redis_backend.client.hkeys(tracking) == [recovered.broker_id.encode()]
    assert recover_dead_workers(redis_broker, redis_backend, sleep=sleep).dead_workers == []
    assert redis_backend.client.exists(tracking) == 0


def test_scan_leases_are_one_and_a_half_intervals(
    redis_broker: RedisBroker, stub_backend: dr.StubBackend
) -> None:
    """A scan's run blocks the next tick only (from its send, and again from its start), not 2 minutes."""
    dr.install(redis_broker, backend=stub_backend, scheduling={"run_scheduler": False})
    jobs = scan_jobs(redis_broker, names=["dead_workers", "stalled"], every={"dead_workers": 5_000})
    assert {job.name: (job.overlap, job.overlap_lease) for job in jobs} == {
        "scan:dead_workers": ("skip", 7_500),
        "scan:stalled": ("skip", 90_000),
    }
    message = jobs[0].message(occurrence_message_id("scan:dead_workers", T0), occurrence_ms=T0)
    assert message.options["cron_lease"] == 7_500  # renewed by this much when a worker starts it


def test_a_dead_worker_holding_the_dead_worker_scan_blocks_it_for_one_tick_only(
    redis_broker: RedisBroker, redis_backend: dr.RedisBackend, clock: dr.FakeClock, captured: list[dr.Event]
) -> None:
    """A worker dying with scan:dead_workers and 3 messages is recovered 2 intervals + timeout later."""
    redis_broker.heartbeat_timeout = 10_000
    dr.install(
        redis_broker,
        backend=redis_backend,
        scheduling={"run_scheduler": False, "scans": ["dead_workers"], "scan_every": {"dead_workers": 5_000}},
    )
    sent = Sent()
    redis_broker.add_middleware(sent)
    done: list[int] = []

    @dramatiq.actor(max_retries=0)
    def work(n: int) -> None:
        done.append(n)

    for n in range(3):
        work.send(n)
    scheduler = dr.Scheduler(redis_broker, clock=clock).start(timer=False)
    clock.advance(5_000)
    scheduler.tick()  # T0 + 5 s: the first scan is sent...
    dead = holding(redis_broker, "default", 3)
    dead.do_fetch(SCAN_QUEUE, 1)  # ...and taken by a worker that dies, its clock a day ahead
    redis_broker.client.zadd(f"{redis_broker.namespace}:__heartbeats__", {dead.broker_id: T0 + 24 * HOUR})
    worker = dramatiq.Worker(redis_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        for runs in range(4):  # T0 + 10 s: skipped (the lost run is pending); then one run every tick
            clock.advance(5_000)
            scheduler.tick()
            wait_until(lambda runs=runs: len(named(captured, "cron_finished")) >= runs)
        # T0 + 25 s: the dead worker's score, first seen at T0 + 15 s, is unchanged for 10 s: its
        # messages go back, the lost scan run included (it runs last, finding nothing to do).
        wait_until(lambda: len(done) == 3 and len(named(captured, "cron_finished")) == 4)
    finally:
        worker.stop()
    assert sent.occurrences(scan_actor_name("dead_workers")) == [
        T0 + 5_000,
        T0 + 15_000,
        T0 + 20_000,
        T0 + 25_000,
    ]
    assert [(e["occurrence_ms"], e["reason"]) for e in named(captured, "cron_skipped")] == [
        (T0 + 10_000, "overlap")
    ]
    assert [e["counts"] for e in named(captured, "scan_completed")] == [
        {"dead_workers": 0, "requeued": 0},
        {"dead_workers": 0, "requeued": 0},
        {"dead_workers": 1, "requeued": 4},
        {"dead_workers": 0, "requeued": 0},
    ]
    assert sorted(done) == [0, 1, 2]
    assert [(e["queue_name"], e["messages"]) for e in named(captured, "dead_worker_recovered")] == [
        ("default", 3),
        (SCAN_QUEUE, 1),
    ]


def test_brokers_of_one_namespace_on_two_servers_are_tracked_apart() -> None:
    """The tracking key names the broker's Redis server and database, not only its namespace."""
    from dramatiq.brokers.redis import RedisBroker

    one = RedisBroker(url="redis://10.0.0.1:6379/0", namespace="dramatiq")
    other = RedisBroker(url="redis://10.0.0.2:6380/3", namespace="dramatiq")
    assert (broker_identity(one), broker_identity(other)) == (
        "10.0.0.1:6379/0/dramatiq",
        "10.0.0.2:6380/3/dramatiq",
    )
