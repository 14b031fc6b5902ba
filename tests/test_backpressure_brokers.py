"""Backpressure on real brokers: depth readers for Redis and RabbitMQ, and the acceptance scenario on both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.queue_depth import RabbitmqDepthReader, RedisDepthReader, depth_reader

from .test_backpressure import wait_until


@pytest.fixture
def started() -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        worker.stop()


def three_ready_two_delayed(queue_name: str) -> None:
    """Declare a job on ``queue_name`` and send it 3 messages, then 2 delayed by a minute."""

    @dramatiq.actor(queue_name=queue_name)
    def job(n: int) -> None: ...

    for n in range(5):
        job.send_with_options(args=(n,), delay=60_000 if n >= 3 else None)


def test_redis_depth_is_the_queue_list_plus_the_delay_queue_messages(redis_broker: RedisBroker) -> None:
    """LLEN of the queue plus HLEN of its .DQ.msgs, in one pipelined round trip; a missing queue is 0."""
    three_ready_two_delayed("work")
    reader = depth_reader(redis_broker)
    assert isinstance(reader, RedisDepthReader)
    readings = reader.read(["work", "missing"])
    assert [(d.queue_name, d.ready, d.delayed, d.depth) for d in readings.values()] == [
        ("work", 3, 2, 5),
        ("missing", 0, 0, 0),
    ]
    assert reader.queues() == ["work"]


@pytest.mark.parametrize("broker_fixture", ["stub_broker", "redis_broker"])
def test_health_and_backpressure_count_a_queue_alike(
    broker_fixture: str, request: pytest.FixtureRequest, started: list[Worker]
) -> None:
    """The health scorer's depths and backpressure's agree, delayed messages a worker holds included."""
    from dramatiq_resilience.observability.depth import queue_depths

    broker = request.getfixturevalue(broker_fixture)
    three_ready_two_delayed("work")

    @dramatiq.actor(queue_name="later")
    def later() -> None: ...

    for _ in range(2):
        later.send_with_options(delay=60_000)
    worker = Worker(broker, worker_threads=1, worker_timeout=50, queues={"later"})
    started.append(worker)
    worker.start()  # fetches the delayed messages of "later" and holds them until their eta

    def fetched() -> bool:
        if broker_fixture == "stub_broker":
            return bool(broker.queues["later.DQ"].qsize() == 0)
        return bool(broker.client.llen(f"{broker.namespace}:later.DQ") == 0)

    wait_until(fetched)
    health = queue_depths(broker)
    readings = dr.read_queue_depths(broker, ["work", "later"])
    assert {name: (d.ready, d.delayed) for name, d in health.items()} == {"work": (3, 2), "later": (0, 2)}
    assert {name: (d.ready, d.delayed) for name, d in readings.items()} == {"work": (3, 2), "later": (0, 2)}


def test_redis_queues_are_found_in_redis_without_declaring_them(
    redis_broker: RedisBroker, redis_url: str
) -> None:
    """A fresh RedisBroker (the CLI's) finds queues with messages by SCAN, without .DQ and .XQ names."""

    @dramatiq.actor(queue_name="emails")
    def email() -> None: ...

    email.send_with_options(delay=60_000)
    fresh = RedisBroker(url=redis_url, namespace=redis_broker.namespace)
    try:
        assert depth_reader(fresh).queues() == ["emails"]
        assert dr.read_queue_depths(fresh)["emails"].delayed == 1
    finally:
        fresh.client.close()


def test_rabbitmq_depth_is_the_ready_count_of_the_queue_and_its_delay_queue(
    rabbitmq_broker: Any, queue_name: str
) -> None:
    """Passive queue_declare counts on a connection of its own; a missing queue is 0 and reading goes on."""
    three_ready_two_delayed(queue_name)
    reader = depth_reader(rabbitmq_broker)
    assert isinstance(reader, RabbitmqDepthReader)
    try:
        wait_until(lambda: reader.read([queue_name])[queue_name].depth == 5)
        missing = f"{queue_name}-missing"
        readings = reader.read([missing, queue_name])
        assert [(d.queue_name, d.ready, d.delayed) for d in readings.values()] == [
            (missing, 0, 0),
            (queue_name, 3, 2),
        ]
        reader._link.value.connection.close()  # the server dropped it (missed heartbeats): reconnect
        assert reader.read([queue_name])[queue_name].depth == 5
    finally:
        reader.close()
    assert reader._link.value.connection is None


@pytest.mark.parametrize("broker_fixture", ["redis_broker", "rabbitmq_broker"])
def test_emergency_refuses_sends_while_a_retry_is_enqueued_until_workers_drain_it(
    request: pytest.FixtureRequest, broker_fixture: str, started: list[Worker], clock: dr.FakeClock
) -> None:
    """Acceptance on a real broker: past emergency send raises, a retry passes; drained, sends pass."""
    broker = request.getfixturevalue(broker_fixture)
    queue = request.getfixturevalue("queue_name")
    stack = dr.install(
        broker,
        backend=dr.StubBackend(clock=clock),
        scheduling=False,
        breaker=False,
        dedup=False,
        limiter=False,
        dead_letters=False,
        backpressure={
            "thresholds": {queue: dr.Thresholds(warning=2, critical=4, emergency=6)},
            "clock": clock,
        },
    )
    attempts: list[int] = []

    @dramatiq.actor(queue_name=queue, max_retries=3, min_backoff=10, max_backoff=10)
    def job(n: int) -> None:
        attempts.append(n)
        if attempts.count(0) == 1 and n == 0:
            raise RuntimeError("the first attempt of message 0 fails")

    for n in range(6):
        job.send_with_options(args=(n,), backpressure_exempt=True)
    wait_until(lambda: stack.backpressure.status([queue])[0].depth.depth == 6)
    with pytest.raises(dr.QueueOverloaded) as info:
        job.send(99)
    assert (info.value.queue_name, info.value.depth, info.value.threshold) == (queue, 6, 6)

    worker = Worker(broker, worker_timeout=50, worker_threads=2)
    started.append(worker)
    worker.start()
    wait_until(lambda: len(attempts) == 7, timeout=30)  # message 0's retry went through the delay queue
    assert sorted(attempts) == [0, 0, 1, 2, 3, 4, 5]
    with pytest.raises(dr.QueueOverloaded):
        job.send(98)  # the cached reading still says emergency: only the retry passed

    clock.advance(1_000)
    job.send(7)
    wait_until(lambda: len(attempts) == 8, timeout=30)
    assert sorted(attempts) == [0, 0, 1, 2, 3, 4, 5, 7]
    assert stack.backpressure.level(queue) == "normal"


def test_the_benchmark_sees_no_depth_read_while_the_cache_is_warm(redis_url: str, redis_server: Any) -> None:
    """The benchmark's send run: with a warm cache a send costs bare's one EVALSHA, nothing more."""
    from benchmarks.backpressure import send_run

    ours = send_run(redis_server, backpressure=True, count=200, monitor=True, cache_ms=60_000)
    bare = send_run(redis_server, backpressure=False, count=200, monitor=True)
    assert ours.by_command == bare.by_command == {"EVALSHA": 200}
