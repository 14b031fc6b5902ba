"""Deduplication keys, payload fingerprints and stored messages.

* :func:`compute_key` calls an actor's ``dedup_key`` with the message's
  arguments *by name* (see :mod:`dramatiq_resilience.arguments`), so that
  ``dedup_key=lambda order_id, **_: f"charge:{order_id}"`` works however the
  message was sent (positionally or by keyword).
* :func:`fingerprint` is a stable hash of (actor, arguments by name): canonical
  JSON (sorted keys, no whitespace; tuples and lists alike) through SHA-256.
  Arguments that are not JSON (possible only with a non-JSON broker encoder)
  get no fingerprint, and so no payload check.
* :func:`pack_message` / :func:`unpack_message` store a message as msgpack of
  ``Message.asdict()`` (never pickle), for unique enqueue to hand back the
  original.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import msgpack
from dramatiq import Message
from dramatiq.common import q_name

from ..arguments import Arguments, call_key

__all__ = [
    "MAX_KEY_LENGTH",
    "Arguments",
    "compute_key",
    "fingerprint",
    "key_option",
    "pack_message",
    "unpack_message",
]

#: The longest deduplication key accepted, in characters.
MAX_KEY_LENGTH = 1_000

#: Options that belong to one delivery by one broker; not stored.
_DELIVERY_OPTIONS = ("eta", "redis_message_id")


def _check_key(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        text = repr(value)
        raise ValueError(
            f"{what} a non-empty string or None, got {text[:57] + '...' if len(text) > 60 else text}"
        )
    if "{" in value or "}" in value:
        raise ValueError(
            f"{what} a string without '{{' or '}}' (they would break its hash tag), got {value!r}"
        )
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"{what} a string of at most {MAX_KEY_LENGTH} characters, got {len(value)}")
    return value


def key_option(value: Any) -> Any:
    """The ``dedup_key`` option: ``None`` (off), a key function, or a constant key string."""
    if value is None or callable(value):
        return value
    return _check_key(value, "must be a function of the actor's arguments,")


def compute_key(key: Any, arguments: Arguments) -> str | None:
    """The deduplication key of a message, or ``None`` for "don't deduplicate this one".

    Raises:
      ValueError: the key function's result is unusable (the message says why).
      Exception: whatever the key function raised.
    """
    if key is None or isinstance(key, str):
        return key
    value = call_key(key, arguments)
    return None if value is None else _check_key(value, "must return")


def fingerprint(actor_name: str, arguments: Arguments) -> str:
    """A stable hash of the actor's name and arguments, or ``""`` if they are not JSON.

    The arguments are taken by name (bound to the actor's signature, defaults
    applied) where they can be, so ``charge("o-1", 5)`` and
    ``charge(order_id="o-1", amount=5)`` have the same fingerprint.
    """
    named = arguments.named
    data: Any = named if named is not None else [list(arguments.args), dict(arguments.kwargs)]
    try:
        text = json.dumps([actor_name, data], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return ""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def pack_message(message: Any) -> bytes | None:
    """msgpack of ``message.asdict()`` without delivery options; ``None`` if it does not pack."""
    fields = dict(message.asdict())
    fields["queue_name"] = q_name(fields["queue_name"])
    fields["options"] = {k: v for k, v in fields["options"].items() if k not in _DELIVERY_OPTIONS}
    try:
        return bytes(msgpack.packb(fields, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return None


def unpack_message(fields: Mapping[str, Any] | None) -> Message[Any] | None:
    """Rebuild a ``dramatiq.Message`` from a stored ``asdict()`` mapping."""
    if not fields:
        return None
    try:
        return Message(
            queue_name=fields["queue_name"],
            actor_name=fields["actor_name"],
            args=tuple(fields.get("args") or ()),
            kwargs=dict(fields.get("kwargs") or {}),
            options=dict(fields.get("options") or {}),
            message_id=fields["message_id"],
            message_timestamp=int(fields.get("message_timestamp") or 0),
        )
    except (KeyError, TypeError, ValueError):
        return None
