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
import redis.exceptions
from dramatiq import Message, Worker
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import NoBackoff
from redis.retry import Retry

import dramatiq_resilience as dr
from dramatiq_resilience.backends.dead_letters import DeadLetterEntry
from dramatiq_resilience.dead_letters import requeue as requeue_module
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


#: A `dramatiq-resilience dlq ...` process that waits at a barrier before it runs: it says it is
#: ready (RPUSH), then blocks until the test lets every process go at once (BLPOP).
BARRIER_DRIVER = """
import sys, redis
import dramatiq.brokers.redis, dramatiq_resilience.cli.dlq
from dramatiq_resilience.cli import main
client = redis.Redis.from_url(sys.argv[1])
client.rpush(sys.argv[2] + ":ready", 1)
if not client.blpop([sys.argv[2] + ":go"], timeout=60):
    sys.exit("never released from the barrier")
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_two_processes_bulk_requeueing_the_same_records_enqueue_each_once(
    backend: dr.RedisBackend, redis_url: str, namespace: str
) -> None:
    """Two `dlq requeue --all` processes at once on 10 000 records: both requeue; each message once."""
    store = dr.DeadLetterStore(backend)
    for start in range(0, 10_000, 1_000):
        store.add_many([rec(n) for n in range(start, start + 1_000)])
    barrier = f"{namespace}:barrier"
    command = [
        sys.executable,
        "-c",
        BARRIER_DRIVER,
        redis_url,
        barrier,
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
    client = backend.client
    try:
        wait_for(lambda: client.llen(f"{barrier}:ready") == 2, timeout=60)
        client.rpush(f"{barrier}:go", 1, 1)
        results = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in results]
    reports = [json.loads(out) for out, _ in results]
    counts = [len(report["requeued"]) for report in reports]
    assert min(counts) > 0, counts
    assert sum(counts) == 10_000
    assert set(reports[0]["requeued"]).isdisjoint(reports[1]["requeued"])
    assert [report["unconfirmed"] for report in reports] == [{}, {}]
    queue = f"{namespace}-b:payments"
    pushed = [rid.decode() for rid in client.lrange(queue, 0, -1)]
    messages = [Message.decode(data) for data in client.hvals(f"{queue}.msgs")]
    assert (len(pushed), len(set(pushed)), len(messages)) == (10_000, 10_000, 10_000)
    assert sorted(m.message_id for m in messages) == [f"m{n:05d}" for n in range(10_000)]
    assert {m.options["redis_message_id"] for m in messages} == set(pushed)
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


class Hooks(dramatiq.Middleware):
    """Records every before_enqueue and after_enqueue."""

    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.before.append(message.message_id)

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.after.append(message.message_id)


def lose_replies(
    client: Any, monkeypatch: pytest.MonkeyPatch, *, ran: bool, times: int = 1
) -> list[tuple[Any, ...]]:
    """Lose the replies of the next `times` enqueue-script runs (after they ran if `ran`); return args."""
    real = client._send_command_parse_response
    sha = requeue_module._enqueue_script(client).sha
    lost: list[tuple[Any, ...]] = []

    def send(conn: Any, command_name: str, *args: Any, **options: Any) -> Any:
        if args[:2] == ("EVALSHA", sha) and len(lost) < times:
            lost.append(args[1:])
            if ran:
                real(conn, command_name, *args, **options)
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return real(conn, command_name, *args, **options)

    monkeypatch.setattr(client, "_send_command_parse_response", send)
    return lost


def queued_ids(broker: RedisBroker, queue_name: str = "payments") -> list[str]:
    """The message ids on a RedisBroker queue, in order (one per push)."""
    queue = f"{broker.namespace}:{queue_name}"
    client = broker.client
    return [
        Message.decode(client.hget(f"{queue}.msgs", rid)).message_id for rid in client.lrange(queue, 0, -1)
    ]


IDS = ["m00000", "m00001", "m00002"]


def test_a_lost_enqueue_reply_resent_by_redis_py_enqueues_the_batch_once(
    redis_broker: RedisBroker, backend: dr.RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py sends the batch again after its reply was lost: the fence makes the second run a no-op."""
    redis_broker.client.set_retry(Retry(NoBackoff(), 1))
    hooks = Hooks()
    redis_broker.add_middleware(hooks)
    store = dr.DeadLetterStore(backend)
    store.add_many([rec(n) for n in range(3)])
    lost = lose_replies(redis_broker.client, monkeypatch, ran=True)
    report = store.requeue(broker=redis_broker, filter={})
    assert len(lost) == 1
    assert (report.requeued, report.failed, report.unconfirmed) == (IDS, {}, {})
    assert queued_ids(redis_broker) == IDS
    assert (hooks.before, hooks.after) == (IDS, IDS)
    assert (store.stats().requeued, store.stats().claimed) == (3, 0)


def test_a_lost_enqueue_reply_is_settled_by_the_fence_as_enqueued(
    redis_broker: RedisBroker, backend: dr.RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch ran but its reply was lost: the fence says done; it is finished, each message queued once."""
    hooks = Hooks()
    redis_broker.add_middleware(hooks)
    store = dr.DeadLetterStore(backend)
    store.add_many([rec(n) for n in range(3)])
    lose_replies(redis_broker.client, monkeypatch, ran=True)
    report = store.requeue(broker=redis_broker, filter={})
    assert (report.requeued, report.failed, report.unconfirmed) == (IDS, {}, {})
    assert queued_ids(redis_broker) == IDS
    assert hooks.after == IDS
    stats = store.stats()
    assert (stats.dead, stats.claimed, stats.requeued) == (0, 0, 3)
    assert store.requeue(broker=redis_broker, filter={}).requeued == []
    assert queued_ids(redis_broker) == IDS


def test_an_enqueue_that_never_ran_is_fenced_off_and_released(
    redis_broker: RedisBroker, backend: dr.RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request was lost before it ran: it is fenced off for good, the records are dead again."""
    hooks = Hooks()
    redis_broker.add_middleware(hooks)
    store = dr.DeadLetterStore(backend)
    store.add_many([rec(n) for n in range(3)])
    lost = lose_replies(redis_broker.client, monkeypatch, ran=False)
    report = store.requeue(broker=redis_broker, filter={})
    timeout = "TimeoutError: Timeout reading from socket"
    assert (report.requeued, report.unconfirmed) == ([], {})
    assert report.failed == {record_id: timeout for record_id in IDS}
    assert (hooks.before, hooks.after) == (IDS, [])
    stats = store.stats()
    assert (stats.dead, stats.claimed) == (3, 0)
    [args] = lost
    assert redis_broker.client.evalsha(*args) == b"fenced"
    assert queued_ids(redis_broker) == []
    assert store.requeue(broker=redis_broker, filter={}).requeued == IDS
    assert queued_ids(redis_broker) == IDS


def test_an_enqueue_that_cannot_be_settled_stays_claimed_and_unconfirmed(
    redis_broker: RedisBroker, backend: dr.RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reply lost, broker unreachable through the backoff: nothing released, all claimed and unconfirmed."""
    store = dr.DeadLetterStore(backend)
    store.add_many([rec(n) for n in range(3)])
    lose_replies(redis_broker.client, monkeypatch, ran=False)

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise redis.exceptions.ConnectionError("Connection refused")

    slept: list[float] = []
    monkeypatch.setattr(redis_broker.client, "set", unreachable)
    monkeypatch.setattr(requeue_module.time, "sleep", slept.append)
    report = store.requeue(broker=redis_broker, filter={})
    why = "the enqueue failed midway (TimeoutError: Timeout reading from socket): it may have been enqueued"
    assert report.unconfirmed == {record_id: why for record_id in IDS}
    assert (report.requeued, report.failed) == ([], {})
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    stats = store.stats()
    assert (stats.dead, stats.claimed, stats.requeued) == (0, 3, 0)


class ResetAfterEnqueue(RedisBroker):
    """A RedisBroker whose connection drops after the message was enqueued (not the fenced path)."""

    def enqueue(self, message: Any, *, delay: Any = None) -> Any:
        super().enqueue(message, delay=delay)
        raise redis.exceptions.ConnectionError("Connection reset by peer")


def test_an_ambiguous_error_from_another_broker_keeps_the_claim(
    backend: dr.RedisBackend, redis_url: str, namespace: str
) -> None:
    """A connection error after another broker may have enqueued: the claim is kept, unconfirmed; it stops."""
    broker = ResetAfterEnqueue(url=redis_url, namespace=f"{namespace}-b")
    try:
        store = dr.DeadLetterStore(backend)
        store.add_many([rec(n) for n in range(3)])
        report = store.requeue(IDS, broker=broker)
        why = (
            "the enqueue failed midway (ConnectionError: Connection reset by peer): it may have been enqueued"
        )
        assert report.unconfirmed == {"m00000": why}
        assert report.skipped == {"m00001": "not_attempted", "m00002": "not_attempted"}
        assert queued_ids(broker) == ["m00000"]
        stats = store.stats()
        assert (stats.dead, stats.claimed) == (2, 1)
    finally:
        broker.close()


def test_a_finish_that_fails_after_a_redis_enqueue_is_retried_and_enqueues_once(
    redis_broker: RedisBroker, backend: dr.RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On RedisBroker too: a finish whose reply is lost is retried (idempotent); nothing is released."""
    store = dr.DeadLetterStore(backend)
    store.add_many([rec(n) for n in range(3)])
    real = backend.dead_letters_finish
    calls: list[int] = []

    def flaky(items: Any, token: str) -> list[str]:
        calls.append(len(items))
        done = real(items, token)
        if len(calls) == 1:
            raise dr.BackendUnavailable("Redis is unavailable: Timeout reading from socket")
        return done

    slept: list[float] = []
    monkeypatch.setattr(backend, "dead_letters_finish", flaky)
    monkeypatch.setattr(requeue_module.time, "sleep", slept.append)
    report = store.requeue(broker=redis_broker, filter={})
    assert (report.requeued, report.unconfirmed, calls, slept) == (IDS, {}, [3, 3], [0.05])
    assert queued_ids(redis_broker) == IDS
    stats = store.stats()
    assert (stats.dead, stats.claimed, stats.requeued) == (0, 0, 3)


def test_redis_xq_import_replaces_an_unreadable_record_with_the_brokers_copy(
    redis_broker: RedisBroker, backend: dr.RedisBackend
) -> None:
    """A corrupt record and its message in the Redis XQ: the record becomes the copy, the XQ is emptied."""
    store = dr.DeadLetterStore(backend)
    backend.dead_letters_write(
        [DeadLetterEntry("m00007", b"\xc1corrupt", 1, "charge", "payments", "KeyError", "transient")],
        replace=True,
    )
    message = Message(
        queue_name="payments",
        actor_name="charge",
        args=(7,),
        kwargs={},
        options={"retries": 1, "redis_message_id": "r-7"},
        message_id="m00007",
        message_timestamp=1,
    )
    xq = f"{redis_broker.namespace}:payments.XQ"
    redis_broker.client.zadd(xq, {"r-7": 1_000})
    redis_broker.client.hset(f"{xq}.msgs", "r-7", message.encode())
    item = store.import_from(redis_broker, queues=["payments"]).queues["payments"]
    assert (item.before, item.imported, item.replaced_unreadable, item.already_stored, item.after) == (
        1,
        1,
        1,
        0,
        0,
    )
    assert redis_broker.client.hlen(f"{xq}.msgs") == 0
    record = store.get("m00007")
    assert record is not None
    assert (record.args, record.attempts, record.category, record.status) == ((7,), 2, "imported", "dead")


def test_a_rate_limited_requeue_on_redis_is_fenced_a_tenth_of_a_second_at_a_time(
    redis_broker: RedisBroker, backend: dr.RedisBackend
) -> None:
    """With a rate of 20/s, messages go 2 at a time (100 ms worth) behind one fence each; every hook
    runs and each is queued once."""
    hooks = Hooks()
    redis_broker.add_middleware(hooks)
    store = dr.DeadLetterStore(backend)
    store.add_many([rec(n) for n in range(3)])
    report = store.requeue(broker=redis_broker, filter={}, rate=20)
    assert (report.requeued, report.failed, report.unconfirmed) == (IDS, {}, {})
    assert (queued_ids(redis_broker), hooks.before, hooks.after) == (IDS, IDS, IDS)
    fences = sorted(redis_broker.client.scan_iter(match=f"{redis_broker.namespace}:__dlq_requeue__.*"))
    assert [fence.decode().rsplit(".", 1)[1] for fence in fences] == ["1", "2"]
    assert {redis_broker.client.get(fence) for fence in fences} == {b"done"}
    assert 0 < redis_broker.client.pttl(fences[0]) <= requeue_module.FENCE_TTL


def test_the_fenced_path_is_only_for_a_plain_redis_broker(redis_url: str) -> None:
    """A subclass that changes enqueue, or an enqueue patched on the instance, is called, not bypassed."""
    from dramatiq.brokers.redis import RedisBroker as Plain

    from dramatiq_resilience.dead_letters.requeue import _fenced

    class Counting(Plain):
        def enqueue(self, message: Any, *, delay: Any = None) -> Any:
            return super().enqueue(message, delay=delay)

    class Renamed(Plain):
        pass

    brokers = [Plain(url=redis_url), Counting(url=redis_url), Renamed(url=redis_url), Plain(url=redis_url)]
    brokers[3].enqueue = lambda message, *, delay=None: message  # type: ignore[method-assign]
    try:
        assert [_fenced(broker) for broker in brokers] == [True, False, True, False]
        assert _fenced(None) is False
    finally:
        for broker in brokers:
            broker.client.close()
