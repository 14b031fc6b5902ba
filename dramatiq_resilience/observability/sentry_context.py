"""The context of a final failure as the Sentry reporter sends it: tags, the redacted message, secrets."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from dramatiq.common import q_name

from ..dead_letters.redaction import REDACTED, redact_message
from ..errors import BackendError

__all__ = [
    "EventMessage",
    "RecordMessage",
    "breaker_state",
    "failure_context",
    "failure_tags",
    "secret_values",
]

#: Options not worth sending (Retries keeps the last traceback there; the event has it).
_SKIPPED_OPTIONS = ("traceback",)

#: Shorter secrets are not searched for in the event's text (they would match everywhere).
MIN_SECRET_LENGTH = 4


class RecordMessage:
    """The message of a dead-letter record, shaped like a Dramatiq message (redacted already)."""

    def __init__(self, record: Any) -> None:
        self.message_id = record.message_id
        self.queue_name = record.queue_name
        self.actor_name = record.actor_name
        self.args = record.args
        self.kwargs = record.kwargs
        self.options = record.options


class EventMessage:
    """What a ``dead_letter_capture_failed`` event says of its message."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.message_id = fields.get("message_id")
        self.queue_name = fields.get("queue_name") or ""
        self.actor_name = fields.get("actor_name") or ""
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}
        self.options: dict[str, Any] = {}


def breaker_state(broker: Any, message: Any) -> str:
    """The state of the breaker ``message`` goes through (``"none"`` without one; ``"unknown"``
    when the backend cannot say)."""
    from ..breakers import BreakerSettings
    from ..middleware.breaker import CircuitBreaker

    breaker = next((m for m in broker.middleware if isinstance(m, CircuitBreaker)), None)
    actor = broker.actors.get(message.actor_name)
    if breaker is None or actor is None:
        return "none"
    value = message.options.get("breaker", actor.options.get("breaker", breaker.breaker))
    if value is False:
        return "none"
    name = message.actor_name if value is True else str(value)
    try:
        return str(breaker.backend.breaker_status(name, settings=BreakerSettings()).state)
    except BackendError:
        return "unknown"


def failure_tags(
    broker: Any, message: Any, *, record: Any, retries: Any, category: str | None
) -> dict[str, Any]:
    """The tags of a final failure's event."""
    return {
        "actor": message.actor_name,
        "queue": q_name(message.queue_name),
        "retries": retries,
        "dead_letter_id": record.record_id if record is not None else "",
        "category": category or "",
        "breaker_state": breaker_state(broker, message),
    }


def failure_context(
    broker: Any, message: Any, *, record: Any, keys: Collection[str], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``dead_letter`` context: the message (redacted), and the record's facts when there is one."""
    if record is not None:
        args, kwargs, options = record.args, record.kwargs, record.options
    else:
        actor = broker.actors.get(message.actor_name)
        hidden = redact_message(
            message.args, message.kwargs, message.options, keys, fn=getattr(actor, "fn", None)
        )
        args, kwargs, options = hidden.args, hidden.kwargs, hidden.options
    context: dict[str, Any] = {
        "message_id": message.message_id,
        "queue_name": message.queue_name,
        "actor_name": message.actor_name,
        "args": list(args),
        "kwargs": dict(kwargs),
        "options": {k: v for k, v in options.items() if k not in _SKIPPED_OPTIONS},
        **(extra or {}),
    }
    if record is not None:
        context.update(
            record_id=record.record_id,
            category=record.category,
            attempts=record.attempts,
            first_failure_at=record.first_failure_at,
            last_failure_at=record.last_failure_at,
            redrives=record.redrive_count,
            redacted=list(record.redacted),
        )
    return context


def secret_values(value: Any, keys: Collection[str], *, fn: Any = None) -> set[str]:
    """The texts of the values that redaction hides in ``value`` (``(args, kwargs)`` or any mapping).

    ``args`` are matched by parameter name through ``fn`` as for dead-letter
    records.  Only texts of at least :data:`MIN_SECRET_LENGTH` characters are kept.
    """
    wanted = {key.lower() for key in keys}
    found: set[str] = set()

    def leaves(item: Any) -> None:
        if isinstance(item, Mapping):
            for inner in item.values():
                leaves(inner)
        elif isinstance(item, (list, tuple, set)):
            for inner in item:
                leaves(inner)
        elif item is not None and not isinstance(item, bool):
            text = str(item)
            if len(text) >= MIN_SECRET_LENGTH:
                found.update((text, repr(item)))

    def walk(item: Any) -> None:
        if isinstance(item, Mapping):
            for name, inner in item.items():
                (leaves if isinstance(name, str) and name.lower() in wanted else walk)(inner)
        elif isinstance(item, (list, tuple)):
            for inner in item:
                walk(inner)

    if not wanted:
        return found
    args, kwargs = value if isinstance(value, tuple) else ((), value)
    hidden = redact_message(args, kwargs, {}, keys, fn=fn)
    for original, redacted in zip(args, hidden.args, strict=True):
        if redacted == REDACTED and original != REDACTED:
            leaves(original)
        else:
            walk(original)
    walk(kwargs)
    return found
