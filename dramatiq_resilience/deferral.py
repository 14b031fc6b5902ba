"""Deferral: put a message back for later without failing it.

"Defer" means: enqueue a copy of the message with a delay and without touching
``retries``, record the reason and count in its options, then skip (ack) the
original.  Every middleware defers through :func:`defer`, so the rules below
hold everywhere:

* The delay is exact (the moment a breaker half-opens, the moment a window slot
  frees) plus a non-negative jitter, so that thousands of deferred messages do
  not come back in the same millisecond, and none comes back early.
* A per-reason cap (``max_deferrals``) dead-letters a message deferred too
  often: it is marked failed and :class:`~dramatiq_resilience.errors.TooManyDeferrals`
  is raised, so the worker rejects it into the dead letters.
* If the copy cannot be enqueued (broker down), the original is *not* skipped:
  :class:`~dramatiq_resilience.errors.DeferralFailed` (a ``MiddlewareError``)
  sends it down Dramatiq's normal retry path, so nothing is lost.

Options written on the deferred copy:

``deferrals``        total times this message was deferred (int)
``deferral_counts``  times per reason (dict of reason to int)
``deferred_reason``  the latest reason (str)
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, NoReturn

from dramatiq.broker import Broker
from dramatiq.common import q_name

from . import events
from .enqueue import internal_enqueue
from .errors import DeferralFailed, Deferred, Rejected, TooManyDeferrals

__all__ = [
    "DEFAULT_JITTER_RATIO",
    "DEFAULT_MAX_JITTER",
    "DEFAULT_MIN_JITTER",
    "announce_rejection",
    "defer",
    "deferral_count",
    "jitter_for",
]

logger = logging.getLogger(__name__)

#: Jitter added to a deferral delay, as a fraction of the delay.
DEFAULT_JITTER_RATIO = 0.1

#: The smallest jitter window in milliseconds, so that short delays spread too.
DEFAULT_MIN_JITTER = 100

#: The largest jitter window in milliseconds.
DEFAULT_MAX_JITTER = 5_000

#: Options that belong to one delivery by one broker and must not be copied.
_DELIVERY_OPTIONS = ("eta", "redis_message_id")


def jitter_for(
    delay_ms: int,
    *,
    ratio: float = DEFAULT_JITTER_RATIO,
    minimum: int = DEFAULT_MIN_JITTER,
    maximum: int = DEFAULT_MAX_JITTER,
    rng: random.Random | None = None,
) -> int:
    """A random jitter in milliseconds in ``[0, clamp(delay * ratio, minimum, maximum)]``."""
    window = min(max(int(delay_ms * ratio), minimum), maximum)
    return (rng or random).randint(0, window) if window > 0 else 0


def announce_rejection(message: Any, error: Rejected) -> None:
    """Emit ``message_rejected`` for ``message``, dead-lettered without running for ``error``."""
    events.emit(
        "message_rejected",
        actor_name=message.actor_name,
        queue_name=q_name(message.queue_name),
        message_id=message.message_id,
        reason=error.reason,
        error=error,
    )


def deferral_count(message: Any, reason: str | None = None) -> int:
    """How many times ``message`` was deferred (for ``reason``, or in all)."""
    if reason is None:
        return int(message.options.get("deferrals") or 0)
    counts = message.options.get("deferral_counts") or {}
    return int(counts.get(reason, 0))


def defer(
    broker: Broker,
    message: Any,
    *,
    delay_ms: int,
    reason: str,
    jitter_ms: int | None = None,
    max_deferrals: int | None = None,
    rng: random.Random | None = None,
) -> NoReturn:
    """Defer ``message`` (a ``MessageProxy`` being processed) by ``delay_ms`` plus jitter.

    Call from ``before_process_message``.  Always raises:

    Raises:
      Deferred: the copy was enqueued; the original is skipped (acked).
      TooManyDeferrals: the cap for ``reason`` was reached; the message was
        marked failed and is dead-lettered.
      DeferralFailed: the copy could not be enqueued; the original fails into
        the retry path.

    Parameters:
      delay_ms: the exact delay in milliseconds until the message may run.
      reason: a short reason (``"circuit_open"``, ``"rate_limited"``...).
      jitter_ms: the jitter in milliseconds to add; by default
        :func:`jitter_for` picks one.
      max_deferrals: how many deferrals for ``reason`` are allowed; ``None``
        for no cap.
    """
    delay_ms = max(0, int(delay_ms))
    counts = dict(message.options.get("deferral_counts") or {})
    previous = int(counts.get(reason, 0))
    if max_deferrals is not None and previous >= max_deferrals:
        message.fail()
        error = TooManyDeferrals(
            f"Message {message.message_id!r} of actor {message.actor_name!r} was deferred "
            f"{previous} times for {reason!r}, the maximum allowed.",
            actor_name=message.actor_name,
            message_id=message.message_id,
            deferred_for=reason,
            deferrals=previous,
            max_deferrals=max_deferrals,
        )
        announce_rejection(message, error)
        raise error

    counts[reason] = previous + 1
    total = int(message.options.get("deferrals") or 0) + 1
    options = {key: value for key, value in message.options.items() if key not in _DELIVERY_OPTIONS}
    options.update(deferrals=total, deferral_counts=counts, deferred_reason=reason)
    # Message.copy() merges options; replace() lets us drop the delivery ones.
    copy = dataclasses.replace(
        getattr(message, "_message", message), queue_name=q_name(message.queue_name), options=options
    )

    jitter = jitter_for(delay_ms, rng=rng) if jitter_ms is None else max(0, int(jitter_ms))
    total_delay = delay_ms + jitter
    try:
        with internal_enqueue("deferral"):
            broker.enqueue(copy, delay=total_delay)
    except Exception as exc:
        logger.error(
            "Failed to defer message %r of actor %r for %r; it will be retried instead.",
            message.message_id,
            message.actor_name,
            reason,
            exc_info=True,
        )
        failure = DeferralFailed(
            f"Could not enqueue the deferred copy of message {message.message_id!r} ({reason}): {exc}",
            actor_name=message.actor_name,
            message_id=message.message_id,
            reason=reason,
        )
        events.emit(
            "deferral_failed",
            actor_name=message.actor_name,
            queue_name=q_name(message.queue_name),
            message_id=message.message_id,
            reason=reason,
            error=failure,
        )
        raise failure from exc

    logger.debug(
        "Deferred message %r of actor %r by %d milliseconds for %r (deferral %d).",
        message.message_id,
        message.actor_name,
        total_delay,
        reason,
        total,
    )
    events.emit(
        "message_deferred",
        actor_name=message.actor_name,
        queue_name=q_name(message.queue_name),
        message_id=message.message_id,
        reason=reason,
        delay_ms=total_delay,
        deferrals=total,
    )
    raise Deferred(
        f"Message {message.message_id!r} deferred by {total_delay} milliseconds ({reason}).",
        reason=reason,
        delay_ms=total_delay,
        deferrals=total,
    )
