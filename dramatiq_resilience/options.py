"""Option lookup and validation, the Dramatiq way.

Constructor keywords set a middleware's defaults; actor options override them;
message options override the actor for plain values (callables such as key
functions are actor options only, because message options are serialized).

Lookup is by *presence*, never by truthiness: an option set to ``0`` or
``None`` is honoured (Dramatiq's ``age_limit.py`` uses ``or`` and loses an
explicit ``0``; we don't).  Where an option allows ``None`` it means "off".

Every option has a checker that normalizes a value or raises ``ValueError``
with a sentence fragment saying what was wrong.  Values are checked when the
middleware is built (constructor defaults), when an actor is declared (actor
options), and when a message is processed (message options).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "Option",
    "boolean",
    "callable_",
    "choice",
    "exception_types",
    "fraction",
    "lookup",
    "milliseconds",
    "non_negative_int",
    "optional",
    "positive_int",
    "string",
    "validate_actor_options",
]

Checker = Callable[[Any], Any]


@dataclass(frozen=True)
class Option:
    """One actor option of a middleware.

    Parameters:
      name: the actor option name, prefixed by middleware (``breaker_cooldown``).
      attr: the middleware attribute that holds the constructor default.
      check: normalizes a value or raises ``ValueError(problem)``.
      per_message: whether a message option may override the actor's value.
        Only plain (serializable) values may be per-message.
    """

    name: str
    attr: str
    check: Checker
    per_message: bool = True

    def validate(self, value: Any, *, actor_name: str | None = None) -> Any:
        """Return the normalized ``value`` or raise :class:`ConfigurationError`."""
        try:
            return self.check(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(str(exc), actor_name=actor_name, option=self.name) from None


def lookup(
    option: Option,
    *,
    message_options: Mapping[str, Any] | None,
    actor_options: Mapping[str, Any],
    default: Any,
    actor_name: str | None = None,
) -> Any:
    """Resolve ``option``: message > actor > default, by presence.

    Message values are validated here (they were never seen before);
    actor values were validated at declaration and defaults at construction.

    Raises:
      ConfigurationError: if the message carries a bad value.
    """
    if option.per_message and message_options is not None and option.name in message_options:
        return option.validate(message_options[option.name], actor_name=actor_name)
    if option.name in actor_options:
        return actor_options[option.name]
    return default


def validate_actor_options(
    options: Iterable[Option], actor_options: dict[str, Any], *, actor_name: str
) -> None:
    """Check and normalize, in place, every option of ``options`` set on an actor.

    Raises:
      ConfigurationError: naming the actor, the option and the problem.
    """
    for option in options:
        if option.name in actor_options:
            actor_options[option.name] = option.validate(actor_options[option.name], actor_name=actor_name)


# Checkers.  Each returns the normalized value or raises ValueError with a
# fragment that completes "Actor 'x', option 'y': ...".


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int_like(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be {what}, got {_describe(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ValueError(f"must be {what}, got {_describe(value)}")
    return int(value)


def positive_int(value: Any) -> int:
    """An integer >= 1."""
    number = _int_like(value, "a positive integer")
    if number < 1:
        raise ValueError(f"must be a positive integer, got {_describe(value)}")
    return number


def non_negative_int(value: Any) -> int:
    """An integer >= 0."""
    number = _int_like(value, "an integer >= 0")
    if number < 0:
        raise ValueError(f"must be an integer >= 0, got {_describe(value)}")
    return number


def milliseconds(*, minimum: int = 1) -> Checker:
    """A duration in milliseconds (an int, or a ``datetime.timedelta``), >= ``minimum``."""

    def check(value: Any) -> int:
        if isinstance(value, datetime.timedelta):
            value = value.total_seconds() * 1000
            if isinstance(value, float) and value.is_integer():
                value = int(value)
        what = f"a duration in milliseconds >= {minimum}"
        number = _int_like(value, what)
        if number < minimum:
            raise ValueError(f"must be {what}, got {_describe(value)}")
        return number

    return check


def fraction(value: Any) -> float:
    """A number in (0, 1]: a rate or ratio."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"must be a number greater than 0 and at most 1, got {_describe(value)}")
    return float(value)


def boolean(value: Any) -> bool:
    """``True`` or ``False`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {_describe(value)}")
    return value


def string(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {_describe(value)}")
    return value


def choice(*values: Any) -> Checker:
    """One of ``values``."""

    def check(value: Any) -> Any:
        if value not in values:
            allowed = ", ".join(repr(v) for v in values)
            raise ValueError(f"must be one of {allowed}, got {_describe(value)}")
        return value

    return check


def callable_(value: Any) -> Callable[..., Any]:
    """A callable (actor option only)."""
    if not callable(value):
        raise ValueError(f"must be callable, got {_describe(value)}")
    return value


def exception_types(value: Any) -> tuple[type[BaseException], ...]:
    """An exception class or a tuple/list of them, normalized to a tuple."""
    items = tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValueError(f"must be an exception class or a tuple of them, got {_describe(item)}")
    return items


def optional(check: Checker) -> Checker:
    """``None`` (meaning "off") or whatever ``check`` accepts."""

    def checked(value: Any) -> Any:
        return None if value is None else check(value)

    return checked
