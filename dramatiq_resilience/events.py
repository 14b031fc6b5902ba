"""In-process events: every resilience decision is announced here.

Middlewares, the dead-letter store and the scheduler call :func:`emit` when
they decide something (a message deferred, a breaker opened, a duplicate
skipped...).  Metrics, Sentry reporting and users' own code subscribe with
:func:`subscribe`.  A listener that raises is logged and never breaks the
decision that emitted the event.

Events emitted by the foundation (later pieces add their own and list them in
the README's reference):

=====================  =========================================================
``message_deferred``   actor_name, queue_name, message_id, reason, delay_ms,
                       deferrals
``message_rejected``   actor_name, queue_name, message_id, reason, error
``deferral_failed``    actor_name, queue_name, message_id, reason, error
``backend_error``      component, error, first (True for an outage's first)
``backend_recovered``  component, outage_ms, errors
=====================  =========================================================
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "emit", "listening", "subscribe", "unsubscribe"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """An event: its ``name`` and its ``fields``."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


Listener = Callable[[Event], None]

_lock = threading.Lock()
_listeners: dict[str, tuple[Listener, ...]] = {}


def subscribe(name: str, listener: Listener) -> Listener:
    """Call ``listener(event)`` for every event called ``name`` (``"*"`` for all).

    Returns the listener, so this can be used as a decorator factory's target.
    """
    with _lock:
        _listeners[name] = (*_listeners.get(name, ()), listener)
    return listener


def unsubscribe(name: str, listener: Listener) -> None:
    """Stop calling ``listener`` for ``name``.  Unknown listeners are ignored.

    Listeners compare by equality, so ``unsubscribe(name, items.append)`` undoes
    ``subscribe(name, items.append)`` although each ``items.append`` is a new
    bound-method object.
    """
    with _lock:
        remaining = tuple(item for item in _listeners.get(name, ()) if item != listener)
        if remaining:
            _listeners[name] = remaining
        else:
            _listeners.pop(name, None)


def listening(name: str) -> bool:
    """Whether an event called ``name`` has listeners (to skip building its fields on hot paths)."""
    return name in _listeners or "*" in _listeners


def emit(name: str, **fields: Any) -> None:
    """Announce an event to its listeners and to ``"*"`` listeners."""
    listeners = _listeners.get(name, ()) + _listeners.get("*", ())
    if not listeners:
        return
    event = Event(name, fields)
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            logger.exception("Event listener %r failed on event %r.", listener, name)
