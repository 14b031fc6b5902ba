"""Deduplication on RedisBroker + RedisBackend, in real time: lease renewal, retries, conflicts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.middleware.dedup_renewer import LeaseRenewer


@pytest.fixture
def backend(redis_url: str, namespace: str) -> Iterator[dr.RedisBackend]:
    """A RedisBackend on the server's own clock (leases really run out)."""
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    yield backend
    backend.close()


@pytest.fixture
def seen() -> Iterator[list[dr.Event]]:
    events: list[dr.Event] = []
    dr.subscribe("*", events.append)
    yield events
    dr.unsubscribe("*", events.append)


def run_long_job_with_duplicates(broker: RedisBroker, worker: Worker, job_ms: int) -> tuple[int, int]:
    """Three copies of one key, a 300 ms lease, a job of ``job_ms``: (runs, most at once)."""
    running, most, runs = [0], [0], [0]
    lock = threading.Lock()

    @dramatiq.actor(dedup_key=lambda order_id: order_id, dedup_lease=300, max_retries=0)
    def slow(order_id: str) -> None:
        with lock:
            running[0] += 1
            runs[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(job_ms / 1000)
        with lock:
            running[0] -= 1

    for _ in range(3):
        slow.send("order-1")
    broker.join(slow.queue_name, timeout=30_000)
    worker.join()
    return runs[0], most[0]


def test_job_three_times_longer_than_its_lease_never_runs_twice(
    redis_broker: RedisBroker, redis_worker: Worker, backend: dr.RedisBackend, seen: list[dr.Event]
) -> None:
    """Lease 300 ms, job 1 s: renewal keeps the key; both duplicates wait, then are skipped."""
    dr.install(redis_broker, backend=backend, dedup={"busy_delay": 50})
    runs, most = run_long_job_with_duplicates(redis_broker, redis_worker, job_ms=1_000)
    assert (runs, most) == (1, 1)
    assert sum(e.name == "dedup_skipped" for e in seen) == 2
    assert not any(e.name == "dedup_lease_lost" for e in seen)
    assert sum(e.name == "message_deferred" for e in seen) >= 2
    record = backend.dedup_inspect("order-1")
    assert record is not None
    assert (record.state, record.claims, record.takeovers) == ("completed", 1, 0)


def test_without_renewal_the_same_job_would_run_twice_at_once(
    redis_broker: RedisBroker,
    redis_worker: Worker,
    backend: dr.RedisBackend,
    seen: list[dr.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: with renewals switched off the lease runs out mid-job and a duplicate takes over."""
    monkeypatch.setattr(LeaseRenewer, "add", lambda self, claim: None)
    dr.install(redis_broker, backend=backend, dedup={"busy_delay": 50})
    runs, most = run_long_job_with_duplicates(redis_broker, redis_worker, job_ms=2_000)
    assert runs >= 2
    assert most >= 2
    assert any(e.name == "dedup_claimed" and e["takeover"] for e in seen)


def test_failed_attempt_releases_and_the_retry_succeeds_on_redis(
    redis_broker: RedisBroker, redis_worker: Worker, backend: dr.RedisBackend
) -> None:
    """RedisBroker: the first attempt fails, the retry claims the released key and completes it."""
    dr.install(redis_broker, backend=backend)
    attempts: list[int] = []

    @dramatiq.actor(dedup_key=lambda order_id: order_id, max_retries=3, min_backoff=10, max_backoff=50)
    def charge(order_id: str) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise RuntimeError("gateway timeout")

    message = charge.send("order-1")
    redis_broker.join(charge.queue_name, timeout=20_000)
    redis_worker.join()
    assert attempts == [1, 2]
    record = backend.dedup_inspect("order-1")
    assert record is not None
    assert (record.state, record.owner, record.claims) == ("completed", message.message_id, 2)


def test_payload_conflict_lands_in_the_dead_letter_queue_on_redis(
    redis_broker: RedisBroker, redis_worker: Worker, backend: dr.RedisBackend, seen: list[dr.Event]
) -> None:
    """RedisBroker: the conflicting message is rejected into <queue>.XQ, not run, with a clear error."""
    dr.install(redis_broker, backend=backend)
    runs: list[int] = []

    @dramatiq.actor(dedup_key=lambda order_id, **_: order_id, max_retries=3)
    def charge(order_id: str, amount: int) -> None:
        runs.append(amount)

    first = charge.send("order-1", 5)
    redis_broker.join(charge.queue_name, timeout=20_000)
    second = charge.send("order-1", 9)
    redis_broker.join(charge.queue_name, timeout=20_000)
    redis_worker.join()
    assert runs == [5]
    xq = f"{redis_broker.namespace}:default.XQ"
    [dead_id] = redis_broker.client.zrange(xq, 0, -1)
    dead = dramatiq.Message.decode(redis_broker.client.hget(f"{xq}.msgs", dead_id))
    assert dead.message_id == second.message_id
    [rejected] = [e for e in seen if e.name == "message_rejected"]
    error: Any = rejected["error"]
    assert isinstance(error, dr.IdempotencyConflict)
    assert (error.key, error.existing_message_id) == ("order-1", first.message_id)
    assert "with different arguments" in str(error)


@pytest.mark.rabbitmq
def test_duplicates_on_rabbitmq_wait_then_are_skipped_and_unique_send_refuses(
    rabbitmq_broker: Any,
    rabbitmq_worker: Worker,
    backend: dr.RedisBackend,
    queue_name: str,
    seen: list[dr.Event],
) -> None:
    """RabbitMQ: an in-progress duplicate is deferred then skipped; a unique send is refused."""
    dr.install(rabbitmq_broker, backend=backend, dedup={"busy_delay": 50})
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    @dramatiq.actor(queue_name=queue_name, dedup_key=lambda order_id: order_id, dedup_on_enqueue=True)
    def charge(order_id: str) -> None:
        runs.append(order_id)
        started.set()
        release.wait(10)

    first = charge.send("order-1")
    assert started.wait(10)
    with pytest.raises(dr.DuplicateMessage) as info:
        charge.send("order-1")
    assert (info.value.existing_message_id, info.value.state) == (first.message_id, "in_progress")
    with dr.internal_enqueue("redrive"):  # a re-enqueue passes the unique check: processing dedup waits
        rabbitmq_broker.enqueue(charge.message("order-1"))
    deadline = time.monotonic() + 10
    while not any(e.name == "message_deferred" for e in seen):
        assert time.monotonic() < deadline, "the duplicate was never deferred"
        time.sleep(0.01)
    release.set()
    rabbitmq_broker.join(queue_name, timeout=20_000)
    rabbitmq_worker.join()
    assert runs == ["order-1"]
    assert [e.name for e in seen if e.name in ("dedup_skipped", "dedup_completed")] == [
        "dedup_completed",
        "dedup_skipped",
    ]


def test_commit_reconnects_a_connection_that_died_unseen(
    backend: dr.RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection whose peer vanished without a word (a failover) fails on send: the commit
    reconnects and sends its first round trip again (nothing was watched on the dead connection)."""
    claimed = backend.dedup_claim(
        "order-1", message_id="m1", actor_name="credit", token="t1", lease_ms=60_000, ttl_ms=60_000
    )
    assert claimed.outcome == "claimed"
    pool = backend.client.connection_pool
    real_get = pool.get_connection
    broken = [True]

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        connection = real_get(*args, **kwargs)
        real_send = connection.send_packed_command

        def send(command: Any, *a: Any, **k: Any) -> Any:
            if broken:
                broken.pop()
                raise redis.exceptions.ConnectionError("Connection reset by peer")
            return real_send(command, *a, **k)

        monkeypatch.setattr(connection, "send_packed_command", send)
        return connection

    monkeypatch.setattr(pool, "get_connection", get_connection)
    effect = f"{backend.namespace}:effect:{{order-1}}"
    committed = backend.dedup_commit("order-1", token="t1", ttl_ms=60_000, writes=lambda tx: tx.incr(effect))
    assert (committed, broken) == (True, [])
    monkeypatch.undo()
    assert backend.client.get(effect) == b"1"
    record = backend.dedup_inspect("order-1")
    assert record is not None and record.state == "completed"
