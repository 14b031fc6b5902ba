"""Dead letters on real brokers: RedisBroker and RabbitmqBroker capture, requeue and XQ import.

The acceptance items of issue 6: one record with the final traceback, the
chain and attempts == 3 after max_retries=2; import from a Redis XQ and a
RabbitMQ XQ keeps every message (counted before and after); two processes
bulk-requeueing the same 10 000 records enqueue each exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Message, Worker
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.testing.redis_server import free_port

from .dead_letter_records import rec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PaymentFailed(Exception):
    pass


@pytest.fixture
def backend(redis_url: str, namespace: str) -> Iterator[dr.RedisBackend]:
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    yield backend
    backend.close()


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker(request: pytest.FixtureRequest) -> dramatiq.Broker:
    """RedisBroker, then RabbitmqBroker (skipped with a reason when RabbitMQ is absent)."""
    return request.getfixturevalue(f"{request.param}_broker")  # type: ignore[no-any-return]


def xq_depth(broker: Any, queue_name: str) -> int:
    """Messages in the broker's own dead-letter queue for ``queue_name``."""
    if isinstance(broker, RedisBroker):
        return int(broker.client.zcard(f"{broker.namespace}:{queue_name}.XQ"))
    return int(broker.get_queue_message_counts(queue_name)[2])


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def run_and_settle(
    broker: dramatiq.Broker, queue_name: str, work: Callable[[], None], *, threads: int = 2
) -> None:
    """Run ``work`` (which sends messages) with a Worker until the queue and the worker are idle."""
    worker = Worker(broker, worker_timeout=50, worker_threads=threads)
    worker.start()
    try:
        work()
        broker.join(queue_name, timeout=30_000)
        worker.join()
    finally:
        worker.stop()


def test_final_failure_gives_one_record(
    broker: dramatiq.Broker, backend: dr.RedisBackend, queue_name: str
) -> None:
    """max_retries=2: one record with the final traceback, the chain and attempts == 3."""
    stack = dr.install(broker, backend=backend)
    attempts: list[int] = []

    @dramatiq.actor(queue_name=queue_name, max_retries=2, min_backoff=10, max_backoff=20)
    def settle_invoice(invoice: str) -> None:
        attempts.append(1)
        try:
            raise TimeoutError(f"ledger timeout on attempt {len(attempts)}")
        except TimeoutError as exc:
            raise PaymentFailed(f"cannot settle {invoice}") from exc

    sent: list[Message[Any]] = []
    run_and_settle(broker, queue_name, lambda: sent.append(settle_invoice.send("inv-7")))
    store = stack.dead_letters.store
    [record] = store.list().items
    assert isinstance(record, dr.DeadLetterRecord)
    assert (record.record_id, record.attempts, record.category, len(attempts)) == (
        sent[0].message_id,
        3,
        "transient",
        3,
    )
    assert (record.queue_name, record.args) == (queue_name, ("inv-7",))
    assert record.traceback.rstrip().endswith("PaymentFailed: cannot settle inv-7")
    assert "ledger timeout on attempt 3" in record.traceback
    assert [(c.relation, c.error_type, c.error_message) for c in record.chain] == [
        ("cause", "TimeoutError", "ledger timeout on attempt 3")
    ]
    assert record.first_failure_at < record.last_failure_at
    assert store.stats().dead == 1


def test_xq_import_keeps_every_message(
    broker: dramatiq.Broker, backend: dr.RedisBackend, queue_name: str
) -> None:
    """Store down for 3 failures, up for 2: the XQ holds 5 before, 0 after import; the store all 5, once."""
    down = dr.RedisBackend(
        url=f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    middleware = dr.DeadLetters(backend=backend, store=dr.DeadLetterStore(down))
    dr.install(broker, backend=backend, dead_letters=middleware)
    store = dr.DeadLetterStore(backend)

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def refund(n: int) -> None:
        raise PaymentFailed(f"refund {n} failed")

    run_and_settle(broker, queue_name, lambda: [refund.send(n) for n in range(3)])
    middleware.store = store
    run_and_settle(broker, queue_name, lambda: [refund.send(n) for n in range(3, 5)])
    wait_for(lambda: xq_depth(broker, queue_name) == 5)
    assert store.stats().dead == 2

    report = store.import_from(broker, queues=[queue_name])
    item = report.queues[queue_name]
    assert (item.before, item.imported, item.already_stored, item.after) == (5, 3, 2, 0)
    assert xq_depth(broker, queue_name) == 0
    if isinstance(broker, RedisBroker):
        assert broker.client.hlen(f"{broker.namespace}:{queue_name}.XQ.msgs") == 0
    records = list(store.iterate())
    assert sorted(r.args[0] for r in records if isinstance(r, dr.DeadLetterRecord)) == [0, 1, 2, 3, 4]
    assert sorted(r.category for r in records) == ["imported"] * 3 + ["transient"] * 2
    assert store.import_from(broker, queues=[queue_name]).imported == 0
    assert store.stats().dead == 5


def test_requeue_runs_the_message_again(
    broker: dramatiq.Broker, backend: dr.RedisBackend, queue_name: str
) -> None:
    """A permanent failure is requeued once, then succeeds; a second requeue does nothing."""
    stack = dr.install(broker, backend=backend)
    runs: list[str] = []

    @dramatiq.actor(queue_name=queue_name, max_retries=3, throws=(PaymentFailed,))
    def capture(order: str) -> None:
        runs.append(order)
        if len(runs) == 1:
            raise PaymentFailed("card declined")

    sent: list[Message[Any]] = []
    run_and_settle(broker, queue_name, lambda: sent.append(capture.send("o-1")))
    store = stack.dead_letters.store
    record_id = sent[0].message_id
    reports: list[Any] = []

    def requeue_twice() -> None:
        reports.append(store.requeue([record_id], broker=broker))
        reports.append(store.requeue([record_id], broker=broker))

    run_and_settle(broker, queue_name, requeue_twice)
    assert runs == ["o-1", "o-1"]
    assert [r.requeued for r in reports] == [[record_id], []]
    assert reports[1].skipped == {record_id: "not_dead"}
    stats = store.stats()
    assert (stats.dead, stats.requeued) == (0, 1)


@pytest.mark.slow
def test_two_processes_bulk_requeueing_the_same_records_enqueue_each_once(
    backend: dr.RedisBackend, redis_url: str, namespace: str
) -> None:
    """Two `dlq requeue --all` processes at once over 10 000 records: 10 000 messages, each id once."""
    store = dr.DeadLetterStore(backend)
    for start in range(0, 10_000, 1_000):
        store.add_many([rec(n) for n in range(start, start + 1_000)])
    command = [
        sys.executable,
        "-m",
        "dramatiq_resilience.cli",
        "dlq",
        "requeue",
        "--all",
        "--json",
        "--redis",
        redis_url,
        "--namespace",
        namespace,
        "--broker-url",
        redis_url,
        "--broker-namespace",
        f"{namespace}-b",
    ]
    processes = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in results]
    reports = [json.loads(out) for out, _ in results]
    client = backend.client
    messages = [Message.decode(data) for data in client.hvals(f"{namespace}-b:payments.msgs")]
    assert client.llen(f"{namespace}-b:payments") == 10_000
    assert (len(messages), len({m.message_id for m in messages})) == (10_000, 10_000)
    assert sum(len(r["requeued"]) for r in reports) == 10_000
    assert set(reports[0]["requeued"]).isdisjoint(reports[1]["requeued"])
    stats = store.stats()
    assert (stats.dead, stats.claimed, stats.requeued) == (0, 0, 10_000)


class RefuseThird(dramatiq.Middleware):
    """Sees every enqueue; refuses the third requeued message, as an enqueue-side check might."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.after: list[str] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.seen.append((message.message_id, dr.enqueue_origin(message)))
        if len(self.seen) == 3:
            raise dramatiq.middleware.MiddlewareError("refused")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.after.append(message.message_id)


def test_bulk_requeue_on_redis_is_pipelined_with_every_hook(
    redis_broker: RedisBroker, backend: dr.RedisBackend
) -> None:
    """A bulk requeue on RedisBroker sends one batch per round trip, runs each enqueue hook as a
    "redrive", and a refusal stops it: earlier messages enqueued, that one dead again, the rest untouched."""
    hooks = RefuseThird()
    redis_broker.add_middleware(hooks)
    store = dr.DeadLetterStore(backend)
    store.add_many([rec(n) for n in range(5)])
    report = store.requeue(broker=redis_broker, filter={})
    assert report.requeued == ["m00000", "m00001"]
    assert report.failed == {"m00002": "MiddlewareError: refused"}
    assert report.skipped == {"m00003": "not_attempted", "m00004": "not_attempted"}
    assert hooks.seen == [(f"m0000{n}", "redrive") for n in range(3)]
    assert hooks.after == ["m00000", "m00001"]
    queue = f"{redis_broker.namespace}:payments"
    ids = [
        Message.decode(redis_broker.client.hget(f"{queue}.msgs", rid)).message_id
        for rid in redis_broker.client.lrange(queue, 0, -1)
    ]
    assert ids == ["m00000", "m00001"]
    stats = store.stats()
    assert (stats.dead, stats.requeued, stats.claimed) == (3, 2, 0)
