"""Deduplication keys, payload fingerprints and stored messages.

* :func:`compute_key` calls an actor's ``dedup_key`` with the message's
  arguments *by name*, bound to the actor's signature, so that
  ``dedup_key=lambda order_id, **_: f"charge:{order_id}"`` works however the
  message was sent (positionally or by keyword).  A key function that does not
  accept the arguments by name is called like the actor, ``key(*args, **kwargs)``.
* :func:`fingerprint` is a stable hash of (actor, arguments by name): canonical
  JSON (sorted keys, no whitespace; tuples and lists alike) through SHA-256.
  Arguments that are not JSON (possible only with a non-JSON broker encoder)
  get no fingerprint, and so no payload check.
* :func:`pack_message` / :func:`unpack_message` store a message as msgpack of
  ``Message.asdict()`` (never pickle), for unique enqueue to hand back the
  original.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack
from dramatiq import Message
from dramatiq.common import q_name

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


def _uncached_signature(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


_cached_signature = functools.lru_cache(maxsize=1_024)(_uncached_signature)


def _signature(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return _cached_signature(function)
    except TypeError:  # an unhashable callable
        return _uncached_signature(function)


_SIMPLE = inspect.Parameter.POSITIONAL_OR_KEYWORD


@functools.lru_cache(maxsize=1_024)
def _plan(function: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """Parameter names and defaults of a function whose parameters are all plain; else ``None``."""
    signature = _signature(function)
    if signature is None or any(p.kind is not _SIMPLE for p in signature.parameters.values()):
        return None
    parameters = signature.parameters.values()
    return tuple(p.name for p in parameters), {
        p.name: p.default for p in parameters if p.default is not p.empty
    }


def _bind(
    actor_fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The actor's arguments by parameter name, defaults applied; ``None`` if they cannot be named."""
    try:
        plan = _plan(actor_fn)
    except TypeError:  # an unhashable callable
        plan = None
    if plan is not None:  # the common case, without inspect's bind()
        names, defaults = plan
        named = {**defaults, **dict(zip(names, args, strict=False)), **kwargs}
        if len(args) <= len(names) and len(named) == len(names) and not set(kwargs) & set(names[: len(args)]):
            return named
        return None
    signature = _signature(actor_fn)
    if signature is None:
        return None
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    named = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                return None
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


class Arguments:
    """A message's arguments, bound once to the actor's signature (``named``, or ``None``)."""

    __slots__ = ("args", "kwargs", "named")

    def __init__(self, actor_fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs
        self.named = _bind(actor_fn, args, kwargs)


def _uncached_accepts(key: Callable[..., Any], names: tuple[str, ...]) -> bool:
    signature = _signature(key)
    if signature is None:
        return False
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError:
        return False
    return True


_cached_accepts = functools.lru_cache(maxsize=1_024)(_uncached_accepts)


def _accepts(key: Callable[..., Any], names: tuple[str, ...]) -> bool:
    """Whether ``key`` can be called with these keyword arguments."""
    try:
        return _cached_accepts(key, names)
    except TypeError:  # an unhashable callable
        return _uncached_accepts(key, names)


def compute_key(key: Any, arguments: Arguments) -> str | None:
    """The deduplication key of a message, or ``None`` for "don't deduplicate this one".

    Raises:
      ValueError: the key function's result is unusable (the message says why).
      Exception: whatever the key function raised.
    """
    if key is None or isinstance(key, str):
        return key
    named = arguments.named
    if named is not None and _accepts(key, tuple(named)):
        value = key(**named)
    else:
        value = key(*arguments.args, **arguments.kwargs)
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
