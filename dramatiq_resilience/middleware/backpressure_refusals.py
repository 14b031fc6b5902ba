"""Backpressure's refusals: a queue at emergency, and (optionally) an actor whose circuit is open.

The breaker's state comes from the CircuitBreaker's own in-process cache when it has
one (free in worker processes), else from one state-backend read per breaker
per ``cache_ms``.  Half-open breakers pass: their probes must find out
whether the dependency is back.  While the state backend is unreachable,
sends pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NoReturn

from dramatiq.broker import Broker
from dramatiq.errors import ActorNotFound

from .. import events
from ..backends.breaker import FORCED_OPEN, OPEN
from ..clock import Clock
from ..errors import BackendError, CircuitOpenOnSend, QueueOverloaded
from ..outage import OutageLog

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = ["BreakerGate", "announce", "refuse_overloaded"]


def announce(event: str, message: Any, queue_name: str, **fields: Any) -> None:
    """Emit a Backpressure decision about ``message``."""
    events.emit(
        event, queue_name=queue_name, actor_name=message.actor_name, message_id=message.message_id, **fields
    )


def refuse_overloaded(message: Any, queue_name: str, depth: int, threshold: int) -> NoReturn:
    """Refuse ``message``: its queue holds ``depth`` messages, at or past its emergency ``threshold``."""
    announce(
        "backpressure_refused",
        message,
        queue_name,
        reason="emergency",
        depth=depth,
        threshold=threshold,
        breaker=None,
    )
    raise QueueOverloaded(
        f"Queue {queue_name!r} holds {depth} messages, at or past its emergency threshold of "
        f"{threshold}: message {message.message_id!r} of actor {message.actor_name!r} was not sent.",
        queue_name=queue_name,
        depth=depth,
        threshold=threshold,
        actor_name=message.actor_name,
    )


class BreakerGate:
    """Refuses sends to actors whose breaker is open; answers cached ``cache_ms`` per breaker name.

    Parameters:
      clock: time for cache lifetimes.
      cache_ms: milliseconds an answer read from the backend is trusted.
      outage: where state-backend errors are logged (sends pass while it is down).
      logger: where a missing CircuitBreaker is reported.
    """

    def __init__(self, *, clock: Clock, cache_ms: int, outage: OutageLog, logger: logging.Logger) -> None:
        self.clock = clock
        self.cache_ms = cache_ms
        self.outage = outage
        self.logger = logger
        self._answers: dict[str, tuple[tuple[str, int] | None, int]] = {}
        self._breakers: tuple[Broker, CircuitBreaker | None] | None = None

    def check(self, broker: Broker, message: Any, queue_name: str) -> None:
        """Raise :class:`CircuitOpenOnSend` if the breaker ``message`` goes through is open."""
        breaker = self._circuit_breaker(broker)
        if breaker is None:
            return
        try:
            value = breaker.resolve_option(broker, message, "breaker")
        except ActorNotFound:
            value = breaker.breaker
        name = message.actor_name if value is True else None if value is False else str(value)
        found = self.open_state(breaker, name) if name is not None else None
        if found is None:
            return
        state, retry_after_ms = found
        announce(
            "backpressure_refused",
            message,
            queue_name,
            reason="breaker_open",
            depth=None,
            threshold=None,
            breaker=name,
        )
        raise CircuitOpenOnSend(
            f"Circuit {name!r} of actor {message.actor_name!r} is {state.replace('_', ' ')}"
            f"{f' for {retry_after_ms} more milliseconds' if retry_after_ms else ''}: "
            f"message {message.message_id!r} was not sent.",
            actor_name=message.actor_name,
            queue_name=queue_name,
            breaker=str(name),
            state=state,
            retry_after_ms=retry_after_ms,
        )

    def _circuit_breaker(self, broker: Broker) -> CircuitBreaker | None:
        found = self._breakers
        if found is None or found[0] is not broker:
            from .breaker import CircuitBreaker

            breaker = next((m for m in broker.middleware if isinstance(m, CircuitBreaker)), None)
            if breaker is None:
                self.logger.warning(
                    "backpressure_refuse_open_breaker is set but the broker has no CircuitBreaker: "
                    "sends are not checked against breakers."
                )
            found = self._breakers = (broker, breaker)
        return found[1]

    def open_state(self, breaker: CircuitBreaker, name: str) -> tuple[str, int] | None:
        """``(state, retry_after_ms)`` when breaker ``name`` is open or forced open, else ``None``."""
        admission = breaker.local.cached(name)  # free when this process's workers asked recently
        if admission is not None:
            if not admission.allowed and admission.state in (OPEN, FORCED_OPEN):
                return admission.state, admission.retry_after_ms
            return None
        now = self.clock.now_ms()
        known = self._answers.get(name)
        if known is not None and now < known[1]:
            return known[0]
        answer: tuple[str, int] | None = None
        lifetime = self.cache_ms
        try:
            status = breaker.backend.breaker_status(name, settings=breaker.settings(name))
        except BackendError as exc:
            self.outage.failed(exc, action="let sends to actors with open breakers through")
        else:
            self.outage.succeeded()
            if status.state == FORCED_OPEN or (status.state == OPEN and status.retry_after_ms > 0):
                answer = status.state, status.retry_after_ms
                if status.state == OPEN:
                    lifetime = min(lifetime, status.retry_after_ms)
        self._answers[name] = answer, now + lifetime
        return answer
