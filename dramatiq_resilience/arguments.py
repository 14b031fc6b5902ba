"""An actor's arguments by name, for the key functions of every middleware.

Key functions (``dedup_key``, a ``Limit``'s or a ``Concurrency``'s ``key``)
receive the message's arguments *by name*, bound to the actor's signature
with its defaults applied, so that ``key=lambda order_id, tenant, **_:
tenant`` works however the message was sent (positionally or by keyword).
A key function that does not accept the arguments by name, or that takes
``*args`` (written for positional calls: ``lambda *args, **kwargs:
args[0]``), is called like the actor, ``key(*args, **kwargs)``.
Signatures and bindings are cached, so the common case costs a dict build
per message.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Arguments", "call_key"]


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
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        return False  # written for positional calls (``lambda *args, **kwargs: args[0]``)
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


def call_key(key: Callable[..., Any], arguments: Arguments) -> Any:
    """Call ``key`` with the arguments by name if it accepts them, else as the actor was called."""
    named = arguments.named
    if named is not None and _accepts(key, tuple(named)):
        return key(**named)
    return key(*arguments.args, **arguments.kwargs)
