"""DeadLetters: record every message that finally fails, with its full context."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import q_name

from .. import events
from ..backends.base import StateBackend
from ..backends.dead_letters import WRITE_REPLACED
from ..dead_letters.record import (
    FIRST_FAILURE_OPTION,
    DeadLetterRecord,
    build_record,
    classify,
    error_type_name,
    exception_chain,
    format_traceback,
)
from ..dead_letters.redaction import redaction_names
from ..dead_letters.redrive import RedrivePolicy, policies_from
from ..dead_letters.store import DEFAULT_MAX_AGE, DEFAULT_MAX_COUNT, DeadLetterStore, wall_ms
from ..enqueue import enqueue_origin
from ..errors import BackendError
from ..options import Option
from .base import ResilienceMiddleware, scratch

__all__ = ["DeadLetters"]

#: What the worker does with a failure the store could not record.
_OUTAGE_ACTION = "leave failed messages in the broker's dead-letter queue (<queue>.XQ) for import"


class DeadLetters(ResilienceMiddleware):
    """Middleware that records every message that finally fails in a :class:`DeadLetterStore`.

    It captures in ``after_nack``: every final failure reaches the broker
    through the consumer's ``nack``, after every ``after_process_message``
    and ``after_skip_message`` hook has run, so the final ``message.failed``
    and exception are known whoever decided them: ``Retries`` (retries
    exhausted, ``throws``), ``RetryGuard`` (a retry that could not be
    enqueued), ``AgeLimit``, a resilience ``Rejected`` skip, an unknown
    actor.  And the message is already in the broker's own dead-letter queue
    (``<queue>.XQ``) by then: if the store cannot be reached, the failure is
    counted, logged once per outage, and imported from there later
    (:meth:`DeadLetterStore.import_from`), so nothing is lost.  The record id
    is deterministic (the message id, ``-rN`` after N redrives), so the
    import does not record it twice.

    Position: before ``Retries`` (``install()`` puts it there).  Its
    ``before_process_message`` notes the retry count before ``Retries``
    changes it (for ``attempts``), and its ``before_enqueue`` stamps the first
    failure time on the first retry.

    Parameters:
      backend: the state backend where the store lives.
      store: a ready :class:`DeadLetterStore` (default: one on ``backend``
        with ``max_age``, ``max_count`` and ``redrive``).
      redact: argument and key names stored as ``"[redacted]"`` (default
        none; actor option ``dead_letter_redact``).
      max_age: milliseconds a record is kept by ``store.trim()`` (default 30 days).
      max_count: records kept at most by ``store.trim()`` (default 100 000).
      redrive: :class:`RedrivePolicy` list applied by ``store.redrive_due()``.
    """

    option_specs = (Option("dead_letter_redact", "redact", redaction_names, per_message=False),)

    def __init__(
        self,
        *,
        backend: StateBackend,
        store: DeadLetterStore | None = None,
        redact: Iterable[str] = (),
        max_age: int = DEFAULT_MAX_AGE,
        max_count: int = DEFAULT_MAX_COUNT,
        redrive: Iterable[RedrivePolicy] = (),
    ) -> None:
        # Capture never runs or defers a message, so on_backend_error has one meaning here.
        super().__init__(backend=backend, on_backend_error="allow")
        self.redact = redact
        self.check_defaults()
        self.store = store or DeadLetterStore(
            backend, max_age=max_age, max_count=max_count, redrive=policies_from(redrive)
        )
        self.host = socket.gethostname()

    # -- hooks ----------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        scratch(message, "DeadLetters")["retries"] = message.options.get("retries", 0)

    def before_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        if FIRST_FAILURE_OPTION not in message.options and enqueue_origin(message) == "retry":
            message.options[FIRST_FAILURE_OPTION] = wall_ms(self.backend)

    def after_nack(self, broker: Broker, message: Any) -> None:
        exception = getattr(message, "_exception", None)
        try:
            record = self.record_of(broker, message, exception)
        except Exception as exc:
            self.logger.exception("Could not build the dead-letter record of message %r.", message.message_id)
            self._capture_failed(message, exc, reason="record_error")
            return
        try:
            [outcome] = self.store.add_many([record], replace=True)
        except BackendError as exc:
            self.outage.failed(exc, action=_OUTAGE_ACTION)
            self._capture_failed(message, exc, reason="backend_unavailable")
            return
        except Exception as exc:
            self.logger.exception("Could not store the dead-letter record of message %r.", message.message_id)
            self._capture_failed(message, exc, reason="store_error")
            return
        self.outage.succeeded()
        self.logger.info(
            "Recorded dead letter %r: actor %r failed with %s (%s) after %d attempt(s).",
            record.record_id,
            record.actor_name,
            record.error_type,
            record.category,
            record.attempts,
        )
        events.emit(
            "dead_letter_captured",
            record_id=record.record_id,
            message_id=record.message_id,
            actor_name=record.actor_name,
            queue_name=record.queue_name,
            error_type=record.error_type,
            category=record.category,
            attempts=record.attempts,
            redrives=record.redrive_count,
            replaced=outcome == WRITE_REPLACED,
            record=record,
            exception=exception,
        )

    # -- helpers ----------------------------------------------------------------------

    def record_of(self, broker: Broker, message: Any, exception: BaseException | None) -> DeadLetterRecord:
        """The record of ``message`` failing finally with ``exception`` (now)."""
        try:
            actor: Any = broker.get_actor(message.actor_name)
        except Exception:
            actor = None
        options = actor.options if actor is not None else {}
        throws = message.options.get("throws") or options.get("throws")
        retries = scratch(message, "DeadLetters").get("retries", message.options.get("retries", 0))
        return build_record(
            message,
            category=classify(exception, throws=throws),
            error_type="unknown" if exception is None else error_type_name(type(exception)),
            error_message="" if exception is None else str(exception),
            traceback="" if exception is None else format_traceback(exception),
            chain=() if exception is None else exception_chain(exception),
            attempts=(retries if isinstance(retries, int) and retries >= 0 else 0) + 1,
            failed_at=wall_ms(self.backend),
            host=self.host,
            pid=os.getpid(),
            redact_keys=options.get("dead_letter_redact", self.redact),
            fn=getattr(actor, "fn", None),
        )

    def _capture_failed(self, message: Any, error: BaseException, *, reason: str) -> None:
        events.emit(
            "dead_letter_capture_failed",
            message_id=message.message_id,
            actor_name=message.actor_name,
            queue_name=q_name(message.queue_name),
            reason=reason,
            error=error,
        )
