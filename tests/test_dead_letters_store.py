"""DeadLetterStore: listing, stats, requeue, purge, export, retention and redrive, exact values."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import msgpack
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.backends.dead_letters import DeadLetterEntry
from dramatiq_resilience.dead_letters import requeue as requeue_module
from dramatiq_resilience.dead_letters.record import DeadLetterRecord

from .dead_letter_records import T0, TIMEOUT, rec


@pytest.fixture(params=["stub", "redis"])
def backend(request: pytest.FixtureRequest, clock: dr.FakeClock) -> Iterator[dr.StateBackend]:
    if request.param == "stub":
        yield dr.StubBackend(clock=clock)
        return
    backend = request.getfixturevalue("redis_backend")
    yield backend


@pytest.fixture
def store(backend: dr.StateBackend) -> dr.DeadLetterStore:
    return dr.DeadLetterStore(backend)


@pytest.fixture
def broker(stub_broker: StubBroker) -> StubBroker:
    stub_broker.declare_queue("default")
    stub_broker.declare_queue("payments")
    return stub_broker


def fill(store: dr.DeadLetterStore, records: list[DeadLetterRecord]) -> None:
    store.add_many(records, replace=True)


def queued(broker: StubBroker, queue: str = "payments") -> list[Message[Any]]:
    return [Message.decode(data) for data in list(broker.queues[queue].queue)]


# -- listing ---------------------------------------------------------------------------


def test_pages_cover_every_record_once_newest_first(store: dr.DeadLetterStore) -> None:
    """25 records in pages of 10: 10, 10, 5, newest first; the last page has no cursor."""
    fill(store, [rec(n) for n in range(25)])
    seen: list[str] = []
    cursor = None
    sizes = []
    while True:
        page = store.list(limit=10, cursor=cursor)
        sizes.append(len(page))
        seen += [item.record_id for item in page]
        cursor = page.cursor
        if cursor is None:
            break
    assert sizes == [10, 10, 5]
    assert seen == [f"m{n:05d}" for n in reversed(range(25))]
    assert [i.record_id for i in store.list(limit=3, newest_first=False)] == ["m00000", "m00001", "m00002"]


def test_filters_match_short_error_names_classes_and_time(store: dr.DeadLetterStore) -> None:
    """error_type "GatewayTimeout" matches its full name; classes work; since/until bound failure time."""
    fill(store, [rec(0), rec(1, error="KeyError"), rec(2, error="other.GatewayTimeout", actor="refund")])
    assert [i.record_id for i in store.list({"error_type": "GatewayTimeout"})] == ["m00002", "m00000"]
    assert [i.record_id for i in store.list({"error_type": KeyError})] == ["m00001"]
    assert [i.record_id for i in store.list(dr.DeadLetterFilter(error_type=TIMEOUT, actor="charge"))] == [
        "m00000"
    ]
    assert [i.record_id for i in store.list({"since": T0 - 99_999, "until": T0 - 99_998})] == ["m00001"]


def test_bad_filters_and_cursors_are_configuration_errors(store: dr.DeadLetterStore) -> None:
    """Unknown fields, categories, statuses and cursors name what was wrong."""
    with pytest.raises(dr.ConfigurationError, match="unknown filter field"):
        store.list({"colour": "red"})
    with pytest.raises(dr.ConfigurationError, match="Option 'category': must be one of transient"):
        store.list({"category": "bad"})
    with pytest.raises(dr.ConfigurationError, match="Option 'status'"):
        store.list({"status": "gone"})
    with pytest.raises(dr.ConfigurationError, match="not a cursor"):
        store.list(cursor="nonsense")


def test_unreadable_record_is_listed_with_its_id_and_never_crashes(
    store: dr.DeadLetterStore, backend: dr.StateBackend, broker: StubBroker
) -> None:
    """A corrupt stored record: listed as unreadable, get raises CorruptRecord, export/requeue/purge go on."""
    fill(store, [rec(1), rec(3)])
    backend.dead_letters_write(
        [DeadLetterEntry("bad", b"\xc1not msgpack", T0 - 99_998, "charge", "payments", TIMEOUT, "transient")],
        replace=True,
    )
    items = store.list().items
    assert [(i.record_id, i.readable) for i in items] == [("m00003", True), ("bad", False), ("m00001", True)]
    bad = items[1]
    assert isinstance(bad, dr.UnreadableRecord)
    assert (bad.actor_name, bad.error_type, bad.status, bad.last_failure_at) == (
        "charge",
        TIMEOUT,
        "dead",
        T0 - 99_998,
    )
    assert "Dead-letter record 'bad' is unreadable" in bad.problem
    with pytest.raises(dr.CorruptRecord) as raised:
        store.get("bad")
    assert raised.value.key == "bad"
    out = io.StringIO()
    assert store.export(out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["record_id"], line["readable"]) for line in lines] == [
        ("m00001", True),
        ("bad", False),
        ("m00003", True),
    ]
    report = store.requeue(["bad", "m00001"], broker=broker)
    assert (report.requeued, report.skipped) == (["m00001"], {"bad": "unreadable"})
    assert store.stats().dead == 2
    assert store.purge(["bad"]).removed == ["bad"]
    assert [i.record_id for i in store.list()] == ["m00003"]


def test_stats_count_by_facet_with_bounds_and_growth(store: dr.DeadLetterStore, clock: dr.FakeClock) -> None:
    """Counts by category, actor, queue, error type; oldest/newest; growth per minute over the window."""
    now = clock.now_ms()
    fill(
        store,
        [
            rec(0, at=now - 3_600_000),
            rec(1, at=now - 50_000, category="permanent", actor="refund"),
            rec(2, at=now - 10_000, error="KeyError"),
        ],
    )
    stats = store.stats(window=120_000)
    assert (stats.dead, stats.requeued, stats.claimed, stats.total) == (3, 0, 0, 3)
    assert stats.by_category == {"transient": 2, "permanent": 1}
    assert stats.by_actor == {"charge": 2, "refund": 1}
    assert stats.by_queue == {"payments": 3}
    assert stats.by_error_type == {TIMEOUT: 2, "KeyError": 1}
    assert (stats.oldest_at, stats.newest_at, stats.now) == (now - 3_600_000, now - 10_000, now)
    assert (stats.recent, stats.window_ms, stats.growth_per_minute) == (2, 120_000, 1.0)


# -- requeue ---------------------------------------------------------------------------


def test_requeue_enqueues_once_with_reset_retries_and_history(
    store: dr.DeadLetterStore, broker: StubBroker, clock: dr.FakeClock
) -> None:
    """The requeued message keeps its id, loses retries and delivery options, carries its redrive."""
    fill(store, [rec(1)])
    requeued: list[dr.Event] = []
    dr.subscribe("dead_letter_requeued", requeued.append)
    report = store.requeue(["m00001"], broker=broker)
    again = store.requeue(["m00001", "nope"], broker=broker)
    dr.unsubscribe("dead_letter_requeued", requeued.append)
    assert (report.requeued, report.skipped, report.failed) == (["m00001"], {}, {})
    assert (again.requeued, again.skipped) == ([], {"m00001": "not_dead", "nope": "not_found"})
    [message] = queued(broker)
    assert (message.message_id, message.actor_name, message.args, message.kwargs) == (
        "m00001",
        "charge",
        (1,),
        {"tenant": "acme"},
    )
    assert message.message_timestamp == clock.now_ms()
    assert message.options == {
        "max_retries": 2,
        "dead_letter_redrives": [
            {
                "at": clock.now_ms(),
                "record_id": "m00001",
                "queue_name": "payments",
                "reason": "manual",
                "host": message.options["dead_letter_redrives"][0]["host"],
            }
        ],
    }
    record = store.get("m00001")
    assert record is not None and record.status == "requeued"
    assert [(r.record_id, r.reason, r.at) for r in record.redrives] == [("m00001", "manual", clock.now_ms())]
    assert [(e["record_id"], e["queue_name"], e["reason"], e["redrives"]) for e in requeued] == [
        ("m00001", "payments", "manual", 1)
    ]
    stats = store.stats()
    assert (stats.dead, stats.requeued) == (0, 1)


def test_requeue_by_filter_to_another_queue_with_a_limit(
    store: dr.DeadLetterStore, broker: StubBroker
) -> None:
    """A filter selects dead records oldest first; queue= redirects them; limit stops after N."""
    fill(store, [rec(n, actor="charge" if n % 2 else "refund") for n in range(6)])
    report = store.requeue(broker=broker, filter={"actor": "charge"}, queue="default", limit=2)
    assert report.requeued == ["m00001", "m00003"]
    assert report.queue_names == {"m00001": "default", "m00003": "default"}
    assert [m.message_id for m in queued(broker, "default")] == ["m00001", "m00003"]
    assert queued(broker) == []


@pytest.mark.parametrize("batch", [4, 500])
def test_a_limit_is_made_up_from_the_next_candidates_when_some_are_skipped(
    store: dr.DeadLetterStore, broker: StubBroker, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """limit=10 over 20 records of which the first 3 are redacted: exactly 10 requeued, in order, with
    batches smaller or larger than the limit."""
    fill(store, [rec(n, redacted=("kwargs.card",) if n < 3 else ()) for n in range(20)])
    monkeypatch.setattr(requeue_module, "BATCH", batch)
    report = store.requeue(broker=broker, filter={}, limit=10)
    assert report.requeued == [f"m{n:05d}" for n in range(3, 13)]
    assert report.skipped == {"m00000": "redacted", "m00001": "redacted", "m00002": "redacted"}
    assert len(queued(broker)) == 10
    stats = store.stats()
    assert (stats.dead, stats.claimed, stats.requeued) == (10, 0, 10)


def test_redrive_with_a_limit_requeues_that_many(
    backend: dr.StateBackend, broker: StubBroker, clock: dr.FakeClock
) -> None:
    """redrive_due(limit=5) over 8 due records, 2 of them redacted: exactly 5 requeued."""
    policy = dr.RedrivePolicy(match={}, delay=0, name="all")
    store = dr.DeadLetterStore(backend, redrive=[policy])
    fill(store, [rec(n, redacted=("kwargs.card",) if n in (0, 2) else ()) for n in range(8)])
    report = store.redrive_due(broker, limit=5)
    assert report.policies["all"].requeued == ["m00001", "m00003", "m00004", "m00005", "m00006"]
    assert len(queued(broker)) == 5


def test_a_store_failing_after_the_claim_releases_what_was_claimed(
    store: dr.DeadLetterStore, backend: dr.StateBackend, broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time cannot be read after a batch was claimed: its records go back to dead at once."""
    fill(store, [rec(n) for n in range(3)])
    monkeypatch.setattr(requeue_module, "RETRY_DELAYS_MS", (1,))

    def down() -> int:
        raise dr.BackendUnavailable("Redis is unavailable: down")

    monkeypatch.setattr(store, "now", down)
    with pytest.raises(dr.BackendUnavailable):
        store.requeue(broker=broker, filter={})
    monkeypatch.undo()
    assert queued(broker) == []
    stats = store.stats()
    assert (stats.dead, stats.claimed) == (3, 0)


def test_dry_run_changes_nothing(store: dr.DeadLetterStore, broker: StubBroker) -> None:
    """dry_run reports what would be requeued and enqueues nothing."""
    fill(store, [rec(1), rec(2, redacted=("kwargs.card",))])
    report = store.requeue(broker=broker, filter={}, dry_run=True)
    assert (report.dry_run, report.requeued, report.skipped) == (True, ["m00001"], {"m00002": "redacted"})
    assert queued(broker) == []
    assert store.stats().dead == 2


def test_redacted_records_are_requeued_only_when_allowed(
    store: dr.DeadLetterStore, broker: StubBroker
) -> None:
    """A record with redacted values is skipped (the actor would get "[redacted]") unless allowed."""
    fill(store, [rec(1, redacted=("kwargs.card",))])
    assert store.requeue(["m00001"], broker=broker).skipped == {"m00001": "redacted"}
    assert store.get("m00001").status == "dead"  # type: ignore[union-attr]
    assert store.requeue(["m00001"], broker=broker, allow_redacted=True).requeued == ["m00001"]


def test_a_failed_enqueue_releases_the_record_and_stops(
    store: dr.DeadLetterStore, broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker refuses: that record is dead again, the rest are not attempted, nothing is lost."""
    fill(store, [rec(n) for n in range(4)])
    real = broker.enqueue
    calls = []

    def enqueue(message: Any, *, delay: Any = None) -> Any:
        calls.append(message.message_id)
        if len(calls) == 2:
            raise ConnectionError("broker down")
        return real(message, delay=delay)

    monkeypatch.setattr(broker, "enqueue", enqueue)
    report = store.requeue(["m00000", "m00001", "m00002", "m00003"], broker=broker)
    assert report.requeued == ["m00000"]
    assert report.failed == {"m00001": "ConnectionError: broker down"}
    assert report.skipped == {"m00002": "not_attempted", "m00003": "not_attempted"}
    assert [i.record_id for i in store.list()] == ["m00003", "m00002", "m00001"]
    assert store.stats().claimed == 0


def test_rate_limit_paces_the_enqueues(
    store: dr.DeadLetterStore, broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rate=100 msgs/s: the pacer sleeps so the 5th message goes no earlier than 40 ms after the first."""
    fill(store, [rec(n) for n in range(5)])
    now = [0.0]
    slept: list[float] = []
    monkeypatch.setattr(requeue_module.time, "monotonic", lambda: now[0])

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr(requeue_module.time, "sleep", sleep)
    assert store.requeue(broker=broker, filter={}, rate=100).count == 5
    assert slept == [0.01, 0.01, 0.01, 0.01]
    with pytest.raises(dr.ConfigurationError, match="Option 'rate'"):
        store.requeue(broker=broker, filter={}, rate=0)


def test_concurrent_requeues_enqueue_each_record_once(store: dr.DeadLetterStore, broker: StubBroker) -> None:
    """Four threads requeue the same 600 records at once: 600 messages, each id once."""
    fill(store, [rec(n) for n in range(600)])
    reports: list[Any] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        reports.append(store.requeue(broker=broker, filter={}))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [m.message_id for m in queued(broker)]
    assert (len(ids), len(set(ids))) == (600, 600)
    assert sum(report.count for report in reports) == 600


def test_a_finish_whose_reply_is_lost_is_retried_and_each_record_enqueued_once(
    store: dr.DeadLetterStore,
    backend: dr.StateBackend,
    broker: StubBroker,
    clock: dr.FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """finish runs but its reply is lost, then fails once more: retried after 50 and 100 ms, requeued once."""
    fill(store, [rec(n) for n in range(3)])
    real = backend.dead_letters_finish
    calls: list[list[str]] = []

    def flaky(items: Any, token: str) -> list[str]:
        calls.append([record_id for record_id, _ in items])
        if len(calls) == 1:
            real(items, token)
            raise dr.BackendUnavailable("reply lost")
        if len(calls) == 2:
            raise dr.BackendUnavailable("down")
        return real(items, token)

    slept: list[float] = []
    monkeypatch.setattr(backend, "dead_letters_finish", flaky)
    monkeypatch.setattr(requeue_module.time, "sleep", slept.append)
    report = store.requeue(broker=broker, filter={})
    ids = ["m00000", "m00001", "m00002"]
    assert (report.requeued, report.unconfirmed, report.failed, report.skipped) == (ids, {}, {}, {})
    assert (calls, slept) == ([ids, ids, ids], [0.05, 0.1])
    assert [m.message_id for m in queued(broker)] == ids
    assert [len(store.get(i).redrives) for i in ids] == [1, 1, 1]  # type: ignore[union-attr]
    stats = store.stats()
    assert (stats.dead, stats.claimed, stats.requeued) == (0, 0, 3)
    clock.advance(dr.dead_letters.store.DEFAULT_CLAIM_TIMEOUT)
    assert store.trim().released_claims == 0
    assert store.requeue(broker=broker, filter={}).requeued == []
    assert len(queued(broker)) == 3


def test_a_store_that_stays_down_after_the_enqueue_leaves_records_claimed_and_unconfirmed(
    store: dr.DeadLetterStore,
    backend: dr.StateBackend,
    broker: StubBroker,
    clock: dr.FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """finish fails through the backoff: they stay claimed and unconfirmed; the batch ahead is released."""
    fill(store, [rec(n) for n in range(5)])

    def down(items: Any, token: str) -> list[str]:
        raise dr.BackendUnavailable("down")

    slept: list[float] = []
    monkeypatch.setattr(backend, "dead_letters_finish", down)
    monkeypatch.setattr(requeue_module.time, "sleep", slept.append)
    monkeypatch.setattr(requeue_module, "BATCH", 2)
    with caplog.at_level(logging.ERROR, logger="dramatiq_resilience.dead_letters.requeue"):
        report = store.requeue(broker=broker, filter={})
    why = "enqueued, but not marked requeued: the store failed (BackendUnavailable: down)"
    assert report.unconfirmed == {"m00000": why, "m00001": why}
    assert (report.requeued, report.failed) == ([], {})
    assert report.skipped == {"m00002": "not_attempted", "m00003": "not_attempted"}
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    assert [m.message_id for m in queued(broker)] == ["m00000", "m00001"]
    stats = store.stats()
    assert (stats.dead, stats.claimed, stats.requeued) == (3, 2, 0)
    [line] = [r.getMessage() for r in caplog.records if "unconfirmed" in r.getMessage()]
    assert line.startswith("Requeue (manual) stopped: 0 requeued, 2 skipped, 0 failed, and 2 unconfirmed: ")
    clock.advance(dr.dead_letters.store.DEFAULT_CLAIM_TIMEOUT)
    assert store.trim().released_claims == 2


def test_a_claim_whose_reply_is_lost_is_retried_by_the_same_token(
    store: dr.DeadLetterStore, backend: dr.StateBackend, broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """claim runs but its reply is lost: the retry gets the records back, each enqueued once."""
    fill(store, [rec(n) for n in range(2)])
    real = backend.dead_letters_claim
    calls: list[str] = []

    def flaky(record_ids: Any, token: str) -> Any:
        calls.append(token)
        claimed = real(record_ids, token)
        if len(calls) == 1:
            raise dr.BackendUnavailable("reply lost")
        return claimed

    slept: list[float] = []
    monkeypatch.setattr(backend, "dead_letters_claim", flaky)
    monkeypatch.setattr(requeue_module.time, "sleep", slept.append)
    report = store.requeue(["m00000", "m00001"], broker=broker)
    assert (report.requeued, report.skipped, slept) == (["m00000", "m00001"], {}, [0.05])
    assert calls[0] == calls[1]
    assert [m.message_id for m in queued(broker)] == ["m00000", "m00001"]


def test_a_batch_claimed_ahead_is_released_when_the_requeue_fails(
    store: dr.DeadLetterStore, backend: dr.StateBackend, broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in one batch: the next batch, already claimed ahead, goes back to dead."""
    fill(store, [rec(n) for n in range(5)])

    def broken(items: Any, token: str) -> list[str]:
        raise RuntimeError("bug")

    monkeypatch.setattr(backend, "dead_letters_finish", broken)
    monkeypatch.setattr(requeue_module, "BATCH", 2)
    with pytest.raises(RuntimeError, match="bug"):
        store.requeue(broker=broker, filter={})
    assert [m.message_id for m in queued(broker)] == ["m00000", "m00001"]
    stats = store.stats()
    assert (stats.dead, stats.claimed) == (3, 2)
    assert [i.record_id for i in store.list(newest_first=False)] == ["m00002", "m00003", "m00004"]


def test_a_refused_enqueue_on_the_stub_broker_is_certain_and_released(
    store: dr.DeadLetterStore, broker: StubBroker
) -> None:
    """A before_enqueue refusal enqueued nothing: the record is failed and dead again, not unconfirmed."""

    class Refuse(dramatiq.Middleware):
        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            raise dramatiq.middleware.MiddlewareError("refused")

    fill(store, [rec(1)])
    broker.add_middleware(Refuse())
    report = store.requeue(["m00001"], broker=broker)
    assert (report.failed, report.unconfirmed, report.requeued) == (
        {"m00001": "MiddlewareError: refused"},
        {},
        [],
    )
    assert queued(broker) == []
    assert (store.stats().dead, store.stats().claimed) == (1, 0)


def test_requeue_needs_ids_or_a_filter_and_a_canonical_queue(
    store: dr.DeadLetterStore, broker: StubBroker
) -> None:
    """Both or neither of ids and filter, or a .DQ queue, is a configuration error."""
    with pytest.raises(dr.ConfigurationError, match="give record ids or a filter"):
        store.requeue(broker=broker)
    with pytest.raises(dr.ConfigurationError, match="canonical queue name"):
        store.requeue(["a"], broker=broker, queue="payments.DQ")


# -- purge, export ---------------------------------------------------------------------


def test_purge_by_ids_and_filter_with_dry_run(store: dr.DeadLetterStore, backend: dr.StateBackend) -> None:
    """Purge removes what it is told, skips claimed records, and a dry run removes nothing."""
    fill(store, [rec(n, category="permanent" if n < 3 else "transient") for n in range(6)])
    backend.dead_letters_claim(["m00005"], "busy")
    purged: list[dr.Event] = []
    dr.subscribe("dead_letters_purged", purged.append)
    dry = store.purge(filter={"category": "permanent"}, dry_run=True)
    assert (dry.removed, store.stats().dead) == (["m00000", "m00001", "m00002"], 5)
    assert store.purge(filter={"category": "permanent"}).removed == ["m00000", "m00001", "m00002"]
    report = store.purge(["m00003", "m00005", "nope"])
    dr.unsubscribe("dead_letters_purged", purged.append)
    assert (report.removed, report.skipped) == (["m00003"], {"m00005": "claimed", "nope": "not_found"})
    assert [e["count"] for e in purged] == [3, 1]
    assert [i.record_id for i in store.list()] == ["m00004"]
    with pytest.raises(dr.ConfigurationError):
        store.purge()


def test_export_writes_json_lines_oldest_first(store: dr.DeadLetterStore) -> None:
    """Each line is one record's fields; a filter selects them."""
    fill(store, [rec(1), rec(2, actor="refund"), rec(3)])
    out = io.StringIO()
    assert store.export(out, {"actor": "charge"}) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["record_id"], line["actor_name"], line["args"], line["status"]) for line in lines] == [
        ("m00001", "charge", [1], "dead"),
        ("m00003", "charge", [3], "dead"),
    ]


# -- retention -------------------------------------------------------------------------


def test_trim_removes_by_age_and_count_and_says_so(
    backend: dr.StateBackend, clock: dr.FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention reports what it removed in its return value, a log line and an event."""
    store = dr.DeadLetterStore(backend, max_age=86_400_000, max_count=3)
    now = clock.now_ms()
    fill(
        store,
        [rec(0, at=now - 2 * 86_400_000), rec(1, at=now - 90_000_000, category="permanent")]
        + [rec(n, at=now - 1_000 + n, actor="refund") for n in range(2, 7)],
    )
    trimmed: list[dr.Event] = []
    dr.subscribe("dead_letters_trimmed", trimmed.append)
    with caplog.at_level(logging.INFO, logger="dramatiq_resilience.dead_letters.store"):
        report = store.trim()
    dr.unsubscribe("dead_letters_trimmed", trimmed.append)
    assert (report.by_age, report.by_count, report.removed) == (2, 2, 4)
    assert report.by_category == {"transient": 3, "permanent": 1}
    assert report.by_actor == {"charge": 2, "refund": 2}
    assert report.removed_ids == ["m00000", "m00001", "m00002", "m00003"]
    assert [i.record_id for i in store.list()] == ["m00006", "m00005", "m00004"]
    [line] = [r.getMessage() for r in caplog.records if "retention removed" in r.getMessage()]
    assert line.startswith(
        "Dead-letter retention removed 4 records (2 older than 86400000 milliseconds, "
        "2 beyond the 3-record limit)"
    )
    [event] = trimmed
    assert (event["removed"], event["by_age"], event["by_count"]) == (4, 2, 2)
    assert store.trim().removed == 0


def test_removed_records_are_not_revived_by_import(store: dr.DeadLetterStore) -> None:
    """An import (insert) of a purged, trimmed or requeued id is skipped."""
    fill(store, [rec(1)])
    store.purge(["m00001"])
    assert store.add(rec(1, category="imported"), replace=False) is False
    assert store.get("m00001") is None


# -- redrive ---------------------------------------------------------------------------


def test_redrive_requeues_matching_records_once_they_are_due(
    backend: dr.StateBackend, broker: StubBroker, clock: dr.FakeClock
) -> None:
    """A policy requeues matching records failed at least delay ms ago, within max_redrives."""
    policy = dr.RedrivePolicy(
        match={"error_type": "GatewayTimeout"}, delay=60_000, max_redrives=2, name="timeouts"
    )
    store = dr.DeadLetterStore(backend, redrive=[policy])
    now = clock.now_ms()
    history = tuple(
        dr.dead_letters.Redrive(
            at=now - 1, record_id=f"old{k}", queue_name="payments", reason="policy:timeouts"
        )
        for k in range(2)
    )
    fill(
        store,
        [
            rec(1, at=now - 60_000),
            rec(2, at=now - 59_999),
            rec(3, at=now - 70_000, error="KeyError"),
            rec(4, at=now - 80_000, redrives=history),
        ],
    )
    report = store.redrive_due(broker)
    assert report.requeued == 1
    assert report.policies["timeouts"].requeued == ["m00001"]
    assert report.policies["timeouts"].skipped == {"m00004": "max_redrives"}
    assert store.get("m00001").redrives[0].reason == "policy:timeouts"  # type: ignore[union-attr]
    clock.advance(1)
    assert store.redrive_due(broker).policies["timeouts"].requeued == ["m00002"]
    assert [m.message_id for m in queued(broker)] == ["m00001", "m00002"]


def test_redrive_policy_checks_its_arguments() -> None:
    """A policy must select dead records, with a delay >= 0 ms and max_redrives >= 0."""
    with pytest.raises(dr.ConfigurationError, match="only dead records"):
        dr.RedrivePolicy(match={"status": "requeued"})
    with pytest.raises(dr.ConfigurationError, match="Option 'delay'"):
        dr.RedrivePolicy(match={}, delay=-1)
    with pytest.raises(dr.ConfigurationError, match="Option 'max_redrives'"):
        dr.RedrivePolicy(match={}, max_redrives=-1)
    assert (
        dr.RedrivePolicy(match={"category": "transient", "actor": ["a", "b"]}).name
        == "actor=a,b category=transient"
    )


# -- import ----------------------------------------------------------------------------


def dead_message(n: int) -> Message[Any]:
    """Message m<n> as Dramatiq leaves it in the broker's dead-letter queue."""
    return Message(
        queue_name="payments",
        actor_name="charge",
        args=(n,),
        kwargs={},
        options={"retries": 2},
        message_id=f"m{n:05d}",
        message_timestamp=T0,
    )


def test_import_replaces_unreadable_records_with_the_brokers_copy_and_keeps_readable_ones(
    store: dr.DeadLetterStore, backend: dr.StateBackend, broker: StubBroker
) -> None:
    """Import replaces corrupt and data-less records with the broker's copies and keeps readable ones."""
    newer = msgpack.packb({"v": 2, "record_id": "m00003"})
    backend.dead_letters_write(
        [
            DeadLetterEntry("m00001", b"\xc1corrupt", T0, "charge", "payments", TIMEOUT, "transient"),
            DeadLetterEntry("m00003", newer, T0, "charge", "payments", TIMEOUT, "transient"),
        ],
        replace=True,
    )
    fill(store, [rec(2), rec(4)])
    if isinstance(backend, dr.RedisBackend):
        backend.client.hdel(f"{backend.namespace}:dead_letters:{{dlq}}:rec", "m00004")
    else:
        backend.data["dead_letters"].rec.pop("m00004")
    broker.dead_letters_by_queue["payments"].extend(dead_message(n) for n in range(1, 6))
    report = store.import_from(broker)
    item = report.queues["payments"]
    assert (item.before, item.imported, item.replaced_unreadable, item.already_stored, item.after) == (
        5,
        3,
        2,
        2,
        0,
    )
    items = {i.record_id: i for i in store.iterate()}
    assert [(i.record_id, i.readable, i.category) for _, i in sorted(items.items())] == [
        ("m00001", True, "imported"),
        ("m00002", True, "transient"),
        ("m00003", False, "transient"),
        ("m00004", True, "imported"),
        ("m00005", True, "imported"),
    ]
    repaired = [items["m00001"], items["m00004"]]
    assert [(r.args, r.attempts, r.status) for r in repaired if isinstance(r, DeadLetterRecord)] == [
        ((1,), 3, "dead"),
        ((4,), 3, "dead"),
    ]
    [stored] = backend.dead_letters_get(["m00003"])
    assert stored is not None and stored.payload == newer
    assert store.stats().dead == 5
