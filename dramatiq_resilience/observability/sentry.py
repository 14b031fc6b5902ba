"""SentryReporter: each failure reported once, when it is final; breaker transitions; cron check-ins."""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import q_name
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from .. import events
from ..dead_letters.redaction import redaction_keys
from ..middleware.base import scratch
from .outcomes import expected
from .sentry_context import EventMessage, RecordMessage, failure_context, failure_tags, secret_values
from .sentry_events import (
    active,
    capture_cron_checkin,
    capture_final_failure,
    capture_transition,
    drop_attempt_events,
)

__all__ = ["SentryReporter"]

_processor_lock = threading.Lock()
_processor_added = False
_reporters = 0


def _drop_attempt_events(event: Any, hint: Any) -> Any:
    return drop_attempt_events(event, hint) if _reporters else event


class SentryReporter(Middleware):
    """Middleware that reports each failure to Sentry once, when it is final, with its resilience context.

    With ``sentry_sdk`` initialised (and nothing otherwise), a message that
    fails for good (dead-lettered: retries exhausted, ``throws``, a time or age
    limit, a resilience rejection) becomes one event, grouped by actor and
    error type, tagged ``actor``, ``queue``, ``retries``, ``dead_letter_id``,
    ``category`` and ``breaker_state``.  With ``DeadLetters`` installed the
    event is sent when the record is stored (its id, category and redacted
    message come with it); without it, when the worker rejects the message.
    The per-attempt events of sentry-sdk's Dramatiq integration, and the
    worker's "Failed to process message" error logs, are dropped while a
    reporter runs in the process.  Breakers opening and closing are sent as
    messages, and each cron run as a check-in (``sentry_sdk.crons``).

    Position: before ``Retries`` (``install()`` puts it there).

    Parameters:
      report_throws: also report failures with an exception in the actor's
        ``throws`` (default ``False``: expected, as for sentry-sdk's integration).
      breaker_messages: send breaker transitions (default ``True``).
      cron_checkins: send cron check-ins (default ``True``); ``cron_scans``
        includes the recovery scans' ``scan:*`` jobs (default ``False``).
      suppress_attempts: drop the per-attempt events (default ``True``).
      level: the level of failure events (default ``"error"``).
    """

    def __init__(
        self,
        *,
        report_throws: bool = False,
        breaker_messages: bool = True,
        cron_checkins: bool = True,
        cron_scans: bool = False,
        suppress_attempts: bool = True,
        level: str = "error",
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.report_throws = report_throws
        self.breaker_messages = breaker_messages
        self.cron_checkins = cron_checkins
        self.cron_scans = cron_scans
        self.suppress_attempts = suppress_attempts
        self.level = level
        self.broker: Broker | None = None
        self._listening: list[tuple[str, Any]] = []
        self._suppressing = False
        self._local = threading.local()

    # -- life cycle ---------------------------------------------------------------------

    def start(self, broker: Broker) -> None:
        """Subscribe to the events it reports, and drop per-attempt events (idempotent)."""
        global _processor_added, _reporters  # noqa: PLW0603 - one processor per process
        self.broker = broker
        if self._listening:
            return
        wanted = [
            ("dead_letter_captured", self._captured),
            ("dead_letter_capture_failed", self._capture_failed),
        ]
        if self.breaker_messages:
            wanted.append(("breaker_transition", self._transition))
        if self.cron_checkins:
            wanted.append(("cron_finished", self._cron_finished))
        for name, listener in wanted:
            events.subscribe(name, listener)
        self._listening = wanted
        if self.suppress_attempts and not self._suppressing:
            from sentry_sdk.scope import add_global_event_processor

            with _processor_lock:
                if not _processor_added:
                    add_global_event_processor(_drop_attempt_events)
                    _processor_added = True
                _reporters += 1
            self._suppressing = True

    def stop(self) -> None:
        global _reporters  # noqa: PLW0603
        for name, listener in self._listening:
            events.unsubscribe(name, listener)
        self._listening = []
        if self._suppressing:
            with _processor_lock:
                _reporters -= 1
            self._suppressing = False

    def after_process_boot(self, broker: Broker) -> None:
        self.start(broker)

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.start(broker)

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.stop()
        if active():
            import sentry_sdk

            sentry_sdk.flush(timeout=2)

    # -- final failures -----------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        scratch(message, "sentry")["retries"] = message.options.get("retries", 0)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        # sentry-sdk's Dramatiq integration (first in the list, so its after-hook runs later)
        # closes its scope with the exception but no traceback, which erases the exception's
        # traceback; keep it, and put it back before the message is rejected (before_nack),
        # so that the dead-letter record and the report keep their frames.
        if exception is not None and exception.__traceback__ is not None:
            scratch(message, "sentry")["traceback"] = exception.__traceback__

    def before_nack(self, broker: Broker, message: Any) -> None:
        exception = getattr(message, "_exception", None)
        kept = scratch(message, "sentry").pop("traceback", None)
        if exception is not None and exception.__traceback__ is None and kept is not None:
            exception.__traceback__ = kept
        # DeadLetters announces the failure on this thread, with the redacted record only:
        # keep the values redaction hides, to erase them from the whole event.
        self._local.secrets = (message.message_id, self._secrets(broker, message))

    def _secrets(self, broker: Broker, message: Any) -> set[str]:
        keys = redaction_keys(broker, message.actor_name)
        if not keys or not active():
            return set()
        actor = broker.actors.get(message.actor_name)
        return secret_values((tuple(message.args), dict(message.kwargs)), keys, fn=getattr(actor, "fn", None))

    def _has_dead_letters(self, broker: Broker) -> bool:
        return any(type(m).__name__ == "DeadLetters" for m in broker.middleware)

    def after_nack(self, broker: Broker, message: Any) -> None:
        if self._has_dead_letters(broker) or not active():
            return  # DeadLetters announces the failure with its record (or that it could not store it)
        exception = getattr(message, "_exception", None)
        retries = scratch(message, "sentry").get("retries", message.options.get("retries", 0))
        self._report(broker, message, exception, record=None, retries=retries, category=None,
                     secrets=self._secrets(broker, message))  # fmt: skip

    def _skip(self, broker: Broker, message: Any, exception: BaseException | None) -> bool:
        return not self.report_throws and expected(broker, message, exception)

    def _captured(self, event: events.Event) -> None:
        broker = self.broker
        if broker is None or not active():
            return
        record = event["record"]
        message = RecordMessage(record)
        exception = event.fields.get("exception")
        found = getattr(self._local, "secrets", None)
        secrets = found[1] if found is not None and found[0] == record.message_id else set()
        self._report(broker, message, exception, record=record, retries=record.attempts - 1,
                     category=record.category, secrets=secrets)  # fmt: skip

    def _capture_failed(self, event: events.Event) -> None:
        # The store could not keep it: the failure is still final, report it without a record.
        broker = self.broker
        if broker is None or not active():
            return
        fields = event.fields
        message = EventMessage(fields)
        self._report(broker, message, None, record=None, retries=None, category=None,
                     extra={"capture_failed": fields.get("reason")})  # fmt: skip

    def _report(
        self,
        broker: Broker,
        message: Any,
        exception: BaseException | None,
        *,
        record: Any,
        retries: Any,
        category: str | None,
        extra: dict[str, Any] | None = None,
        secrets: set[str] | None = None,
    ) -> None:
        if self._skip(broker, message, exception):
            return
        keys = redaction_keys(broker, message.actor_name)
        try:
            capture_final_failure(
                actor_name=message.actor_name,
                queue_name=q_name(message.queue_name),
                message_id=message.message_id,
                exception=exception,
                tags=failure_tags(broker, message, record=record, retries=retries, category=category),
                context=failure_context(broker, message, record=record, keys=keys, extra=extra),
                redact_keys=keys,
                secrets=secrets or (),
                level=self.level,
            )
        except Exception:
            self.logger.exception("Could not report the failure of message %r to Sentry.", message.message_id)

    # -- transitions and cron --------------------------------------------------------------------

    def _transition(self, event: events.Event) -> None:
        if active():
            capture_transition(event.fields)

    def _cron_finished(self, event: events.Event) -> None:
        job_name = str(event.fields.get("job") or "")
        if not job_name or (job_name.startswith("scan:") and not self.cron_scans) or not active():
            return
        from ..scheduling.cron import jobs

        job = jobs(self.broker).get(job_name) if self.broker is not None else None
        capture_cron_checkin(job_name, str(event.fields.get("status")), event.fields.get("duration_ms"), job)
