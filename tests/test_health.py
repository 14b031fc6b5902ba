"""The health score: the formula, its inputs from every process, the scan, status changes."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.backends.health import ProcessSeen
from dramatiq_resilience.observability.health_report import BreakerView, HealthInputs, QueueDepth
from dramatiq_resilience.observability.health_score import score
from dramatiq_resilience.scheduling import run_scan

NOW = 1_767_225_600_000


def inputs(**kwargs: Any) -> HealthInputs:
    values: dict[str, Any] = {"now_ms": NOW, "window_ms": 300_000, **kwargs}
    return HealthInputs(**values)


def points(report: Any, scope: str = "overall", name: str = "") -> dict[str, float]:
    item = report.overall if scope == "overall" else getattr(report, scope + "s")[name]
    return {f"{p.kind}:{p.subject}" if p.subject else p.kind: p.points for p in item.penalties}


def test_the_default_formula() -> None:
    """Breakers -30/-15, failure rate above 10% -min(30, rate x 100), dead letters -min(20, n), depth."""
    report = score(
        inputs(
            breakers=[
                BreakerView("gw", "open", "open", ("charge",)),
                BreakerView("mail", "half_open", "half_open", ("notify",)),
                BreakerView("crm", "forced_closed", "forced_closed", ("sync",)),
            ],
            counts={
                ("payments", "charge"): {"success": 15, "failure": 5, "dead_lettered": 3},
                ("mail", "notify"): {"success": 5, "failure": 4},  # 9 attempts: too few for a rate
                ("mail", "sync"): {"success": 10, "expected": 10, "dead_lettered": 25},
            },
            depths={"payments": QueueDepth(ready=1_050), "mail": QueueDepth(ready=5_000, delayed=9)},
        ),
        dr.HealthPolicy(),
    )
    assert points(report, "actor", "charge") == {
        "breaker_open:gw": 30.0,
        "failure_rate": 25.0,
        "dead_letters": 3.0,
    }
    assert (report.actors["charge"].score, report.actors["charge"].status) == (42.0, "unhealthy")
    assert points(report, "actor", "notify") == {"breaker_half_open:mail": 15.0}
    assert points(report, "actor", "sync") == {"dead_letters": 20.0}  # expected failures are no failures
    assert points(report, "queue", "payments") == {
        "breaker_open:gw": 30.0,
        "failure_rate": 25.0,
        "dead_letters": 3.0,
        "queue_depth:payments": 5.0,  # (1 050 - 1 000) / 10
    }
    assert points(report, "queue", "mail")["queue_depth:mail"] == 20.0
    assert report.queues["mail"].failure_rate == 4 / 29
    assert points(report) == {
        "breaker_open:gw": 30.0,
        "breaker_half_open:mail": 15.0,
        "failure_rate:payments": 25.0,  # the worst queue's rate
        "dead_letters": 20.0,
        "queue_depth:payments": 5.0,
        "queue_depth:mail": 20.0,
    }
    assert (report.score, report.status, report.http_status, report.exit_code) == (0.0, "unhealthy", 503, 2)


def test_thresholds_weights_and_bands_are_configurable() -> None:
    """Per-queue thresholds, weights and bands come from the policy."""
    policy = dr.HealthPolicy(
        open_breaker=10, queue_thresholds={"bulk": 100_000}, healthy=95, degraded=85, min_attempts=1
    )
    report = score(
        inputs(
            breakers=[BreakerView("gw", "open", "open", ("charge",))],
            counts={("bulk", "load"): {"success": 9, "failure": 1}},
            depths={"bulk": QueueDepth(ready=50_000)},
        ),
        policy,
    )
    assert (report.score, report.status, report.exit_code) == (90.0, "degraded", 1)
    assert report.queues["bulk"].penalties == []  # 10% is not above 10%, and 50 000 < 100 000
    with pytest.raises(dr.ConfigurationError, match="unknown setting\\(s\\) 'open'"):
        dr.HealthPolicy.from_mapping({"open": 1})
    with pytest.raises(dr.ConfigurationError, match="Option 'healthy': bands need 0 <= degraded <= healthy"):
        dr.HealthPolicy(healthy=40)
    with pytest.raises(dr.ConfigurationError, match="Option 'open_breaker': must be a non-negative number"):
        dr.HealthPolicy(open_breaker=-1)


def test_liveness_and_the_backend_count_overall() -> None:
    """Processes that reported but none alive: -50; an unreadable backend: -60."""
    seen = (ProcessSeen("h:1:a", NOW - 60_000, {"stopped": True}),)
    report = score(inputs(processes=seen, alive=0), dr.HealthPolicy())
    assert points(report) == {"no_workers": 50.0}
    assert report.status == "degraded"
    down = score(inputs(backend_ok=False, errors=["state backend: down"]), dr.HealthPolicy())
    assert (down.score, down.status, down.to_dict()["errors"]) == (40.0, "unhealthy", ["state backend: down"])


@pytest.fixture
def scored(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> Any:
    return dr.install(
        stub_broker,
        backend=stub_backend,
        scheduling=False,
        breaker={"consecutive_failures": 2, "failure_rate": None, "cache_ms": 0, "cooldown": 60_000},
        health={"cache_ms": 0, "flush_ms": 100},
    )


def test_counts_from_the_workers_over_a_sliding_window(
    stub_broker: StubBroker, scored: Any, clock: dr.FakeClock
) -> None:
    """Outcomes are flushed by each process; they leave the window with time; a breaker counts too."""

    @dramatiq.actor(max_retries=0)
    def call(fail: bool) -> None:
        if fail:
            raise RuntimeError("down")

    worker = Worker(stub_broker, worker_timeout=50)
    worker.start()
    try:
        for fail in (False, False, True, True):
            call.send(fail)
            stub_broker.join("default", fail_fast=False)
            worker.join()
        assert scored.health.flush()
        report = scored.health.evaluate()
        assert (report.actors["call"].attempts, report.actors["call"].failures) == (4, 2)
        assert points(report, "actor", "call") == {"breaker_open:call": 30.0, "dead_letters": 2.0}
        assert report.inputs.alive == 1
        clock.advance(60_000)  # the cooldown is over: half-open, the next message probes
        assert points(scored.health.evaluate(), "actor", "call")["breaker_half_open:call"] == 15.0
        call.send(False)
        stub_broker.join("default", fail_fast=False)
        worker.join()
        scored.health.flush()
        assert points(scored.health.evaluate(), "actor", "call") == {"dead_letters": 2.0}
        clock.advance(320_000)  # older than the window (and its bucket)
        scored.health.flush()
        assert scored.health.evaluate().actors["call"].attempts == 0
    finally:
        worker.stop()
    report = scored.health.evaluate()
    assert (report.inputs.alive, len(report.inputs.processes)) == (0, 1)  # it said it stopped


def test_the_scan_publishes_and_announces_changes(
    stub_broker: StubBroker, scored: Any, stub_backend: dr.StubBackend
) -> None:
    """The health scan publishes the report (depths included) and emits health_changed once per change."""
    changes: list[dr.Event] = []
    dr.subscribe("health_changed", changes.append)
    try:

        @dramatiq.actor
        def idle() -> None:
            pass

        for _ in range(3):
            idle.send()
        assert run_scan(stub_broker, "health")["score"] == 100
        scored.breaker.force_open("idle")
        assert run_scan(stub_broker, "health") == {
            "score": 70,
            "queues_not_healthy": 1,
            "breakers_not_closed": 1,
            "workers_alive": 0,
        }
        run_scan(stub_broker, "health")
    finally:
        dr.unsubscribe("health_changed", changes.append)
    assert [(e["from_status"], e["to_status"], e["score"]) for e in changes] == [
        ("healthy", "degraded", 70.0)
    ]
    # A scorer without the broker reads the published depths and policy.
    alone = dr.HealthScorer(backend=stub_backend).evaluate()
    assert (alone.inputs.depth_source, alone.inputs.depths["default"].ready) == ("snapshot", 3)
    assert alone.status == "degraded"


def test_an_unreachable_backend_is_unhealthy(stub_broker: StubBroker, scored: Any, stub_backend: Any) -> None:
    """Scoring with the backend down says so: unhealthy, exit code 2, the error named."""
    stub_backend.unavailable = True
    report = scored.health.evaluate(stub_broker)
    assert (report.status, report.exit_code) == ("unhealthy", 2)
    assert report.inputs.errors[0].startswith("state backend:")
    assert scored.health.flush() is False  # counts are kept for the next flush


def test_a_reporting_process_lists_the_scan_queue_before_any_scan_ran(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """`health` from a process that boots no worker sees the scans' queue, as the workers declare it."""
    stack = dr.install(stub_broker, backend=stub_backend, scheduling={"run_scheduler": False})

    @dramatiq.actor(queue_name="mail")
    def mail() -> None: ...

    report = stack.health.evaluate(stub_broker)
    assert "dramatiq_resilience.scan.stalled" not in stub_broker.actors  # nothing was declared
    assert sorted(report.queues) == ["dramatiq_resilience", "mail"]
    assert report.actors["dramatiq_resilience.scan.stalled"].queue_name == "dramatiq_resilience"
    other = StubBroker()
    none = dr.install(other, backend=stub_backend, scheduling={"scans": False}).health.evaluate(other)
    assert list(none.queues) == []
