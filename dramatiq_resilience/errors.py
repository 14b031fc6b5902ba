"""Every exception type raised by dramatiq-resilience.

One hierarchy under :class:`ResilienceError`.  Errors that are raised from
Dramatiq ``before_*`` hooks also subclass
:class:`dramatiq.middleware.MiddlewareError`, because Dramatiq swallows (and only
logs) anything else raised there.  Errors that mean "dead-letter this message
without running it" subclass :class:`dramatiq.middleware.SkipMessage`, the idiom
Dramatiq's own ``AgeLimit`` uses: the middleware marks the message failed and
raises, and the worker rejects it instead of running the actor.

Errors carry their context as attributes (``actor_name``, ``breaker``,
``retry_after_ms``, ``existing_message_id``...), like redis-py's ``LockError``.
"""

from __future__ import annotations

from typing import Any

from dramatiq.middleware import MiddlewareError, SkipMessage

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "CircuitOpen",
    "CircuitOpenOnSend",
    "ConfigurationError",
    "CorruptDedupRecord",
    "CorruptRecord",
    "DeferralFailed",
    "Deferred",
    "DepthUnavailable",
    "DuplicateMessage",
    "DuplicateSkipped",
    "IdempotencyConflict",
    "InvalidMessage",
    "LeaseLost",
    "QueueOverloaded",
    "Rejected",
    "ResilienceError",
    "TooManyDeferrals",
    "UniqueEnqueueUnavailable",
    "UnknownJob",
]


class ResilienceError(Exception):
    """Base class for every error raised by dramatiq-resilience."""


class ConfigurationError(ResilienceError, MiddlewareError, ValueError):
    """A bad option, cron expression, key function result or URL.

    Raised when an actor is declared with a bad option value (Dramatiq only lets
    ``MiddlewareError`` subclasses escape ``before_declare_actor``), when a
    middleware is constructed with bad defaults, and when a per-message option
    or a key function returns something unusable.

    Attributes:
      problem: what was wrong, as a sentence fragment.
      actor_name: the actor concerned, if any.
      option: the option concerned, if any.
      job: the scheduled job concerned, if any.
    """

    def __init__(
        self,
        problem: str,
        *,
        actor_name: str | None = None,
        option: str | None = None,
        job: str | None = None,
    ) -> None:
        self.problem = problem
        self.actor_name = actor_name
        self.option = option
        self.job = job
        where = []
        if actor_name is not None:
            where.append(f"actor {actor_name!r}")
        if job is not None:
            where.append(f"job {job!r}")
        if option is not None:
            where.append(f"option {option!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix[:1].upper()}{prefix[1:]}: {problem}" if prefix else problem)


class BackendError(ResilienceError):
    """The state backend failed to perform an operation."""


class BackendUnavailable(BackendError):
    """The state backend could not be reached (connection refused, timeout...).

    Middlewares handle it according to their ``on_backend_error`` choice.
    """


class CorruptRecord(BackendError):
    """A stored record could not be decoded.

    Attributes:
      key: the storage key (or record id) of the unreadable record.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class DeferralFailed(ResilienceError, MiddlewareError):
    """The deferred copy of a message could not be enqueued.

    Raised from ``before_process_message`` so that the original message is not
    acked as skipped: it fails into Dramatiq's normal retry path instead, and
    nothing is lost.

    Attributes:
      actor_name, message_id, reason: which message could not be deferred and why
      it was being deferred.
    """

    def __init__(self, message: str, *, actor_name: str, message_id: str, reason: str) -> None:
        super().__init__(message)
        self.actor_name = actor_name
        self.message_id = message_id
        self.reason = reason


class Deferred(ResilienceError, SkipMessage):
    """Raised from ``before_process_message`` after a message was deferred.

    The deferred copy is already enqueued; raising this skips (acks) the
    original without running the actor and without touching ``retries``.

    Attributes:
      reason: why it was deferred (``"circuit_open"``, ``"rate_limited"``...).
      delay_ms: how long the copy waits before it is delivered again.
      deferrals: how many times this message has now been deferred in all.
    """

    def __init__(self, message: str, *, reason: str, delay_ms: int, deferrals: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.delay_ms = delay_ms
        self.deferrals = deferrals


class Rejected(ResilienceError, SkipMessage):
    """A resilience decision dead-letters a message without running it.

    The middleware marks the message failed before raising, so the worker
    rejects it and the dead-letter store records it with category
    ``rejected``.

    Attributes:
      actor_name, message_id: the message concerned.
      reason: a short machine-readable reason (``"too_many_deferrals"``...).
    """

    reason = "rejected"

    def __init__(self, message: str, *, actor_name: str, message_id: str, **context: Any) -> None:
        super().__init__(message)
        self.actor_name = actor_name
        self.message_id = message_id
        for name, value in context.items():
            setattr(self, name, value)


class InvalidMessage(Rejected):
    """A message carries a bad option value, or a key function failed on its arguments.

    Retrying would fail the same way, so the message is dead-lettered at once
    with this error, which names the actor, the option and the problem.

    Attributes:
      option: the option (or key function's option) concerned.
      problem: what was wrong.
    """

    reason = "invalid_message"
    option: str
    problem: str


class TooManyDeferrals(Rejected):
    """A message was deferred more often than its ``*_max_deferrals`` cap allows.

    Attributes:
      deferred_for: the deferral reason whose cap was reached.
      deferrals: how many times it was deferred for that reason.
      max_deferrals: the cap.
    """

    reason = "too_many_deferrals"
    deferred_for: str
    deferrals: int
    max_deferrals: int


class CircuitOpen(Rejected):
    """A message reached an open circuit whose actor says ``breaker_on_open="fail"``.

    Attributes:
      breaker: the breaker's name.
      retry_after_ms: milliseconds until the breaker half-opens.
    """

    reason = "circuit_open"
    breaker: str
    retry_after_ms: int


class IdempotencyConflict(Rejected):
    """A deduplication key was reused with different arguments.

    Attributes:
      key: the deduplication key.
      existing_message_id: the message that holds the key.
    """

    reason = "idempotency_conflict"
    key: str
    existing_message_id: str


class CorruptDedupRecord(Rejected):
    """A message's deduplication record is unusable (e.g. its Redis key holds another type).

    Not an outage: waiting would not repair it.  The message is dead-lettered
    without running; once the record is deleted (``dramatiq-resilience dedup
    forget KEY``) it can be requeued from the dead letters.

    Attributes:
      key: the deduplication key.
      problem: what is wrong with its record.
    """

    reason = "corrupt_record"
    key: str
    problem: str


class DuplicateMessage(ResilienceError, MiddlewareError):
    """``send`` refused a message whose unique-enqueue key is already taken.

    Attributes:
      actor_name: the actor the message was sent to.
      key: the deduplication key.
      existing_message_id: the id of the message that holds the key.
      existing_message: that message (a ``dramatiq.Message``) when it is
        known, else ``None``.
      state: the key's state: ``"pending"``, ``"in_progress"`` or ``"completed"``.
      conflict: whether the holder was sent with different arguments.
    """

    def __init__(
        self,
        message: str,
        *,
        actor_name: str,
        key: str,
        existing_message_id: str,
        existing_message: Any = None,
        state: str | None = None,
        conflict: bool = False,
    ) -> None:
        super().__init__(message)
        self.actor_name = actor_name
        self.key = key
        self.existing_message_id = existing_message_id
        self.existing_message = existing_message
        self.state = state
        self.conflict = conflict


class DuplicateSkipped(ResilienceError, SkipMessage):
    """A message whose deduplication key already completed was skipped (acked, not run).

    Attributes:
      key: the deduplication key.
      existing_message_id: the message that completed it.
    """

    def __init__(self, message: str, *, key: str, existing_message_id: str) -> None:
        super().__init__(message)
        self.key = key
        self.existing_message_id = existing_message_id


class LeaseLost(ResilienceError):
    """A deduplication claim was lost: its lease ran out and another message took the key.

    Raised inside an actor by ``Claim.commit()``, whose writes are then not
    applied.  The actor fails into the normal retry path; the retry finds the
    key completed (and is skipped) or still running (and is deferred).

    Attributes:
      key: the deduplication key.
      message_id: the message that lost it.
    """

    def __init__(self, message: str, *, key: str, message_id: str) -> None:
        super().__init__(message)
        self.key = key
        self.message_id = message_id


class UniqueEnqueueUnavailable(BackendUnavailable, MiddlewareError):
    """A unique enqueue was refused because the state backend could not be reached.

    Raised from ``send`` when ``Deduplication(on_enqueue_backend_error="refuse")``.

    Attributes:
      actor_name: the actor the message was sent to.
      key: the deduplication key.
    """

    def __init__(self, message: str, *, actor_name: str, key: str) -> None:
        super().__init__(message)
        self.actor_name = actor_name
        self.key = key


class QueueOverloaded(ResilienceError, MiddlewareError):
    """``send`` refused a message because its queue's depth reached its emergency threshold.

    Raised by :class:`~dramatiq_resilience.Backpressure`; retries, deferrals,
    delayed-message moves, scheduler sends and redrives are never refused.

    Attributes:
      queue_name: the canonical queue name.
      depth: the queue depth that was observed.
      threshold: the emergency threshold it reached.
      actor_name: the actor the message was sent to, if known.
    """

    def __init__(
        self, message: str, *, queue_name: str, depth: int, threshold: int, actor_name: str | None = None
    ) -> None:
        super().__init__(message)
        self.queue_name = queue_name
        self.depth = depth
        self.threshold = threshold
        self.actor_name = actor_name


class CircuitOpenOnSend(ResilienceError, MiddlewareError):
    """``send`` refused a message because its actor's circuit breaker is open.

    Raised by :class:`~dramatiq_resilience.Backpressure` for actors with
    ``backpressure_refuse_open_breaker=True``.

    Attributes:
      actor_name: the actor the message was sent to.
      queue_name: the canonical queue name.
      breaker: the breaker's name.
      state: ``"open"`` or ``"forced_open"``.
      retry_after_ms: milliseconds until the breaker half-opens (0 when forced open).
    """

    def __init__(
        self, message: str, *, actor_name: str, queue_name: str, breaker: str, state: str, retry_after_ms: int
    ) -> None:
        super().__init__(message)
        self.actor_name = actor_name
        self.queue_name = queue_name
        self.breaker = breaker
        self.state = state
        self.retry_after_ms = retry_after_ms


class DepthUnavailable(ResilienceError):
    """A queue's depth could not be read from the broker.

    Backpressure lets sends through while it cannot read a depth (and logs
    it once per outage); ``Backpressure.status()`` and the CLI report it.

    Attributes:
      queue_name: the canonical queue name.
    """

    def __init__(self, message: str, *, queue_name: str) -> None:
        super().__init__(message)
        self.queue_name = queue_name


class UnknownJob(ResilienceError, LookupError):
    """No scheduler ever registered a cron job of that name (enable, disable, run-now).

    Attributes:
      job: the name asked for.
      known: the names of the registered jobs.
    """

    def __init__(self, message: str, *, job: str, known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.job = job
        self.known = known
