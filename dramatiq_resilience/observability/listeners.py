"""Resilience events turned into worker metrics.

:data:`EVENT_METRICS` maps each event name to a function ``(sink, fields)``
that counts it.  A piece that emits new events adds its entries here (the
``backpressure_*`` events of the Backpressure piece are listed in
:data:`BACKPRESSURE_EVENTS` and counted by ``dramatiq_resilience_backpressure_events_total``):
subscribing to an event nobody emits costs nothing.  Only named events are
subscribed, never ``"*"``: hot paths skip building the events nobody listens
to (``events.listening()``), and a ``"*"`` listener would make them build all.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .. import events
from .metrics import metric
from .sinks import Sink

__all__ = ["BACKPRESSURE_EVENTS", "EVENT_METRICS", "Counting", "start_counting", "stop_counting"]

Counting = Callable[[Sink, Mapping[str, Any]], None]

#: Backpressure's decisions (each counted under an ``event`` label: ``level_<level>``,
#: ``slowed_<mode>``, ``refused_<reason>``, ``depth_failed``).
BACKPRESSURE_EVENTS = (
    "backpressure_level",
    "backpressure_slowed",
    "backpressure_refused",
    "backpressure_depth_failed",
)

#: The field whose value completes a backpressure event's label.
_BACKPRESSURE_DETAIL = {"level": "level", "slowed": "mode", "refused": "reason"}

MESSAGES_DEFERRED = metric("messages_deferred")
MESSAGES_REJECTED = metric("messages_rejected")
DEFERRALS_FAILED = metric("deferrals_failed")
BREAKER_TRANSITIONS = metric("breaker_transitions")
RATE_LIMIT_REFUSALS = metric("rate_limit_refusals")
RATE_LIMIT_DISAGREEMENTS = metric("rate_limit_disagreements")
DEDUP_HITS = metric("dedup_hits")
DEAD_LETTERS_CAPTURED = metric("dead_letters_captured")
CAPTURE_FAILURES = metric("dead_letter_capture_failures")
DEAD_LETTERS_REQUEUED = metric("dead_letters_requeued")
DEAD_LETTERS_REMOVED = metric("dead_letters_removed")
DEAD_LETTERS_IMPORTED = metric("dead_letters_imported")
CRON_RUNS = metric("cron_runs")
CRON_OCCURRENCES = metric("cron_occurrences")
SCANS = metric("scans")
SCAN_DURATION = metric("scan_duration_seconds")
SCAN_RESULT = metric("scan_result")
MESSAGES_STALLED = metric("messages_stalled")
DEAD_WORKER_REQUEUED = metric("dead_worker_messages_requeued")
BACKEND_ERRORS = metric("backend_errors")
BACKEND_OUTAGES = metric("backend_outages")
BACKPRESSURE = metric("backpressure_events")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _qa(fields: Mapping[str, Any]) -> tuple[str, str]:
    return _text(fields.get("queue_name")), _text(fields.get("actor_name"))


def _deferred(sink: Sink, fields: Mapping[str, Any]) -> None:
    reason = _text(fields.get("reason"))
    sink.inc(MESSAGES_DEFERRED, (*_qa(fields), reason))
    if reason == "duplicate_in_progress":
        sink.inc(DEDUP_HITS, (*_qa(fields), "in_progress"))


def _with_reason(spec: Any) -> Counting:
    def count(sink: Sink, fields: Mapping[str, Any]) -> None:
        sink.inc(spec, (*_qa(fields), _text(fields.get("reason"))))

    return count


def _dedup(kind: str) -> Counting:
    def count(sink: Sink, fields: Mapping[str, Any]) -> None:
        sink.inc(DEDUP_HITS, (*_qa(fields), kind))

    return count


def _transition(sink: Sink, fields: Mapping[str, Any]) -> None:
    labels = (fields.get("breaker"), fields.get("from_state"), fields.get("to_state"), fields.get("reason"))
    sink.inc(BREAKER_TRANSITIONS, tuple(_text(label) for label in labels))


def _refused(sink: Sink, fields: Mapping[str, Any]) -> None:
    sink.inc(RATE_LIMIT_REFUSALS, (*_qa(fields), _text(fields.get("limit")), _text(fields.get("kind"))))


def _disagreement(sink: Sink, fields: Mapping[str, Any]) -> None:
    sink.inc(RATE_LIMIT_DISAGREEMENTS, (_text(fields.get("limit")), _text(fields.get("kind"))))


def _captured(sink: Sink, fields: Mapping[str, Any]) -> None:
    sink.inc(DEAD_LETTERS_CAPTURED, (*_qa(fields), _text(fields.get("category"))))


def _trimmed(sink: Sink, fields: Mapping[str, Any]) -> None:
    for reason, key in (("age", "by_age"), ("count", "by_count")):
        if fields.get(key):
            sink.inc(DEAD_LETTERS_REMOVED, (reason,), float(fields[key]))


def _purged(sink: Sink, fields: Mapping[str, Any]) -> None:
    if fields.get("count"):
        sink.inc(DEAD_LETTERS_REMOVED, ("purge",), float(fields["count"]))


def _imported(sink: Sink, fields: Mapping[str, Any]) -> None:
    if fields.get("imported"):
        sink.inc(DEAD_LETTERS_IMPORTED, (_text(fields.get("queue_name")),), float(fields["imported"]))


def _cron_run(sink: Sink, fields: Mapping[str, Any]) -> None:
    sink.inc(CRON_RUNS, (_text(fields.get("job")), _text(fields.get("status"))))


def _occurrence(decision: str) -> Counting:
    def count(sink: Sink, fields: Mapping[str, Any]) -> None:
        label = f"{decision}_{fields['reason']}" if decision == "skipped" else decision
        sink.inc(CRON_OCCURRENCES, (_text(fields.get("job")), label))

    return count


def _scan(status: str) -> Counting:
    def count(sink: Sink, fields: Mapping[str, Any]) -> None:
        scan = _text(fields.get("scan"))
        sink.inc(SCANS, (scan, status))
        if fields.get("duration_ms") is not None:
            sink.observe(SCAN_DURATION, (scan,), float(fields["duration_ms"]) / 1000)
        for name, value in dict(fields.get("counts") or {}).items():
            if isinstance(value, (int, float)):
                sink.set(SCAN_RESULT, (scan, str(name)), float(value))

    return count


def _stalled(sink: Sink, fields: Mapping[str, Any]) -> None:
    sink.inc(MESSAGES_STALLED, _qa(fields))


def _dead_worker(sink: Sink, fields: Mapping[str, Any]) -> None:
    sink.inc(DEAD_WORKER_REQUEUED, (_text(fields.get("queue_name")),), float(fields.get("messages") or 0))


def _backend_error(sink: Sink, fields: Mapping[str, Any]) -> None:
    component = _text(fields.get("component"))
    sink.inc(BACKEND_ERRORS, (component,))
    if fields.get("first"):
        sink.inc(BACKEND_OUTAGES, (component,))


def _backpressure(event: str) -> Counting:
    kind = event.removeprefix("backpressure_")
    detail = _BACKPRESSURE_DETAIL.get(kind)

    def count(sink: Sink, fields: Mapping[str, Any]) -> None:
        label = kind if detail is None else f"{kind}_{_text(fields.get(detail))}"
        sink.inc(BACKPRESSURE, (_text(fields.get("queue_name")), label))

    return count


#: Event name -> how it is counted.
EVENT_METRICS: dict[str, Counting] = {
    "message_deferred": _deferred,
    "message_rejected": _with_reason(MESSAGES_REJECTED),
    "deferral_failed": _with_reason(DEFERRALS_FAILED),
    "breaker_transition": _transition,
    "rate_limit_exceeded": _refused,
    "rate_limit_disagreement": _disagreement,
    "dedup_skipped": _dedup("completed"),
    "dedup_conflict": _dedup("conflict"),
    "dedup_refused": _dedup("refused"),
    "dead_letter_captured": _captured,
    "dead_letter_capture_failed": _with_reason(CAPTURE_FAILURES),
    "dead_letter_requeued": _with_reason(DEAD_LETTERS_REQUEUED),
    "dead_letters_trimmed": _trimmed,
    "dead_letters_purged": _purged,
    "dead_letters_imported": _imported,
    "cron_finished": _cron_run,
    "cron_fired": _occurrence("fired"),
    "cron_skipped": _occurrence("skipped"),
    "cron_missed": _occurrence("missed"),
    "cron_send_failed": _occurrence("send_failed"),
    "scan_completed": _scan("completed"),
    "scan_failed": _scan("failed"),
    "message_stalled": _stalled,
    "dead_worker_recovered": _dead_worker,
    "backend_error": _backend_error,
    **{name: _backpressure(name) for name in BACKPRESSURE_EVENTS},
}


class EventCounter(Protocol):
    def count_event(self, event: events.Event) -> None: ...


# One listener per counted event, forwarding to the counters that run now.  They are held
# weakly: a counter that is never stopped (a producer's) does not outlive its broker.
_counters: weakref.WeakSet[Any] = weakref.WeakSet()
_subscribed: list[str] = []
_lock = threading.Lock()


def _dispatch(event: events.Event) -> None:
    for counter in list(_counters):
        counter.count_event(event)


def start_counting(counter: EventCounter) -> None:
    """Have ``counter.count_event(event)`` called for every event of :data:`EVENT_METRICS`."""
    with _lock:
        _counters.add(counter)
        for name in EVENT_METRICS:
            if name not in _subscribed:
                events.subscribe(name, _dispatch)
                _subscribed.append(name)


def stop_counting(counter: EventCounter) -> None:
    """Stop calling ``counter``; with no counter left, unsubscribe (events are built for nobody)."""
    with _lock:
        _counters.discard(counter)
        if not _counters:
            for name in _subscribed:
                events.unsubscribe(name, _dispatch)
            _subscribed.clear()
