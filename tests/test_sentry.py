"""Sentry with the real sentry-sdk and a transport keeping what it would send: one event per final failure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import sentry_sdk
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.transport import Transport

import dramatiq_resilience as dr
from dramatiq_resilience.observability import sentry as sentry_module
from dramatiq_resilience.observability.sentry_events import active, monitor_config, monitor_slug
from tests.test_metrics import run


class Capture(Transport):
    """Keeps every envelope instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == kind and item.payload.json is not None
        ]


@pytest.fixture
def sentry() -> Iterator[Capture]:
    transport = Capture()
    # The default integrations too: the logging one reports the worker's error logs.
    sentry_sdk.init(
        dsn="https://key@sentry.invalid/1", transport=transport, integrations=[DramatiqIntegration()]
    )
    yield transport
    sentry_sdk.init()  # no DSN: nothing is sent


@pytest.fixture
def broker(sentry: Capture, stub_backend: dr.StubBackend) -> Iterator[StubBroker]:
    broker = StubBroker()  # after sentry_sdk.init(): its integration adds SentryMiddleware
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    dr.install(
        broker,
        backend=stub_backend,
        scheduling=False,
        breaker={"consecutive_failures": 2, "failure_rate": None, "cache_ms": 0},
        health=False,
    )
    yield broker
    broker.close()


def test_one_event_per_final_failure(broker: StubBroker, sentry: Capture) -> None:
    """3 attempts of a failing message: one event, with the tags, grouped by actor and error type."""
    assert any(type(m).__name__ == "SentryMiddleware" for m in broker.middleware)

    @dramatiq.actor(max_retries=2, min_backoff=1, max_backoff=2, breaker=False)
    def doomed(order_id: str) -> None:
        raise TimeoutError(f"gateway timeout for {order_id}")

    @dramatiq.actor(max_retries=2, min_backoff=1, max_backoff=2, breaker=False)
    def flaky() -> None:
        message = dramatiq.middleware.CurrentMessage.get_current_message()
        if message is None or not message.options.get("retries"):
            raise ConnectionError("once")

    broker.add_middleware(dramatiq.middleware.CurrentMessage())
    message = doomed.send("o-1")
    flaky.send()
    run(broker)
    events = sentry.items("event")
    assert len(events) == 1  # not 3 attempts, not the worker's error logs, nothing for flaky
    [event] = events
    assert event["tags"] == {
        "actor": "doomed",
        "queue": "default",
        "retries": "2",
        "dead_letter_id": message.message_id,
        "category": "transient",
        "breaker_state": "none",
    }
    assert event["fingerprint"] == ["dramatiq-resilience", "doomed", "builtins.TimeoutError"]
    assert event["exception"]["values"][-1]["mechanism"]["type"] == "dramatiq_resilience"
    assert event["exception"]["values"][-1]["value"] == "gateway timeout for o-1"
    context = event["contexts"]["dead_letter"]
    assert (context["record_id"], context["attempts"], context["args"]) == (message.message_id, 3, ["o-1"])


def test_throws_rejections_and_breaker_state(broker: StubBroker, sentry: Capture) -> None:
    """Expected failures (throws) are not reported; a rejection is, with the breaker's state."""

    class Declined(Exception):
        pass

    @dramatiq.actor(throws=(Declined,))
    def declined() -> None:
        raise Declined("card declined")

    @dramatiq.actor(max_retries=0, breaker_on_open="fail")
    def guarded() -> None:
        raise ConnectionError("down")

    declined.send()
    for _ in range(3):  # 2 failures open the breaker; the third is rejected with CircuitOpen
        guarded.send()
        run(broker)
    events = sentry.items("event")
    errors = [e for e in events if e.get("level") == "error"]
    assert [(e["tags"]["actor"], e["tags"]["category"], e["tags"]["breaker_state"]) for e in errors] == [
        ("guarded", "transient", "closed"),
        ("guarded", "transient", "open"),
        ("guarded", "rejected", "open"),
    ]
    assert errors[-1]["fingerprint"][-1] == "dramatiq_resilience.errors.CircuitOpen"
    [opened] = [e for e in events if e.get("level") == "warning"]
    assert (
        opened["message"]
        == "Circuit 'guarded' opened (consecutive_failures) for 30000 ms after 2 failures in 2 calls."
    )
    assert (opened["tags"]["breaker"], opened["tags"]["to_state"]) == ("guarded", "open")


def test_breaker_close_is_a_message(broker: StubBroker, sentry: Capture) -> None:
    """A breaker reset by an operator is reported as an info message."""
    dr.installed(broker).breaker.force_open("payments")
    dr.installed(broker).breaker.reset("payments")
    worker = Worker(broker, worker_timeout=50)  # the reporter listens while a worker runs
    worker.start()
    dr.installed(broker).breaker.force_open("payments")
    dr.installed(broker).breaker.reset("payments")
    worker.stop()
    texts = [(e["level"], e["message"]) for e in sentry.items("event")]
    assert texts == [
        ("warning", "Circuit 'payments' was forced open."),
        ("info", "Circuit 'payments' closed (reset)."),
    ]


def test_redaction_applies_to_the_event(broker: StubBroker, sentry: Capture) -> None:
    """dead_letter_redact hides arguments in the context and in the stack frames' variables."""

    @dramatiq.actor(max_retries=0, dead_letter_redact=["card"], breaker=False)
    def charge(order_id: str, card: str) -> None:
        details = {"card": card, "order": order_id}
        raise ValueError(f"bad order {details['order']} with card {card}")

    charge.send("o-9", "4242424242424242")
    run(broker)
    [event] = sentry.items("event")
    assert event["contexts"]["dead_letter"]["args"] == ["o-9", "[redacted]"]
    assert "4242424242424242" not in json.dumps(event)
    frame = event["exception"]["values"][-1]["stacktrace"]["frames"][-1]
    assert frame["vars"]["card"] == "[redacted]"
    assert frame["vars"]["details"]["card"] == "[redacted]"
    assert event["exception"]["values"][-1]["value"] == "bad order o-9 with card [redacted]"


def test_cron_runs_check_in(broker: StubBroker, sentry: Capture) -> None:
    """Each cron run sends one check-in when it ends (ok or error), none per retried attempt."""
    attempts: list[int] = []

    @dr.cron("*/5 * * * *", tz="Europe/Paris")
    @dramatiq.actor(max_retries=1, min_backoff=1, max_backoff=1)
    def report(mode: str = "ok") -> None:
        attempts.append(1)
        if mode == "fail" or (mode == "flaky" and len(attempts) == 1):
            raise RuntimeError("report failed")

    backend = dr.installed(broker).backend
    dr.install(broker, backend=backend, scheduling={"run_scheduler": False, "scans": False})
    report.send_with_options(kwargs={"mode": "flaky"}, cron_job="report")  # fails once, then succeeds
    run(broker)
    report.send_with_options(kwargs={"mode": "ok"}, cron_job="report")
    report.send_with_options(kwargs={"mode": "fail"}, cron_job="report")  # fails twice: final
    run(broker)
    checkins = sentry.items("check_in")
    assert len(attempts) == 5
    assert sorted(c["status"] for c in checkins) == ["error", "ok", "ok"]
    assert {c["monitor_slug"] for c in checkins} == {"report"}
    assert checkins[0]["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "*/5 * * * *"},
        "timezone": "Europe/Paris",
        "checkin_margin": 1,
    }


def test_monitor_slugs_and_schedules() -> None:
    """Slugs are Sentry-safe; intervals in whole minutes become interval monitors, others none."""
    assert monitor_slug("Maintenance.Heartbeat / EU") == "maintenance-heartbeat-eu"
    interval = type("Job", (), {"schedule": type("S", (), {"every_ms": 120_000})(), "misfire_grace": 30_000})
    assert monitor_config(interval) == {
        "schedule": {"type": "interval", "value": 2, "unit": "minute"},
        "checkin_margin": 1,
    }
    assert monitor_config(type("Job", (), {"schedule": type("S", (), {"every_ms": 1_000})()})) is None


def test_nothing_is_sent_without_sentry(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a DSN the reporter is silent (and costs a check per final failure)."""
    sentry_sdk.init()
    assert not active()
    dr.install(stub_broker, backend=stub_backend, scheduling=False, health=False)

    @dramatiq.actor(max_retries=0)
    def boom() -> None:
        raise RuntimeError("x")

    sent: list[Any] = []
    for name in ("capture_final_failure", "capture_transition", "capture_cron_checkin"):
        monkeypatch.setattr(sentry_module, name, lambda *args, name=name, **kwargs: sent.append(name))
    boom.send()
    run(stub_broker)
    assert len(stub_broker.dead_letters_by_queue["default"]) == 1
    assert sent == []
