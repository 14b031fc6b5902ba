"""on_backend_error: allow or defer; one log line per outage; recovery logged."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr


class Probe(dr.ResilienceMiddleware):
    """Touches the backend before each message, handling outages by policy."""

    option_specs: ClassVar = ()

    def before_process_message(self, broker: Any, message: Any) -> None:
        try:
            self.backend.ping()
        except dr.BackendError as exc:
            self.backend_failed(broker, message, exc)
        else:
            self.outage.succeeded()


def test_allow_runs_messages_and_logs_the_outage_once(
    stub_broker: StubBroker,
    stub_worker: Worker,
    stub_backend: dr.StubBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three messages during an outage all run; one warning; one recovery line afterwards."""
    stub_broker.add_middleware(Probe(backend=stub_backend, on_backend_error="allow"))
    runs = []
    errors: list[dr.Event] = []
    recovered: list[dr.Event] = []

    @dramatiq.actor
    def work(n: int) -> None:
        runs.append(n)

    dr.subscribe("backend_error", errors.append)
    dr.subscribe("backend_recovered", recovered.append)
    try:
        with caplog.at_level(logging.INFO):
            stub_backend.unavailable = True
            for n in range(3):
                work.send(n)
            stub_broker.join(work.queue_name)
            stub_worker.join()
            stub_backend.unavailable = False
            work.send(3)
            stub_broker.join(work.queue_name)
            stub_worker.join()
    finally:
        dr.unsubscribe("backend_error", errors.append)
        dr.unsubscribe("backend_recovered", recovered.append)
    assert sorted(runs) == [0, 1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if "cannot reach its state backend" in r.getMessage()]
    assert warnings == [
        "Probe cannot reach its state backend (StubBackend is marked unavailable); it will run messages "
        "until the backend is back. Further errors are counted, not logged."
    ]
    # Worker threads report concurrently, so the events' order varies; one is the outage's first.
    assert sorted(e["first"] for e in errors) == [False, False, True]
    assert [(e["component"], e["errors"]) for e in recovered] == [("Probe", 3)]


def test_defer_puts_messages_back_until_the_backend_returns(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """With "defer", a message waits (deferred, not failed) and runs once the backend is back."""
    stub_broker.add_middleware(Probe(backend=stub_backend, on_backend_error="defer", backend_retry_delay=20))
    runs = []
    deferred: list[dr.Event] = []

    @dramatiq.actor(max_retries=0)
    def work() -> None:
        runs.append(1)

    def backend_returns(event: dr.Event) -> None:
        deferred.append(event)
        if len(deferred) == 2:
            stub_backend.unavailable = False

    dr.subscribe("message_deferred", backend_returns)
    try:
        stub_backend.unavailable = True
        work.send()
        stub_broker.join(work.queue_name)
        stub_worker.join()
    finally:
        dr.unsubscribe("message_deferred", backend_returns)
    assert runs == [1]
    assert [e["reason"] for e in deferred] == ["backend_unavailable", "backend_unavailable"]
    assert stub_broker.dead_letters == []


def test_bad_on_backend_error_is_rejected(stub_backend: dr.StubBackend) -> None:
    """Only "allow" and "defer" are policies."""
    with pytest.raises(
        dr.ConfigurationError, match="Option 'on_backend_error': must be one of 'allow', 'defer'"
    ):
        Probe(backend=stub_backend, on_backend_error="ignore")
