"""How a delivery ended, decided once per delivery, for metrics and health.

A delivery ends in exactly one outcome.  The worker acks or rejects every
message it took off the queue, after every ``after_process_message`` /
``after_skip_message`` hook ran (``Retries`` re-enqueued the failed ones it
retries; ``RetryGuard`` marked failed those whose retry could not be
enqueued).  So the outcome is decided in ``after_ack`` / ``after_nack``:

==============  ====================================================================
``success``     the actor ran and returned
``retried``     it failed (the actor or a hook) and was acked: a retry was enqueued
``failed``      it failed and was rejected: failed for good, dead-lettered
``rejected``    it was marked failed without failing: dead-lettered without running
                (a ``Rejected`` decision, ``AgeLimit``, an unknown actor)
``deferred``    a resilience decision put it back for later (``message_deferred``)
``skipped``     skipped without failing: a completed duplicate, another middleware's skip
==============  ====================================================================

Retries are counted once, under the canonical queue name: the re-enqueue of
a retry, and the move of the delayed retry from ``<queue>.DQ`` back to its
queue, are not deliveries (Dramatiq's own Prometheus middleware counts a retry
at every enqueue carrying ``retries``, under both names).

:class:`OutcomeTracker` is the base of the middlewares that need outcomes
(``Metrics``, ``HealthScorer``).  Put it before every middleware whose
before-hook may raise (``install()`` does): its before-hook must run for every
delivery.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from .. import events
from ..middleware.base import scratch

__all__ = ["DEFERRED", "FAILED", "REJECTED", "RETRIED", "SKIPPED", "SUCCESS", "OutcomeTracker", "expected"]

SUCCESS, RETRIED, FAILED, REJECTED, DEFERRED, SKIPPED = (
    "success",
    "retried",
    "failed",
    "rejected",
    "deferred",
    "skipped",
)


def expected(broker: Broker, message: Any, exception: BaseException | None) -> bool:
    """Whether ``exception`` is one the actor declares in ``throws`` (an expected failure)."""
    if exception is None:
        return False
    throws = message.options.get("throws")
    if not throws:
        actor = broker.actors.get(message.actor_name)
        throws = actor.options.get("throws") if actor is not None else None
    return bool(throws) and isinstance(exception, throws)


class OutcomeTracker(Middleware):
    """Base middleware: decides each delivery's outcome and calls :meth:`delivered`.

    Subclasses implement :meth:`delivered` and may override :meth:`started`
    and :meth:`finished` (called on the worker thread around processing).
    Per-delivery state lives in ``scratch(message, self.scratch_owner)``.
    """

    scratch_owner = "outcomes"

    def __init__(self) -> None:
        self._deferred = threading.local()

    # -- to implement --------------------------------------------------------------

    def started(self, queue_name: str, actor_name: str) -> None:
        """A delivery started processing (worker thread)."""

    def finished(self, queue_name: str, actor_name: str, seconds: float | None) -> None:
        """A delivery finished processing (worker thread); ``seconds`` when it reached after_process."""

    def delivered(
        self, broker: Broker, message: Any, outcome: str, exception: BaseException | None
    ) -> None:  # pragma: no cover - abstract
        """The delivery of ``message`` ended with ``outcome`` (``exception``: the failure, if any)."""
        raise NotImplementedError

    # -- deferrals: the only skip that tells its reason through an event -----------------

    def note_deferral(self, event: events.Event) -> None:
        """Call with each ``message_deferred`` event, to tell deferrals from other skips.

        It is emitted on the worker thread inside ``before_process_message``,
        just before the skip.  Without it, a deferral counts as ``skipped``.
        """
        self._deferred.message_id = event.fields.get("message_id")

    # -- hooks ------------------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        state = scratch(message, self.scratch_owner)
        state["start"] = time.perf_counter()
        self.started(q_name(message.queue_name), message.actor_name)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        state = scratch(message, self.scratch_owner)
        start = state.get("start")
        if start is None:
            return
        state["ran"] = True
        state["exception"] = exception
        self.finished(q_name(message.queue_name), message.actor_name, time.perf_counter() - start)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        state = scratch(message, self.scratch_owner)
        if state.get("start") is None:
            return
        state["skipped"] = True
        if getattr(self._deferred, "message_id", None) == message.message_id:
            state["deferred"] = True
        self._deferred.message_id = None
        self.finished(q_name(message.queue_name), message.actor_name, None)

    def after_ack(self, broker: Broker, message: Any) -> None:
        state = scratch(message, self.scratch_owner)
        if state.pop("start", None) is None:
            return  # not a delivery: the move of a delayed message to its queue
        if state.get("skipped"):
            outcome = DEFERRED if state.get("deferred") else SKIPPED
            self.delivered(broker, message, outcome, None)
            return
        exception = state.get("exception")
        self.delivered(broker, message, SUCCESS if exception is None else RETRIED, exception)

    def after_nack(self, broker: Broker, message: Any) -> None:
        state = scratch(message, self.scratch_owner)
        state.pop("start", None)
        exception = state.get("exception")
        if state.get("ran") and exception is not None:
            self.delivered(broker, message, FAILED, exception)
        else:
            # Failed without a failure of its own: skipped as failed, or never handed to a
            # worker thread (an unknown actor).
            self.delivered(broker, message, REJECTED, getattr(message, "_exception", None))
