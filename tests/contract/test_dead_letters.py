"""Contract: the dead-letter storage operations, the same on StubBackend and RedisBackend."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from redis.crc import key_slot

from dramatiq_resilience import BackendUnavailable, FakeClock, RedisBackend, StateBackend
from dramatiq_resilience.backends.dead_letters import (
    WRITE_NEW,
    WRITE_REPLACED,
    WRITE_SKIPPED,
    DeadLetterEntry,
    ListChunk,
)

T0 = 1_767_225_600_000


def entry(
    record_id: str,
    at: int = T0,
    *,
    actor: str = "charge",
    queue: str = "payments",
    error: str = "ValueError",
    category: str = "transient",
    payload: bytes | None = None,
) -> DeadLetterEntry:
    return DeadLetterEntry(record_id, payload or record_id.encode(), at, actor, queue, error, category)


def listing(backend: StateBackend, **kwargs: Any) -> ListChunk:
    options: dict[str, Any] = dict(
        status="dead",
        facets={},
        since=None,
        until=None,
        descending=True,
        limit=100,
        cursor=None,
        with_payload=False,
        budget=10_000,
    )
    options.update(kwargs)
    return backend.dead_letters_list(**options)


def ids(chunk: ListChunk) -> list[str]:
    return [item.record_id for item in chunk.entries]


def test_write_stores_new_records_and_get_reads_them(backend: StateBackend) -> None:
    """A written record reads back with its payload, status and facets; unknown ids read None."""
    assert backend.dead_letters_write([entry("a"), entry("b", T0 + 1, actor="refund")], replace=True) == [
        WRITE_NEW,
        WRITE_NEW,
    ]
    a, b, missing = backend.dead_letters_get(["a", "b", "nope"])
    assert missing is None
    assert a is not None and b is not None
    assert (a.record_id, a.status, a.failed_at, a.actor, a.queue, a.error_type, a.category, a.payload) == (
        "a",
        "dead",
        T0,
        "charge",
        "payments",
        "ValueError",
        "transient",
        b"a",
    )
    assert (b.actor, b.failed_at) == ("refund", T0 + 1)


def test_replace_overwrites_and_reindexes_while_insert_skips(backend: StateBackend) -> None:
    """replace overwrites an id (moving its facets); insert leaves an existing id alone."""
    backend.dead_letters_write([entry("a", error="ValueError")], replace=True)
    assert backend.dead_letters_write([entry("a", error="KeyError", payload=b"new")], replace=True) == [
        WRITE_REPLACED
    ]
    assert backend.dead_letters_write([entry("a", payload=b"import")], replace=False) == [WRITE_SKIPPED]
    [stored] = backend.dead_letters_get(["a"])
    assert stored is not None and (stored.payload, stored.error_type) == (b"new", "KeyError")
    assert ids(listing(backend, facets={"error_type": ["ValueError"]})) == []
    assert ids(listing(backend, facets={"error_type": ["KeyError"]})) == ["a"]
    assert backend.dead_letters_stats(window=1).by_facet["error_type"] == {"KeyError": 1}


def test_insert_skips_a_removed_id_but_capture_brings_it_back(backend: StateBackend) -> None:
    """A purged id has a tombstone: imports skip it; a new capture (replace) records it again."""
    backend.dead_letters_write([entry("a")], replace=True)
    assert [e.record_id for e in backend.dead_letters_delete(["a"], statuses=["dead"])] == ["a"]
    assert backend.dead_letters_write([entry("a")], replace=False) == [WRITE_SKIPPED]
    assert backend.dead_letters_get(["a"]) == [None]
    assert backend.dead_letters_write([entry("a")], replace=True) == [WRITE_NEW]
    assert backend.dead_letters_stats(window=1).tombstones == 0


def test_list_orders_by_time_then_id_both_ways(backend: StateBackend) -> None:
    """Newest first by default (ties by id, reversed); ascending is the exact reverse."""
    backend.dead_letters_write(
        [entry("c", T0 + 5), entry("a", T0 + 5), entry("b", T0 + 5), entry("z", T0), entry("m", T0 + 9)],
        replace=True,
    )
    assert ids(listing(backend)) == ["m", "c", "b", "a", "z"]
    assert ids(listing(backend, descending=False)) == ["z", "a", "b", "c", "m"]


def test_cursor_pages_through_ties_and_survives_removal_of_its_record(backend: StateBackend) -> None:
    """Pages of 2 cover every record once, even when the cursor's record is removed in between."""
    backend.dead_letters_write([entry(f"r{n}", T0 + n // 3) for n in range(9)], replace=True)
    first = listing(backend, limit=2)
    assert ids(first) == ["r8", "r7"] and first.cursor == (T0 + 2, "r7")
    backend.dead_letters_delete(["r7"], statuses=["dead"])
    second = listing(backend, limit=2, cursor=first.cursor)
    assert ids(second) == ["r6", "r5"]
    rest = listing(backend, limit=10, cursor=second.cursor)
    assert ids(rest) == ["r4", "r3", "r2", "r1", "r0"]
    assert rest.cursor is None
    up = listing(backend, limit=4, descending=False)
    assert ids(up) == ["r0", "r1", "r2", "r3"]
    backend.dead_letters_delete(["r3"], statuses=["dead"])
    assert ids(listing(backend, limit=10, descending=False, cursor=up.cursor)) == ["r4", "r5", "r6", "r8"]


def test_a_full_last_page_ends_without_a_cursor(backend: StateBackend) -> None:
    """When the page ends exactly at the last record, there is no next cursor."""
    backend.dead_letters_write([entry("a", T0), entry("b", T0 + 1)], replace=True)
    assert listing(backend, limit=2).cursor is None
    assert listing(backend, limit=1).cursor == (T0 + 1, "b")


def test_list_filters_by_time_range_facets_and_status(backend: StateBackend) -> None:
    """since is inclusive, until exclusive; facets with several values match any; all must match."""
    backend.dead_letters_write(
        [
            entry("a", T0, actor="charge", error="ValueError"),
            entry("b", T0 + 10, actor="refund", error="KeyError"),
            entry("c", T0 + 20, actor="charge", error="KeyError", category="permanent"),
            entry("d", T0 + 30, actor="ship", error="KeyError"),
        ],
        replace=True,
    )
    assert ids(listing(backend, since=T0 + 10, until=T0 + 30)) == ["c", "b"]
    assert ids(listing(backend, since=T0 + 10, until=T0 + 30, descending=False)) == ["b", "c"]
    assert ids(listing(backend, facets={"actor": ["charge"]})) == ["c", "a"]
    assert ids(listing(backend, facets={"actor": ["charge", "refund"], "error_type": ["KeyError"]})) == [
        "c",
        "b",
    ]
    assert ids(listing(backend, facets={"category": ["permanent"], "queue": ["payments"]})) == ["c"]
    assert ids(listing(backend, facets={"actor": []})) == []
    assert ids(listing(backend, facets={"actor": ["nobody"]})) == []
    backend.dead_letters_claim(["b"], "tok")
    backend.dead_letters_finish([("b", b"b2")], "tok")
    assert ids(listing(backend, facets={"error_type": ["KeyError"]})) == ["d", "c"]
    assert ids(listing(backend, status="requeued", facets={"error_type": ["KeyError"]})) == ["b"]
    assert ids(listing(backend, status="any", facets={"error_type": ["KeyError"]})) == ["d", "c", "b"]


def test_list_returns_payloads_only_when_asked(backend: StateBackend) -> None:
    """with_payload=False returns index entries only."""
    backend.dead_letters_write([entry("a", payload=b"data")], replace=True)
    assert [e.payload for e in listing(backend).entries] == [None]
    assert [e.payload for e in listing(backend, with_payload=True).entries] == [b"data"]


def test_budget_bounds_a_step_and_the_cursor_resumes_it(backend: StateBackend) -> None:
    """With a budget of 3 entries, a sparse filter returns a short chunk and a cursor to go on."""
    backend.dead_letters_write(
        [entry(f"r{n}", T0 + n, actor="x" if n in (0, 6) else "y") for n in range(8)], replace=True
    )
    sparse: dict[str, Any] = dict(facets={"actor": ["x", "nobody"]}, budget=3, limit=5)
    step = listing(backend, **sparse)
    assert (ids(step), step.cursor, step.scanned) == (["r6"], (T0 + 5, "r5"), 3)
    step = listing(backend, cursor=step.cursor, **sparse)
    assert (ids(step), step.cursor, step.scanned) == ([], (T0 + 2, "r2"), 3)
    step = listing(backend, cursor=step.cursor, **sparse)
    assert (ids(step), step.cursor, step.scanned) == (["r0"], None, 2)


def test_claim_is_exclusive_and_finish_marks_requeued(backend: StateBackend) -> None:
    """Only dead records are claimed, once; finish stores the new payload as requeued."""
    backend.dead_letters_write([entry("a"), entry("b")], replace=True)
    claimed = backend.dead_letters_claim(["a", "b", "nope"], "one")
    assert [(c.record_id, c.status, c.payload) for c in claimed] == [
        ("a", "claimed", b"a"),
        ("b", "claimed", b"b"),
    ]
    assert backend.dead_letters_claim(["a", "b"], "two") == []
    assert backend.dead_letters_stats(window=1).dead == 0
    assert backend.dead_letters_finish([("a", b"a-requeued")], "two") == []
    assert backend.dead_letters_finish([("a", b"a-requeued")], "one") == ["a"]
    [a] = backend.dead_letters_get(["a"])
    assert a is not None and (a.status, a.payload) == ("requeued", b"a-requeued")
    assert backend.dead_letters_claim(["a"], "three") == []


def test_release_puts_a_claim_back_for_its_owner_only(backend: StateBackend) -> None:
    """A release by another token does nothing; by the owner, the record is dead and counted again."""
    backend.dead_letters_write([entry("a")], replace=True)
    backend.dead_letters_claim(["a"], "one")
    assert backend.dead_letters_release(["a"], "two") == 0
    assert backend.dead_letters_release(["a", "nope"], "one") == 1
    stats = backend.dead_letters_stats(window=1)
    assert (stats.dead, stats.claimed, stats.by_facet["actor"]) == (1, 0, {"charge": 1})
    assert [c.record_id for c in backend.dead_letters_claim(["a"], "two")] == ["a"]


def test_delete_respects_statuses_and_never_removes_claims(backend: StateBackend) -> None:
    """delete removes the chosen statuses, skips claimed records, and leaves tombstones."""
    backend.dead_letters_write([entry("d"), entry("r"), entry("c")], replace=True)
    backend.dead_letters_claim(["r", "c"], "tok")
    backend.dead_letters_finish([("r", b"r")], "tok")
    assert [e.record_id for e in backend.dead_letters_delete(["d", "r", "c"], statuses=["dead"])] == ["d"]
    removed = backend.dead_letters_delete(["r", "c", "nope"], statuses=["dead", "requeued"])
    assert [(e.record_id, e.status, e.actor) for e in removed] == [("r", "requeued", "charge")]
    stats = backend.dead_letters_stats(window=1)
    assert (stats.dead, stats.requeued, stats.claimed, stats.total, stats.tombstones) == (0, 0, 1, 1, 2)


def test_trim_removes_by_age_then_by_count_and_reports_each(backend: StateBackend, clock: FakeClock) -> None:
    """Records older than max_age go first, then the oldest beyond max_count; each is reported."""
    now = clock.now_ms()
    backend.dead_letters_write(
        [
            entry("old1", now - 5_000),
            entry("old2", now - 4_000),
            entry("a", now - 300),
            entry("b", now - 200),
            entry("c", now - 100, category="permanent"),
        ],
        replace=True,
    )
    step = backend.dead_letters_trim(
        max_age=3_000,
        max_count=2,
        claim_timeout=60_000,
        tombstone_ttl=86_400_000,
        max_tombstones=100,
        limit=100,
    )
    assert [e.record_id for e in step.by_age] == ["old1", "old2"]
    assert [(e.record_id, e.category) for e in step.by_count] == [("a", "transient")]
    assert (step.released, step.tombstones_expired, step.more) == (0, 0, False)
    assert ids(listing(backend)) == ["c", "b"]


def test_trim_steps_are_bounded_and_say_when_more_is_left(backend: StateBackend, clock: FakeClock) -> None:
    """With limit 2, a backlog of 5 old records takes three steps; more is False at the end."""
    now = clock.now_ms()
    backend.dead_letters_write([entry(f"r{n}", now - 10_000 + n) for n in range(5)], replace=True)
    removed = []
    for expected_more in (True, True, False):
        step = backend.dead_letters_trim(
            max_age=1_000, max_count=100, claim_timeout=60_000, tombstone_ttl=1, max_tombstones=100, limit=2
        )
        removed += [e.record_id for e in step.by_age]
        assert step.more is expected_more
    assert removed == ["r0", "r1", "r2", "r3", "r4"]


def test_trim_releases_stale_claims_and_expires_tombstones(backend: StateBackend, clock: FakeClock) -> None:
    """A claim older than claim_timeout goes back to dead; tombstones past their ttl or cap go."""
    backend.dead_letters_write([entry("a", clock.now_ms()), entry("x"), entry("y"), entry("z")], replace=True)
    backend.dead_letters_claim(["a"], "dead-process")
    backend.dead_letters_delete(["x"], statuses=["dead"])
    clock.advance(1_000)
    backend.dead_letters_delete(["y", "z"], statuses=["dead"])
    clock.advance(59_000)
    options: dict[str, Any] = dict(max_age=86_400_000, max_count=100, claim_timeout=60_000, limit=100)
    step = backend.dead_letters_trim(tombstone_ttl=59_500, max_tombstones=1, **options)
    assert (step.released, step.tombstones_expired) == (1, 2)
    assert backend.dead_letters_stats(window=1).tombstones == 1
    assert backend.dead_letters_finish([("a", b"late")], "dead-process") == []
    [a] = backend.dead_letters_get(["a"])
    assert a is not None and a.status == "dead"


def test_stats_counts_dead_records_by_facet_and_reports_bounds(
    backend: StateBackend, clock: FakeClock
) -> None:
    """Facet counts cover dead records; totals cover statuses; recent counts failures in the window."""
    now = clock.now_ms()
    backend.dead_letters_write(
        [
            entry("a", now - 120_000, actor="charge", category="transient"),
            entry("b", now - 30_000, actor="charge", category="permanent"),
            entry("c", now - 10_000, actor="refund", error="KeyError", category="permanent"),
            entry("d", now - 5_000, actor="ship"),
        ],
        replace=True,
    )
    backend.dead_letters_claim(["d"], "tok")
    stats = backend.dead_letters_stats(window=60_000)
    assert (stats.now, stats.dead, stats.claimed, stats.requeued, stats.total) == (now, 3, 1, 0, 4)
    assert (stats.oldest, stats.newest, stats.recent) == (now - 120_000, now - 10_000, 3)
    assert stats.by_facet == {
        "actor": {"charge": 2, "refund": 1},
        "queue": {"payments": 3},
        "error_type": {"ValueError": 2, "KeyError": 1},
        "category": {"transient": 1, "permanent": 2},
    }
    backend.dead_letters_delete(["a", "b", "c"], statuses=["dead"])
    drained = backend.dead_letters_stats(window=1)
    assert (drained.oldest, drained.newest, drained.by_facet["actor"]) == (None, None, {})


def test_newlines_in_facets_cannot_break_the_index(backend: StateBackend) -> None:
    """A facet value with a newline is stored with spaces; an empty one as "unknown"."""
    backend.dead_letters_write([entry("a", error="bad\nname", category="")], replace=True)
    [a] = backend.dead_letters_get(["a"])
    assert a is not None and (a.error_type, a.category) == ("bad name", "unknown")


def test_every_dead_letter_operation_raises_when_unreachable(down_backend: StateBackend) -> None:
    """Unreachable backend: writes and reads raise BackendUnavailable."""
    with pytest.raises(BackendUnavailable):
        down_backend.dead_letters_write([entry("a")], replace=True)
    with pytest.raises(BackendUnavailable):
        down_backend.dead_letters_stats(window=1)
    with pytest.raises(BackendUnavailable):
        listing(down_backend)


def test_every_redis_key_of_the_store_is_in_one_cluster_slot(redis_backend: RedisBackend) -> None:
    """Records, indexes, counters, tombstones and per-value facet sets all hash to one slot ({dlq})."""
    redis_backend.dead_letters_write(
        [entry("a", actor="charge"), entry("b", actor="refund", error="KeyError", queue="q2")], replace=True
    )
    redis_backend.dead_letters_claim(["b"], "tok")
    redis_backend.dead_letters_finish([("b", b"b")], "tok")
    redis_backend.dead_letters_delete(["b"], statuses=["requeued"])
    redis_backend.dead_letters_write([entry("c", actor="ship")], replace=True)
    keys = [key.decode() for key in redis_backend.client.scan_iter(match=f"{redis_backend.namespace}:*")]
    assert len(keys) >= 12
    assert all(":dead_letters:{dlq}:" in key for key in keys)
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"{dlq}")}


def test_a_claim_repeated_by_its_token_returns_the_same_records_and_claim_time(
    backend: StateBackend, clock: FakeClock
) -> None:
    """A claim retried by its own token gets its records back, with the first claim time."""
    backend.dead_letters_write([entry("a"), entry("b")], replace=True)
    assert [c.record_id for c in backend.dead_letters_claim(["a"], "one")] == ["a"]
    clock.advance(40_000)
    again = backend.dead_letters_claim(["a", "b"], "one")
    assert [(c.record_id, c.status, c.payload) for c in again] == [
        ("a", "claimed", b"a"),
        ("b", "claimed", b"b"),
    ]
    assert backend.dead_letters_claim(["a", "b"], "two") == []
    clock.advance(20_000)
    options: dict[str, Any] = dict(max_age=86_400_000, max_count=100, tombstone_ttl=1, max_tombstones=100)
    step = backend.dead_letters_trim(claim_timeout=60_000, limit=100, **options)
    assert step.released == 1
    [a, b] = backend.dead_letters_get(["a", "b"])
    assert a is not None and b is not None and (a.status, b.status) == ("dead", "claimed")


def test_a_finish_repeated_by_its_token_reports_the_same_ids_and_writes_once(backend: StateBackend) -> None:
    """Finish is idempotent: a retry returns the ids again and does not write its payload twice."""
    backend.dead_letters_write([entry("a"), entry("b")], replace=True)
    backend.dead_letters_claim(["a", "b"], "one")
    assert backend.dead_letters_finish([("a", b"a-1")], "one") == ["a"]
    assert backend.dead_letters_finish([("a", b"a-2"), ("b", b"b-1")], "one") == ["a", "b"]
    assert backend.dead_letters_finish([("a", b"a-3")], "two") == []
    a, b = backend.dead_letters_get(["a", "b"])
    assert a is not None and b is not None
    assert [(x.status, x.payload) for x in (a, b)] == [("requeued", b"a-1"), ("requeued", b"b-1")]
    stats = backend.dead_letters_stats(window=1)
    assert (stats.dead, stats.claimed, stats.requeued) == (0, 0, 2)
    assert backend.dead_letters_release(["a"], "one") == 0
    assert backend.dead_letters_claim(["a"], "one") == []


def test_repair_replaces_a_record_only_while_its_payload_is_the_one_read(backend: StateBackend) -> None:
    """An unreadable payload is replaced (new facets, same status) while its SHA-1 matches; else kept."""
    bad = b"\xc1corrupt"
    backend.dead_letters_write(
        [entry("a", payload=bad, error="OldError"), entry("b", payload=bad)], replace=True
    )
    digest = hashlib.sha1(bad, usedforsecurity=False).hexdigest()
    copy = entry("a", T0 + 7, error="NewError", category="imported", payload=b"good")
    assert backend.dead_letters_repair([(copy, hashlib.sha1(b"other").hexdigest())]) == [WRITE_SKIPPED]
    assert backend.dead_letters_repair([(copy, digest), (entry("nope"), "")]) == [
        WRITE_REPLACED,
        WRITE_SKIPPED,
    ]
    [a] = backend.dead_letters_get(["a"])
    assert a is not None
    assert (a.status, a.failed_at, a.error_type, a.category, a.payload) == (
        "dead",
        T0 + 7,
        "NewError",
        "imported",
        b"good",
    )
    assert ids(listing(backend, facets={"error_type": ["OldError"]})) == []
    assert ids(listing(backend, facets={"category": ["imported"]})) == ["a"]
    backend.dead_letters_claim(["b"], "tok")
    backend.dead_letters_finish([("b", bad)], "tok")
    assert backend.dead_letters_repair([(entry("b", payload=b"good-b"), digest)]) == [WRITE_REPLACED]
    [b] = backend.dead_letters_get(["b"])
    assert b is not None and (b.status, b.payload) == ("requeued", b"good-b")
    stats = backend.dead_letters_stats(window=1)
    assert (stats.dead, stats.requeued, stats.total, stats.by_facet["error_type"]) == (
        1,
        1,
        2,
        {"NewError": 1},
    )


def test_repair_does_not_revive_a_removed_record(backend: StateBackend) -> None:
    """A purged id (tombstone, no index entry) is left alone by repair."""
    backend.dead_letters_write([entry("a", payload=b"\xc1")], replace=True)
    backend.dead_letters_delete(["a"], statuses=["dead"])
    digest = hashlib.sha1(b"\xc1", usedforsecurity=False).hexdigest()
    assert backend.dead_letters_repair([(entry("a", payload=b"good"), digest), (entry("a"), "")]) == [0, 0]
    assert backend.dead_letters_get(["a"]) == [None]


def drop_payload(backend: StateBackend, record_id: str) -> None:
    """Lose a record's data and keep its index entry, as a partial failure outside the scripts could."""
    if isinstance(backend, RedisBackend):
        backend.client.hdel(f"{backend.namespace}:dead_letters:{{dlq}}:rec", record_id)
    else:
        backend.data["dead_letters"].rec.pop(record_id)


def test_repair_fills_in_a_record_whose_data_is_missing(backend: StateBackend) -> None:
    """A record with an index entry and no payload is repaired with the digest "", and only then."""
    backend.dead_letters_write([entry("a")], replace=True)
    drop_payload(backend, "a")
    [a] = backend.dead_letters_get(["a"])
    assert a is not None and (a.status, a.payload) == ("dead", None)
    assert backend.dead_letters_repair([(entry("a", payload=b"x"), hashlib.sha1(b"a").hexdigest())]) == [0]
    assert backend.dead_letters_repair([(entry("a", payload=b"good"), "")]) == [WRITE_REPLACED]
    [a] = backend.dead_letters_get(["a"])
    assert a is not None and (a.status, a.payload) == ("dead", b"good")
    assert backend.dead_letters_stats(window=1).dead == 1
