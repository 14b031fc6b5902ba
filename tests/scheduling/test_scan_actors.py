"""The scans' internal actors: no circuit breaker of their own, whatever the breaker defaults."""

from __future__ import annotations

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.scheduling.scans import SCAN_QUEUE, declare_scans, scan_actor_name

from .conftest import named


def test_failing_scans_open_no_breaker_and_run_at_every_tick(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, captured: list[dr.Event]
) -> None:
    """Six failed runs in a row (a backend outage) are six runs: no breaker opens, none is deferred."""
    stack = dr.install(
        stub_broker,
        backend=stub_backend,
        breaker={"consecutive_failures": 2, "cache_ms": 0},
        scheduling={"run_scheduler": False, "scans": False},
    )
    runs: list[int] = []

    def flaky(context: dr.ScanContext) -> dict[str, int]:
        runs.append(context.now_ms)
        raise RuntimeError("backend down")

    dr.register_scan("flaky", flaky, every=60_000)
    try:
        [actor] = declare_scans(stub_broker, ["flaky"]).values()
        assert actor.actor_name == scan_actor_name("flaky")
        assert actor.options["breaker"] is False
        for _ in range(6):
            actor.send()
        worker = Worker(stub_broker, worker_timeout=50)
        worker.start()
        try:
            stub_broker.join(SCAN_QUEUE, fail_fast=False)
            worker.join()
        finally:
            worker.stop()
    finally:
        dr.scheduling.unregister_scan("flaky")
    assert len(runs) == 6
    assert named(captured, "message_deferred") == []
    assert len(named(captured, "scan_failed")) == 6
    assert scan_actor_name("flaky") not in stack.breaker.admin.names()


def test_scans_declare_without_a_breaker_piece(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """Without CircuitBreaker the scans' actors take no breaker option (Dramatiq would refuse it)."""
    dr.install(stub_broker, backend=stub_backend, breaker=False, scheduling={"run_scheduler": False})
    actors = declare_scans(stub_broker, ["stalled"])
    assert "breaker" not in actors["stalled"].options
    assert isinstance(actors["stalled"], dramatiq.Actor)
