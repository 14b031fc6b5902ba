"""Metrics in one process: one outcome per delivery, every decision counted, nothing counted twice."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import prometheus_client
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, Retries

import dramatiq_resilience as dr
from dramatiq_resilience.observability.listeners import BACKPRESSURE_EVENTS, EVENT_METRICS
from dramatiq_resilience.observability.listeners import _counters as counting
from dramatiq_resilience.observability.metrics import METRICS, metric, sample_names
from dramatiq_resilience.observability.sinks import FileSink, MemorySink


def value(registry: Any, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and wanted <= set(sample.labels.items())
    )


def outcomes(registry: Any, actor: str) -> dict[str, float]:
    names = ("success", "retried", "failed", "rejected", "deferred", "skipped")
    found = {
        o: value(registry, "dramatiq_resilience_messages_total", actor_name=actor, outcome=o) for o in names
    }
    return {o: n for o, n in found.items() if n}


class DeferFirst(Middleware):
    """Defers each message of actor ``later`` once (reason ``test``)."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        if message.actor_name == "later" and not message.options.get("deferrals"):
            dr.defer(broker, message, delay_ms=1, reason="test", jitter_ms=0)


@pytest.fixture
def stack(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> Any:
    stack = dr.install(stub_broker, backend=stub_backend, breaker=False, scheduling=False, health=False)
    stub_broker.add_middleware(DeferFirst(), before=Retries)
    return stack


def run(broker: StubBroker) -> None:
    worker = Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        broker.join("default", fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_every_delivery_has_one_outcome(stub_broker: StubBroker, stack: Any) -> None:
    """success, retried, failed, rejected, deferred and skipped, each counted once per delivery."""

    class Declined(Exception):
        pass

    @dramatiq.actor(max_retries=0)
    def ok(n: int) -> None:
        pass

    @dramatiq.actor(max_retries=2, min_backoff=1, max_backoff=2)
    def doomed(n: int) -> None:
        raise RuntimeError("no")

    @dramatiq.actor(throws=(Declined,))
    def declined(n: int) -> None:
        raise Declined("no")

    @dramatiq.actor(max_retries=0)
    def later(n: int) -> None:
        pass

    @dramatiq.actor(max_retries=0, dedup_key=lambda n: f"k{n}")
    def once(n: int) -> None:
        pass

    for n in range(3):
        ok.send(n)
        later.send(n)
        once.send(n)
    doomed.send(0)
    declined.send(0)
    ok.send_with_options(args=(9,), max_age=1, message_timestamp=0)
    run(stub_broker)
    for n in range(3):
        once.send(n)
    run(stub_broker)
    registry = stack.metrics.registry
    assert outcomes(registry, "ok") == {"success": 3, "rejected": 1}
    assert outcomes(registry, "doomed") == {"retried": 2, "failed": 1}
    assert outcomes(registry, "declined") == {"failed": 1}
    assert outcomes(registry, "later") == {"deferred": 3, "success": 3}
    assert outcomes(registry, "once") == {"success": 3, "skipped": 3}
    assert (
        value(registry, "dramatiq_resilience_messages_deferred_total", actor_name="later", reason="test") == 3
    )
    assert value(registry, "dramatiq_resilience_dedup_hits_total", actor_name="once", kind="completed") == 3
    # Durations: only deliveries that ran (or failed in a hook); none in progress after.
    # ok 3, doomed 3 attempts, declined 1, later 3, once 3.
    assert value(registry, "dramatiq_resilience_message_duration_seconds_count") == 13
    assert value(registry, "dramatiq_resilience_messages_in_progress") == 0
    captured = {
        c: value(registry, "dramatiq_resilience_dead_letters_captured_total", category=c)
        for c in ("transient", "permanent", "expired")
    }
    assert captured == {"transient": 1, "permanent": 1, "expired": 1}


def test_delayed_moves_are_not_deliveries(stub_broker: StubBroker, stack: Any) -> None:
    """A delayed message counts once, when it runs: its move from the delay queue is no delivery."""

    @dramatiq.actor(max_retries=0)
    def ok() -> None:
        pass

    worker = Worker(stub_broker, worker_timeout=50)
    worker.start()
    try:
        ok.send_with_options(delay=10)
        stub_broker.join("default.DQ", fail_fast=False)
        stub_broker.join("default", fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    assert outcomes(stack.metrics.registry, "ok") == {"success": 1}


def test_each_event_is_counted(stub_broker: StubBroker, stack: Any, stub_worker: Worker) -> None:
    """Every counted event turns into its metric, with its labels (backpressure's too)."""
    qa = {"queue_name": "q", "actor_name": "a"}
    stack.metrics.start()
    dr.emit("rate_limit_exceeded", **qa, message_id="m", limit="stripe", key="acme", kind="rate")
    dr.emit("rate_limit_disagreement", limit="stripe", kind="rate", definition="100/1000", others=["50/1000"])
    dr.emit("message_rejected", **qa, message_id="m", reason="circuit_open", error=None)
    dr.emit("breaker_transition", breaker="gw", from_state="closed", to_state="open", reason="failure_rate")
    dr.emit("dead_letters_trimmed", by_age=3, by_count=2)
    dr.emit("scan_completed", scan="stalled", counts={"running": 4, "stalled": 1}, duration_ms=1500)
    dr.emit("backend_error", component="CircuitBreaker", error=None, first=True)
    dr.emit("backend_error", component="CircuitBreaker", error=None, first=False)
    dr.emit("cron_skipped", job="nightly", actor_name="a", occurrence_ms=0, reason="overlap")
    dr.emit("backpressure_refused", queue_name="q", actor_name="a", reason="emergency")
    registry = stack.metrics.registry
    name = "dramatiq_resilience_"
    assert value(registry, name + "rate_limit_refusals_total", limit="stripe", kind="rate", **qa) == 1
    assert value(registry, name + "rate_limit_disagreements_total", limit="stripe", kind="rate") == 1
    assert value(registry, name + "messages_rejected_total", reason="circuit_open") == 1
    assert value(registry, name + "breaker_transitions_total", breaker="gw", to_state="open") == 1
    assert value(registry, name + "dead_letters_removed_total", reason="age") == 3
    assert value(registry, name + "dead_letters_removed_total", reason="count") == 2
    assert value(registry, name + "scans_total", scan="stalled", status="completed") == 1
    assert value(registry, name + "scan_duration_seconds_sum", scan="stalled") == 1.5
    assert value(registry, name + "scan_result", scan="stalled", count="running") == 4
    assert value(registry, name + "backend_errors_total", component="CircuitBreaker") == 2
    assert value(registry, name + "backend_outages_total", component="CircuitBreaker") == 1
    assert value(registry, name + "cron_occurrences_total", job="nightly", decision="skipped_overlap") == 1
    assert value(registry, name + "backpressure_events_total", queue_name="q", event="refused_emergency") == 1
    assert set(EVENT_METRICS) >= set(BACKPRESSURE_EVENTS)


def test_listeners_stop_with_the_worker(stub_broker: StubBroker, stack: Any) -> None:
    """After the worker stops, events are no longer counted (no double counting by old instances)."""
    worker = Worker(stub_broker, worker_timeout=50)
    worker.start()
    dr.emit("dedup_refused", queue_name="q", actor_name="a")
    worker.stop()
    dr.emit("dedup_refused", queue_name="q", actor_name="a")
    assert value(stack.metrics.registry, "dramatiq_resilience_dedup_hits_total", kind="refused") == 1
    assert stack.metrics not in counting


def test_a_producer_counts_its_enqueue_decisions(stub_broker: StubBroker, stack: Any) -> None:
    """Without a worker, the first send starts counting (unique-enqueue refusals happen there)."""

    @dramatiq.actor(dedup_key=lambda n: "same", dedup_on_enqueue=True)
    def unique(n: int) -> None:
        pass

    unique.send(1)
    with pytest.raises(dr.DuplicateMessage):
        unique.send(1)
    assert value(stack.metrics.registry, "dramatiq_resilience_dedup_hits_total", kind="refused") == 1
    stack.metrics.stop()


def test_backpressure_decisions_are_counted(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """The Backpressure piece's real decisions (slowed, refused, level changes) reach the counter."""
    stack = dr.install(
        stub_broker,
        backend=stub_backend,
        breaker=False,
        scheduling=False,
        health=False,
        backpressure={
            "default": dr.Thresholds(warning=1, critical=2, emergency=3),
            "cache_ms": 0,
            "max_wait": 1,
        },
    )

    @dramatiq.actor(queue_name="exports")
    def export(n: int) -> None:
        pass

    refused = 0
    for n in range(5):
        try:
            export.send(n)
        except dr.QueueOverloaded:
            refused += 1
    registry = stack.metrics.registry
    counts = {
        sample.labels["event"]: sample.value
        for metric in registry.collect()
        if metric.name == "dramatiq_resilience_backpressure_events"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("queue_name") == "exports"
    }
    # Depths 0..4 before each send: normal, warning, critical (slowed), emergency (refused twice).
    assert refused == 2
    assert counts == {
        "level_warning": 1,
        "level_critical": 1,
        "slowed_wait": 1,
        "level_emergency": 1,
        "refused_emergency": 2,
    }
    stack.metrics.stop()


def test_nothing_is_created_until_used(tmp_path: Path) -> None:
    """Building Metrics subscribes nothing and writes nothing; outside dramatiq it counts in memory."""
    metrics = dr.Metrics()
    assert metrics.started_registry is None
    assert metrics not in counting
    assert metrics.multiprocess_directory() is None
    assert isinstance(metrics.sink, MemorySink)
    assert metrics in counting
    assert dr.events.listening("dead_letter_captured")
    metrics.stop()
    assert metrics not in counting
    assert isinstance(dr.Metrics(directory=str(tmp_path)).sink, FileSink)
    producer = dr.Metrics()
    producer.start()  # never stopped, as in a web app that only sends: it goes with its broker
    gone = weakref.ref(producer)
    del producer
    gc.collect()
    assert gone() is None


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileSink]:
    sink = FileSink(str(tmp_path / "run"))
    yield sink
    sink.close()


def collected(directory: str) -> Any:
    from dramatiq_resilience.observability.collectors import exposition_registry

    return exposition_registry(directories=[directory])


def test_file_sink_matches_prometheus_client(files: FileSink) -> None:
    """Counters, histograms and gauges written to files read back like prometheus_client's own."""
    memory = MemorySink()
    duration = metric("message_duration_seconds")
    for sink in (files, memory):
        sink.inc(metric("messages"), ("q", "a", "success"), 2)
        sink.observe(duration, ("q", "a"), 0.02)
        sink.observe(duration, ("q", "a"), 3.0)
        sink.inc(metric("messages_in_progress"), ("q", "a"))
        sink.set(metric("scan_result"), ("stalled", "running"), 7)
    from_files = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collected(files.directory).collect()
        for s in family.samples
    }
    from_memory = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in memory.registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }
    assert from_files == from_memory
    assert from_files[("dramatiq_resilience_message_duration_seconds_bucket", (
        ("actor_name", "a"), ("le", "+Inf"), ("queue_name", "q")))] == 2  # fmt: skip


def test_processes_add_up_and_live_gauges_go_with_their_process(files: FileSink) -> None:
    """Two processes' files are summed; a process's in-progress gauge disappears when it closes."""
    files.inc(metric("messages"), ("q", "a", "success"), 3)
    files.inc(metric("messages_in_progress"), ("q", "a"))
    pid = os.fork()
    if pid == 0:  # a second worker process: its own files
        try:
            files.inc(metric("messages"), ("q", "a", "success"), 4)
            files.inc(metric("messages_in_progress"), ("q", "a"), 2)
            files.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    registry = collected(files.directory)
    assert value(registry, "dramatiq_resilience_messages_total", outcome="success") == 7
    assert value(registry, "dramatiq_resilience_messages_in_progress") == 1  # the child's were removed
    files.close()
    assert value(collected(files.directory), "dramatiq_resilience_messages_in_progress") == 0


def test_every_metric_has_a_unique_prefixed_name() -> None:
    """Names are unique, prefixed, and exposed under their sample names."""
    names = [spec.name for spec in METRICS]
    assert len(names) == len(set(names))
    assert all(name.startswith("dramatiq_resilience_") for name in names)
    assert sample_names(metric("messages")) == ("dramatiq_resilience_messages_total",)
    assert all(spec.kind in ("counter", "gauge", "histogram") for spec in METRICS)


def test_in_process_exposition(stub_broker: StubBroker, stack: Any) -> None:
    """The in-process registry renders as Prometheus text."""
    stack.metrics.sink.inc(metric("messages"), ("default", "x", "success"))
    text = prometheus_client.generate_latest(stack.metrics.registry).decode()
    assert (
        'dramatiq_resilience_messages_total{actor_name="x",outcome="success",queue_name="default"} 1.0'
        in text
    )
    stack.metrics.stop()


def test_run_directories_are_per_command_and_stale_ones_go(tmp_path: Path) -> None:
    """A run is named by its main process (pid and start time); runs of dead processes are deleted."""
    from dramatiq_resilience.observability import runs

    base = str(tmp_path / "base")
    live = runs.run_of(os.getpid(), base)
    assert live is not None and live.alive
    assert live.directory == os.path.join(base, f"run-{os.getpid()}-{runs.process_start_time(os.getpid())}")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a process that is gone
    stale = os.path.join(base, f"run-{pid}-12345")
    reused = os.path.join(base, f"run-{os.getpid()}-1")  # this pid, but an earlier process's
    for path in (stale, reused):
        os.makedirs(path)
        Path(path, "counter_resilience-1.db").write_bytes(b"")
    runs.prepare_run(live)
    assert [run.directory for run in runs.find_runs(base)] == [live.directory]
    assert not os.path.exists(stale) and not os.path.exists(reused)
    assert oct(os.stat(live.directory).st_mode & 0o777) == "0o700"  # private to this user
    assert runs.current_run(base) is None  # pytest is no dramatiq worker
