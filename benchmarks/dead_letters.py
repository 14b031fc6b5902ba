"""Dead letters: the middleware's cost on the happy path, and the store's speed.

Rows (issue 6 targets in the verdicts):

* ``dead_letters``: the CLI run with ``RetryGuard`` + ``DeadLetters`` on a no-op
  actor that never fails: DeadLetters must add no Redis round trip.
* ``dlq_writes``: records captured one at a time (one script each, what a
  worker does on a final failure), with a realistic traceback: >= 2 000/s.
* ``dlq_list``: the first page (50) of a 100 000-record store, newest first,
  unfiltered and filtered by actor and by error type: < 100 ms.
* ``dlq_requeue``: a bulk requeue by filter into a RedisBroker queue: >= 5 000/s.

``msgs_per_s`` is records written per second, records listed per second
(first pages), and messages requeued per second respectively.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from dramatiq.brokers.redis import RedisBroker

from dramatiq_resilience import DeadLetterStore, RedisBackend
from dramatiq_resilience.dead_letters.record import ChainLink, DeadLetterRecord

from .bare import cli_row
from .runner import Context, row

#: The issue's targets.
WRITES_PER_S = 2_000
FIRST_PAGE_MS = 100
REQUEUE_PER_S = 5_000

_TRACEBACK = "".join(
    f'  File "/app/payments/gateway.py", line {100 + n}, in call_{n}\n'
    "    response = session.post(url, json=body)\n"
    for n in range(12)
)


def record(n: int, *, actors: int = 10, at: int | None = None) -> DeadLetterRecord:
    """A realistic record: a few arguments, options, a 12-frame traceback and a cause."""
    now = at if at is not None else int(time.time() * 1000)
    message_id = str(uuid.uuid4())
    return DeadLetterRecord(
        record_id=message_id,
        message_id=message_id,
        queue_name="payments",
        actor_name=f"charge{n % actors}",
        args=(f"order-{n}", "acme", 1999),
        kwargs={"currency": "EUR"},
        options={"retries": 5, "max_retries": 5, "dead_letter_first_failure_at": now - 60_000},
        message_timestamp=now - 120_000,
        category="transient",
        error_type=f"actors.gateway.Gateway{'Timeout' if n % 3 else 'Unavailable'}",
        error_message=f"gateway timed out charging order-{n}",
        traceback="Traceback (most recent call last):\n" + _TRACEBACK + "GatewayTimeout: gateway timed out\n",
        chain=(ChainLink("cause", "TimeoutError", "read timed out", _TRACEBACK[:400]),),
        attempts=6,
        first_failure_at=now - 60_000,
        last_failure_at=now,
        host="worker-1",
        pid=4242,
        version="0.1.0",
    )


def _store(context: Context, name: str) -> DeadLetterStore:
    return DeadLetterStore(
        RedisBackend(url=context.server.url, namespace=f"bench-{name}-{uuid.uuid4().hex[:6]}")
    )


def _fill(store: DeadLetterStore, count: int, *, actors: int = 10) -> None:
    base = int(time.time() * 1000) - count
    for start in range(0, count, 1_000):
        store.add_many(
            [record(n, actors=actors, at=base + n) for n in range(start, min(count, start + 1_000))]
        )


@row("dead_letters")
def dead_letters(context: Context) -> dict[str, Any]:
    """RetryGuard + DeadLetters through the CLI run: no round trip added on success."""
    result = cli_row(context, "dead_letters")
    guard = context.results.get("guard")
    bare = context.results["bare"]
    baseline = (guard or bare)["redis_commands_per_msg"]
    extra = round(result["redis_commands_per_msg"] - baseline, 3)
    result["extra_round_trips_per_msg"] = extra
    result["verdict"] = (
        f"pass: {extra} round trips per message added on success"
        if extra < 0.05
        else f"FAIL: {extra} round trips per message added on success (target 0)"
    )
    return result


@row("dlq_writes")
def dlq_writes(context: Context) -> dict[str, Any]:
    """Single-record captures, one Lua script each, from one thread."""
    store = _store(context, "writes")
    count = 1_000 if context.quick else 5_000
    records = [record(n) for n in range(count)]
    store.add(records[0])  # load the script
    started = time.perf_counter()
    for item in records[1:]:
        store.add(item)
    rate = (count - 1) / (time.perf_counter() - started)
    store.backend.client.flushdb()  # type: ignore[attr-defined]
    return {
        "msgs_per_s": round(rate, 1),
        "records": count,
        "verdict": f"{'pass' if rate >= WRITES_PER_S else 'FAIL'}: {rate:.0f} record writes/s "
        f"(target >= {WRITES_PER_S})",
    }


@row("dlq_list")
def dlq_list(context: Context) -> dict[str, Any]:
    """First page (50 records) of a 100 000-record store, three ways; the median of 20 tries each."""
    store = _store(context, "list")
    total = 20_000 if context.quick else 100_000
    _fill(store, total)
    timings: dict[str, float] = {}
    for name, flt in (
        ("all", None),
        ("by_actor", {"actor": "charge3"}),
        ("by_error_type", {"error_type": "GatewayUnavailable"}),
    ):
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            page = store.list(flt, limit=50)
            samples.append((time.perf_counter() - started) * 1000)
            assert len(page) == 50
        timings[name] = round(statistics.median(samples), 2)
    worst = max(timings.values())
    store.backend.client.flushdb()  # type: ignore[attr-defined]
    return {
        "msgs_per_s": round(50 / (timings["all"] / 1000), 1),
        "records": total,
        **{f"first_page_ms_{name}": value for name, value in timings.items()},
        "verdict": f"{'pass' if worst < FIRST_PAGE_MS else 'FAIL'}: first page in {worst} ms at worst "
        f"with {total} records (target < {FIRST_PAGE_MS} ms)",
    }


@row("dlq_requeue")
def dlq_requeue(context: Context) -> dict[str, Any]:
    """Requeue by filter (one actor of two) into a RedisBroker queue.

    Batches of 500: listed and claimed (the next while this one is enqueued),
    enqueued in one fenced script run with every enqueue hook, finished.
    Checked after: every message on the queue once, every record requeued.
    """
    store = _store(context, "requeue")
    count = 4_000 if context.quick else 20_000
    _fill(store, count * 2, actors=2)
    broker = RedisBroker(url=context.server.url, namespace=f"bench-requeue-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    report = store.requeue(broker=broker, filter={"actor": "charge0"})
    elapsed = time.perf_counter() - started
    rate = report.count / elapsed
    pushed = broker.client.lrange(f"{broker.namespace}:payments", 0, -1)
    queued = len(set(pushed))
    stats = store.stats()
    broker.close()
    store.backend.client.flushdb()  # type: ignore[attr-defined]
    once = len(pushed) == queued == count == report.count == stats.requeued and stats.claimed == 0
    ok = rate >= REQUEUE_PER_S and once
    return {
        "msgs_per_s": round(rate, 1),
        "requeued": report.count,
        "queued": queued,
        "verdict": f"{'pass' if ok else 'FAIL'}: {rate:.0f} messages requeued/s, {queued} of {count} "
        f"on the queue (target >= {REQUEUE_PER_S}/s, each once)",
    }
