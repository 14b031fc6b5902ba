"""Redaction: keep secrets out of dead-letter records, logs and error reports.

An actor lists the argument names to hide with the ``dead_letter_redact``
actor option (or the ``DeadLetters(redact=...)`` default)::

    @dramatiq.actor(dead_letter_redact=["card", "password"])
    def charge(order_id, card): ...

A name matches, case-insensitively, a keyword argument, a positional argument
bound to that parameter name, and a key of any dict nested inside the
arguments or the message options; the value is stored as ``"[redacted]"``.
Redacted values are gone for good: a record with redactions is not requeued
unless asked to (``allow_redacted=True``), since the actor would receive
``"[redacted]"``.

Other pieces (logs, Sentry) use :func:`redaction_keys` and :func:`redact` so
that the same names are hidden everywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from dramatiq.broker import Broker

__all__ = ["REDACTED", "RedactedMessage", "redact", "redact_message", "redaction_keys", "redaction_names"]

#: What a redacted value is replaced with.
REDACTED = "[redacted]"

#: The actor option naming what to redact.
OPTION = "dead_letter_redact"


def redaction_names(value: Any) -> tuple[str, ...]:
    """Check a ``dead_letter_redact`` value: a list of non-empty names; returns them as a tuple."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"must be a list of argument or key names, got {value!r}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"must be a list of non-empty strings, got {name!r} in it")
    return names


def redact(value: Any, keys: Collection[str], *, path: str = "", found: list[str] | None = None) -> Any:
    """A copy of ``value`` where every dict key in ``keys`` (case-insensitive) holds ``"[redacted]"``.

    Dicts, lists and tuples are walked recursively; other values are
    returned as they are.  The dotted paths of redacted values are appended
    to ``found`` when it is given.
    """
    wanted = {key.lower() for key in keys}
    if not wanted:
        return value
    return _walk(value, wanted, path, found)


def _walk(value: Any, wanted: set[str], path: str, found: list[str] | None) -> Any:
    if isinstance(value, Mapping):
        copy: dict[Any, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and key.lower() in wanted:
                copy[key] = REDACTED
                if found is not None:
                    found.append(where)
            else:
                copy[key] = _walk(item, wanted, where, found)
        return copy
    if isinstance(value, (list, tuple)):
        items = [_walk(item, wanted, f"{path}[{n}]", found) for n, item in enumerate(value)]
        return type(value)(items) if isinstance(value, tuple) else items
    return value


class RedactedMessage:
    """The redacted parts of a message: ``args``, ``kwargs``, ``options`` and the ``paths`` hidden."""

    __slots__ = ("args", "kwargs", "options", "paths")

    def __init__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any], paths: list[str]
    ) -> None:
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.paths = paths


def redact_message(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    keys: Collection[str],
    *,
    fn: Callable[..., Any] | None = None,
) -> RedactedMessage:
    """Redact a message's arguments and options.

    ``fn`` (the actor's function) lets positional arguments be matched by
    their parameter name: ``charge("o-1", "4242...")`` with ``card`` redacted
    hides the second argument, reported as ``args[1](card)``.
    """
    paths: list[str] = []
    wanted = {key.lower() for key in keys}
    if not wanted:
        return RedactedMessage(tuple(args), dict(kwargs), dict(options), paths)
    names = _parameter_names(fn, len(args))
    new_args = []
    for n, value in enumerate(args):
        name = names[n] if n < len(names) else None
        if name is not None and name.lower() in wanted:
            new_args.append(REDACTED)
            paths.append(f"args[{n}]({name})")
        else:
            new_args.append(_walk(value, wanted, f"args[{n}]", paths))
    new_kwargs = _walk(dict(kwargs), wanted, "kwargs", paths)
    new_options = _walk(dict(options), wanted, "options", paths)
    return RedactedMessage(tuple(new_args), new_kwargs, new_options, paths)


def _parameter_names(fn: Callable[..., Any] | None, count: int) -> list[str | None]:
    if fn is None or count == 0:
        return []
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []
    names: list[str | None] = []
    for parameter in parameters:
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
        elif parameter.kind is parameter.VAR_POSITIONAL:
            break
    return names


def redaction_keys(broker: Broker, actor_name: str, default: Collection[str] = ()) -> tuple[str, ...]:
    """The names to redact for ``actor_name``: its ``dead_letter_redact`` option, else ``default``.

    When ``default`` is empty and the broker has a ``DeadLetters`` middleware,
    its ``redact`` default applies.  An unknown actor gets ``default``.
    """
    try:
        actor = broker.get_actor(actor_name)
    except Exception:
        actor = None
    if actor is not None and OPTION in actor.options:
        return tuple(actor.options[OPTION])
    if default:
        return tuple(default)
    for middleware in broker.middleware:
        configured = getattr(middleware, "redact", None)
        if type(middleware).__name__ == "DeadLetters" and configured:
            return tuple(configured)
    return ()
