"""What the Sentry reporter sends, built with the real sentry-sdk.

* :func:`capture_final_failure`: one event per final failure, grouped by
  actor and error type, tagged with actor, queue, retries, dead-letter id,
  category and breaker state; the dead-letter redaction applied to the
  message and to the stack frames' local variables.
* :func:`capture_transition`: a breaker opening or closing, as a message.
* :func:`capture_cron_checkin`: a cron run's check-in (``sentry_sdk.crons``).
* :func:`drop_attempt_events`: the event processor dropping what sentry-sdk
  reports for each failed attempt (its Dramatiq integration's events, and the
  worker's "Failed to process message" log records).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from ..dead_letters.redaction import REDACTED, redact

__all__ = [
    "MECHANISM",
    "active",
    "capture_cron_checkin",
    "capture_final_failure",
    "capture_transition",
    "drop_attempt_events",
    "monitor_config",
    "monitor_slug",
]

#: The exception mechanism of the events this package sends.
MECHANISM = "dramatiq_resilience"

#: Options not worth sending (Retries keeps the last traceback there; the event has it).
_SKIPPED_OPTIONS = ("traceback",)

_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def active() -> bool:
    """Whether ``sentry_sdk`` is initialised with a DSN (something to send to) in this process."""
    import sentry_sdk

    client = sentry_sdk.get_client()
    return bool(client.is_active() and getattr(client, "transport", None) is not None)


def drop_attempt_events(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Drop the per-attempt events of sentry-sdk's Dramatiq integration and of the worker's error log."""
    for value in (event.get("exception") or {}).get("values") or ():
        if (value.get("mechanism") or {}).get("type") == "dramatiq":
            return None
    logger = str(event.get("logger") or "")
    message = str((event.get("logentry") or {}).get("message") or "")
    if logger.startswith("dramatiq.worker") and message.startswith("Failed to process message"):
        return None
    return event


def _scrubber(keys: Collection[str], secrets: Collection[str]) -> Any:
    """An event processor: frame variables named like ``keys`` hidden, and ``secrets`` erased everywhere."""
    wanted = {key.lower() for key in keys}
    ordered = sorted(secrets, key=len, reverse=True)

    def erase(item: Any) -> Any:
        if isinstance(item, str):
            for secret in ordered:
                if secret in item:
                    item = item.replace(secret, REDACTED)
            return item
        if isinstance(item, dict):
            return {name: erase(inner) for name, inner in item.items()}
        if isinstance(item, list):
            return [erase(inner) for inner in item]
        return item

    def processor(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        for value in (event.get("exception") or {}).get("values") or ():
            for frame in (value.get("stacktrace") or {}).get("frames") or ():
                local = frame.get("vars")
                if isinstance(local, dict):
                    frame["vars"] = {
                        name: REDACTED if name.lower() in wanted else redact(item, wanted)
                        for name, item in local.items()
                    }
        return erase(event) if ordered else event

    return processor


def capture_final_failure(
    *,
    actor_name: str,
    queue_name: str,
    message_id: str,
    exception: BaseException | None,
    tags: Mapping[str, Any],
    context: Mapping[str, Any],
    redact_keys: Collection[str],
    secrets: Collection[str] = (),
    level: str = "error",
) -> str | None:
    """Send one event for a message that failed for good; returns the event id.

    ``redact_keys`` hide frame variables of those names; every text in
    ``secrets`` (the values they hid in the message) is erased from the whole
    event: exception messages, other frames' variables, breadcrumbs.
    """
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception

    error_type = (
        "unknown" if exception is None else f"{type(exception).__module__}.{type(exception).__qualname__}"
    )
    with sentry_sdk.new_scope() as scope:
        for name, value in tags.items():
            scope.set_tag(name, "" if value is None else str(value))
        scope.fingerprint = ["dramatiq-resilience", actor_name, error_type]
        scope.set_context("dead_letter", dict(context))
        scope.add_event_processor(_scrubber(redact_keys, secrets))
        if exception is None:
            text = f"Message {message_id!r} of actor {actor_name!r} on queue {queue_name!r} failed for good."
            return sentry_sdk.capture_message(text, level=level)  # type: ignore[arg-type]
        event, hint = event_from_exception(
            exception,
            client_options=sentry_sdk.get_client().options,
            mechanism={"type": MECHANISM, "handled": False},
        )
        event["level"] = level  # type: ignore[typeddict-item]
        # sentry-sdk's Dramatiq integration captured this exception object at the last attempt
        # (that event was dropped); its dedupe would now drop this one as a duplicate.
        from sentry_sdk.integrations.dedupe import DedupeIntegration

        DedupeIntegration.reset_last_seen()
        return sentry_sdk.capture_event(event, hint=hint)


def capture_transition(fields: Mapping[str, Any]) -> str | None:
    """A breaker that opened (warning) or closed (info), as a message; other transitions send nothing."""
    import sentry_sdk

    name, to_state, reason = fields.get("breaker"), fields.get("to_state"), fields.get("reason")
    if to_state == "open" and fields.get("from_state") == "half_open":
        level, what = "warning", "opened"
        text = f"Circuit {name!r} reopened ({reason}) for {fields.get('cooldown_ms')} ms"
    elif to_state == "open":
        level, what = "warning", "opened"
        text = (
            f"Circuit {name!r} opened ({reason}) for {fields.get('cooldown_ms')} ms after "
            f"{fields.get('failures')} failures in {fields.get('calls')} calls"
        )
    elif to_state == "forced_open":
        level, what, text = "warning", "opened", f"Circuit {name!r} was forced open"
    elif to_state == "closed":
        level, what, text = "info", "closed", f"Circuit {name!r} closed ({reason})"
    elif to_state == "forced_closed":
        level, what, text = "info", "closed", f"Circuit {name!r} was forced closed"
    else:
        return None
    with sentry_sdk.new_scope() as scope:
        for tag in ("breaker", "from_state", "to_state", "reason"):
            scope.set_tag(tag, str(fields.get(tag)))
        scope.fingerprint = ["dramatiq-resilience-breaker", str(name), what]
        scope.set_context("breaker", {k: v for k, v in fields.items() if isinstance(v, (str, int, float))})
        return sentry_sdk.capture_message(text + ".", level=level)  # type: ignore[arg-type]


def monitor_slug(job: str) -> str:
    """A Sentry monitor slug for cron job ``job``: lowercase letters, digits, ``-`` and ``_``; 50 at most."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", job.lower()).strip("-")
    return slug[:50] or "cron-job"


def monitor_config(job: Any) -> dict[str, Any] | None:
    """The monitor of a ``CronJob`` (its schedule and time zone), or ``None`` if Sentry cannot express it."""
    schedule = getattr(job, "schedule", None)
    expression = getattr(schedule, "expression", None)
    grace = max(1, math.ceil(int(getattr(job, "misfire_grace", 60_000)) / 60_000))
    if expression is not None:
        crontab = _ALIASES.get(expression.strip().lower(), expression)
        return {
            "schedule": {"type": "crontab", "value": crontab},
            "timezone": getattr(schedule, "tz_name", "UTC"),
            "checkin_margin": grace,
        }
    every = getattr(schedule, "every_ms", None)
    if isinstance(every, int) and every % 60_000 == 0:
        return {
            "schedule": {"type": "interval", "value": every // 60_000, "unit": "minute"},
            "checkin_margin": grace,
        }
    return None


def capture_cron_checkin(job_name: str, status: str, duration_ms: int | None, job: Any = None) -> str | None:
    """Send the check-in of one cron run: ``ok`` or ``error`` once it is final (``None``: nothing to send).

    A failed attempt with a retry queued (``retrying``) sends nothing: like every failure
    reported to Sentry here, the run's error is reported once, when it is final.
    """
    from sentry_sdk.crons import capture_checkin

    outcome = {"succeeded": "ok", "failed": "error", "rejected": "error"}.get(status)
    if outcome is None:
        return None  # retrying, deferred or skipped: the run has not ended yet
    return capture_checkin(
        monitor_slug=monitor_slug(job_name),
        status=outcome,
        duration=None if duration_ms is None else duration_ms / 1000,
        monitor_config=monitor_config(job) if job is not None else None,  # type: ignore[arg-type]
    )
