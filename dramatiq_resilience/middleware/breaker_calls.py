"""What the CircuitBreaker keeps per delivery, and which outcomes count."""

from __future__ import annotations

from dataclasses import dataclass

from dramatiq.errors import RateLimitExceeded
from dramatiq.middleware import Interrupt, MiddlewareError, TimeLimitExceeded

from ..breakers import BreakerSettings

__all__ = ["Call", "outcome_of"]


@dataclass(frozen=True)
class Call:
    """What the breaker took for one delivery (``scratch(message, "breaker")["call"]``).

    Attributes:
      name, settings: the breaker and its settings.
      epoch: the breaker's epoch the call was admitted in.
      probe: whether it holds a probe permit.
      started: local milliseconds when it was admitted.
      admitted_at: backend milliseconds of the check that admitted it, or
        ``None`` when the process's cache did.
    """

    name: str
    settings: BreakerSettings
    epoch: int
    probe: bool
    started: int
    admitted_at: int | None


def outcome_of(
    exception: BaseException,
    *,
    ignore: tuple[type[BaseException], ...],
    record: tuple[type[BaseException], ...] | None,
    throws: tuple[type[BaseException], ...] | type[BaseException] | None,
) -> str:
    """How a call that raised ``exception`` counts: ``failure``, ``success`` or ``ignored``.

    ``ignored`` (neither) when it says nothing about the dependency: a refusal
    by a later middleware (a ``MiddlewareError``: the actor did not run), a
    Dramatiq rate limit, a shutdown interrupt, one of ``ignore``.  With
    ``record``, only those types are failures and others successes
    (resilience4j's rule); without it, the actor's ``throws`` are ignored and
    anything else, a time limit exceeded included, is a failure.
    """
    if isinstance(exception, (MiddlewareError, RateLimitExceeded)) or (
        isinstance(exception, Interrupt) and not isinstance(exception, TimeLimitExceeded)
    ):
        return "ignored"
    if isinstance(exception, ignore):
        return "ignored"
    if record is not None:
        return "failure" if isinstance(exception, record) else "success"
    if throws and isinstance(exception, throws):
        return "ignored"
    return "failure"
