"""Rate and concurrency limits: what ``rate_limits`` and ``rate_concurrency`` hold.

``Limit(100, per=60_000)`` lets at most 100 messages start in any window of
60 000 milliseconds; ``Concurrency(2)`` lets at most 2 run at once.  Both take
an optional ``key`` function of the actor's arguments (one budget per tenant,
channel or API account) and an optional ``name`` that makes the budget shared
by every actor naming it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ConfigurationError
from .options import milliseconds, positive_int

__all__ = ["DEFAULT_LEASE", "Concurrency", "KeyFunction", "Limit"]

#: Milliseconds a concurrency lease lasts without renewal.  A running message
#: renews its lease every third of this; a holder that dies loses its slot
#: at most this long after its last renewal.
DEFAULT_LEASE = 30_000

KeyFunction = Callable[..., str]

#: Milliseconds per unit, by every spelling ``Limit.parse`` accepts.
_UNITS = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 1),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1_000),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60_000),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
}

_RATE = re.compile(r"\s*(\d+)\s*(?:/|per\s)\s*(\d+)?\s*([a-z]+)\s*", re.IGNORECASE)

#: What a limit name may look like: it becomes part of Redis keys.
_NAME = re.compile(r"[A-Za-z0-9_.\-/\[\]@#]+")


def _check_name(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"a limit name must be a non-empty string of letters, digits and _ . - / [ ] @ #, got {name!r}",
            option="name",
        )
    return name


def _check_key(key: Any) -> KeyFunction | None:
    if key is not None and not callable(key):
        raise ConfigurationError(
            f"a limit key must be a function of the actor's arguments returning a string, got {key!r}",
            option="key",
        )
    return key


def _check(check: Callable[[Any], int], option: str, value: Any) -> int:
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc), option=option) from None


@dataclass(frozen=True)
class Limit:
    """At most ``count`` messages start in any window of ``per`` milliseconds.

    Parameters:
      count: how many starts a window allows (an integer >= 1).
      per: the window in milliseconds (or a ``datetime.timedelta``).
      key: a function of the actor's ``*args, **kwargs`` returning a string:
        each distinct key has its own budget (per tenant, per channel).
        ``None`` means one budget for every message.
      name: share the budget between every actor that names it (they must
        agree on ``count`` and ``per``).  ``None`` means the budget belongs to
        the actor alone.

    ``Limit.parse("100/minute")`` reads the common spellings.
    """

    kind: ClassVar[str] = "rate"

    count: int
    per: int
    key: KeyFunction | None = field(default=None, compare=False)
    name: str | None = None

    def __init__(
        self,
        count: int,
        per: int | datetime.timedelta,
        key: KeyFunction | None = None,
        name: str | None = None,
    ) -> None:
        object.__setattr__(self, "count", _check(positive_int, "count", count))
        object.__setattr__(self, "per", _check(milliseconds(), "per", per))
        object.__setattr__(self, "key", _check_key(key))
        object.__setattr__(self, "name", _check_name(name))

    @classmethod
    def parse(cls, text: str, *, key: KeyFunction | None = None, name: str | None = None) -> Limit:
        """Read a rate such as ``"100/minute"``, ``"10 per second"`` or ``"5/30 seconds"``.

        Units: ``ms``, ``second`` (``s``, ``sec``), ``minute`` (``m``, ``min``),
        ``hour`` (``h``), ``day`` (``d``), singular or plural.

        Raises:
          ConfigurationError: naming the text and what is expected.
        """
        match = _RATE.fullmatch(text) if isinstance(text, str) else None
        unit = _UNITS.get(match.group(3).lower()) if match else None
        if match is None or unit is None:
            raise ConfigurationError(
                f"{text!r} is not a rate: expected 'COUNT/UNIT' or 'COUNT per N UNITS' with a unit of "
                "ms, second, minute, hour or day (e.g. '100/minute', '10 per 5 seconds')",
                option="rate_limits",
            )
        every = int(match.group(2) or 1)
        if every < 1:
            raise ConfigurationError(f"{text!r} has an empty window", option="rate_limits")
        return cls(int(match.group(1)), per=every * unit, key=key, name=name)

    def describe(self) -> str:
        """``"100 per 60000 ms"``."""
        return f"{self.count} per {self.per} ms"


@dataclass(frozen=True)
class Concurrency:
    """At most ``n`` messages run at once.

    Each running message holds a lease in the state backend, renewed while it
    runs (every third of ``lease``) and released when it ends.  If its worker
    dies, the lease expires ``lease`` milliseconds after its last renewal and
    the slot comes back.

    Parameters:
      n: how many may run at once (an integer >= 1).
      key: a function of the actor's ``*args, **kwargs`` returning a string:
        each key has its own ``n`` slots.  ``None``: one pool for every message.
      name: share the slots between every actor that names it (they must agree
        on ``n`` and ``lease``).
      lease: milliseconds a lease lasts without renewal (default 30 000).
    """

    kind: ClassVar[str] = "concurrency"

    n: int
    key: KeyFunction | None = field(default=None, compare=False)
    name: str | None = None
    lease: int = DEFAULT_LEASE

    def __init__(
        self,
        n: int,
        key: KeyFunction | None = None,
        name: str | None = None,
        lease: int | datetime.timedelta = DEFAULT_LEASE,
    ) -> None:
        object.__setattr__(self, "n", _check(positive_int, "n", n))
        object.__setattr__(self, "key", _check_key(key))
        object.__setattr__(self, "name", _check_name(name))
        object.__setattr__(self, "lease", _check(milliseconds(minimum=10), "lease", lease))

    def describe(self) -> str:
        """``"2 at once (lease 30000 ms)"``."""
        return f"{self.n} at once (lease {self.lease} ms)"
