"""Contract: the health operations (``health_*``), on StubBackend and RedisBackend."""

from __future__ import annotations

import json

from dramatiq_resilience import FakeClock, StateBackend
from dramatiq_resilience.backends.health import HealthSnapshot, ProcessSeen, field_name

T0 = 1_767_225_600_000  # the FakeClock's start: a multiple of every bucket length used here
BUCKET = 10_000
OPTIONS = {"bucket_ms": BUCKET, "retention_ms": 60_000, "forget_after_ms": 120_000}


def record(backend: StateBackend, process: str, counts: dict[str, int], **kwargs: object) -> int:
    return backend.health_record(process, counts, **{**OPTIONS, **kwargs})  # type: ignore[arg-type]


def read(backend: StateBackend, window_ms: int = 30_000) -> dict[tuple[str, str], dict[str, int]]:
    return backend.health_read(window_ms=window_ms, bucket_ms=BUCKET, forget_after_ms=120_000).counts


def test_counts_of_every_process_add_up(backend: StateBackend, clock: FakeClock) -> None:
    """Two processes flushing into one bucket: the read sums them per queue, actor and kind."""
    assert (
        record(backend, "p1", {field_name("q", "a", "success"): 3, field_name("q", "a", "failure"): 1}) == T0
    )
    clock.advance(1_500)
    record(backend, "p2", {field_name("q", "a", "success"): 2, field_name("q", "b", "dead_lettered"): 1})
    record(backend, "p2", {field_name("q", "a", "failure"): 0})  # zero increments are not stored
    assert read(backend) == {("q", "a"): {"success": 5, "failure": 1}, ("q", "b"): {"dead_lettered": 1}}


def test_the_window_counts_buckets_that_overlap_it(backend: StateBackend, clock: FakeClock) -> None:
    """A bucket counts while it starts after now - window - bucket; older ones drop out of the read."""
    record(backend, "p", {field_name("q", "a", "success"): 1})  # bucket T0
    clock.advance(24_999)
    record(backend, "p", {field_name("q", "a", "success"): 10})  # bucket T0 + 20 000
    assert read(backend, window_ms=15_000) == {("q", "a"): {"success": 11}}  # T0 > now - 25 000
    clock.advance(1)
    assert read(backend, window_ms=15_000) == {("q", "a"): {"success": 10}}
    assert read(backend, window_ms=60_000) == {("q", "a"): {"success": 11}}


def test_retention_deletes_old_buckets(backend: StateBackend, clock: FakeClock) -> None:
    """Buckets older than the retention are deleted by the next record, whatever window is read."""
    record(backend, "p", {field_name("q", "a", "success"): 1})
    clock.advance(60_001)
    record(backend, "p", {field_name("q", "a", "success"): 2}, retention_ms=60_000)
    assert read(backend, window_ms=3_600_000) == {("q", "a"): {"success": 2}}


def test_processes_are_seen_with_their_info_and_forgotten(backend: StateBackend, clock: FakeClock) -> None:
    """A record marks its process seen (info kept until replaced); unseen ones are forgotten."""
    record(backend, "p1", {}, info={"host": "h1", "queues": ["q"]})
    clock.advance(1_000)
    record(backend, "p2", {}, info={"host": "h2"})
    clock.advance(1_000)
    record(backend, "p1", {})  # no info: the earlier info stays
    counts = backend.health_read(window_ms=30_000, bucket_ms=BUCKET, forget_after_ms=120_000)
    assert counts.now_ms == T0 + 2_000
    assert counts.processes == (
        ProcessSeen("p2", T0 + 1_000, {"host": "h2"}),
        ProcessSeen("p1", T0 + 2_000, {"host": "h1", "queues": ["q"]}),
    )
    record(backend, "p2", {}, info={"host": "h2", "stopped": True})
    assert [
        p.stopped for p in backend.health_read(window_ms=1, bucket_ms=1, forget_after_ms=10).processes
    ] == [
        False,
        True,
    ]
    clock.advance(120_001)
    record(backend, "p3", {})
    seen = backend.health_read(window_ms=30_000, bucket_ms=BUCKET, forget_after_ms=120_000).processes
    assert seen == (ProcessSeen("p3", T0 + 122_001, {}),)


def test_publish_keeps_the_latest_report_and_returns_the_previous_status(
    backend: StateBackend, clock: FakeClock
) -> None:
    """The snapshot holds the last report until it expires; each publish learns the status it replaced."""
    assert backend.health_snapshot() is None
    payload = json.dumps({"score": 70.0}).encode()
    assert backend.health_publish(payload, status="degraded", ttl_ms=5_000) is None
    clock.advance(1_000)
    assert backend.health_publish(b"{}", status="healthy", ttl_ms=5_000) == "degraded"
    assert backend.health_snapshot() == HealthSnapshot(T0 + 1_000, "healthy", b"{}")
    clock.advance(5_000)
    assert backend.health_snapshot() is None
    assert backend.health_publish(payload, status="healthy", ttl_ms=5_000) is None
    snapshot = backend.health_snapshot()
    assert snapshot is not None and snapshot.report() == {"score": 70.0}


def test_health_keys_share_one_slot(backend: StateBackend) -> None:
    """Every health key carries the {health} hash tag."""
    keys = [backend.key("health", "health", part) for part in ("counts", "fields", "processes", "snapshot")]
    assert all(":{health}:" in key for key in keys)
