"""What the limiter takes for each actor: limit ids, definitions, key functions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..arguments import Arguments, call_key
from ..backends.window import LeaseSpec, LimitDefinition, RateSpec
from ..errors import ConfigurationError
from ..limits import Concurrency, Limit
from ..options import _describe

__all__ = ["KeyFunctionFailed", "Plan", "concurrency_list", "limit_list", "plan_for"]


def limit_list(value: Any) -> tuple[Limit, ...]:
    """Checker of ``rate_limits``: a Limit, a rate string, or a list of them."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    limits = []
    for item in items:
        # A bad rate string raises ConfigurationError, a ValueError, with the reason.
        limit = Limit.parse(item) if isinstance(item, str) else item
        if not isinstance(limit, Limit):
            raise ValueError(
                "must be a Limit, a rate string such as '100/minute', or a list of them, "
                f"got {_describe(item)}"
            )
        limits.append(limit)
    return tuple(limits)


def concurrency_list(value: Any) -> tuple[Concurrency, ...]:
    """Checker of ``rate_concurrency``: a Concurrency, an int (``Concurrency(n)``), or a list of them."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    pools = []
    for item in items:
        pool = Concurrency(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if not isinstance(pool, Concurrency):
            raise ValueError(f"must be a Concurrency, an int, or a list of them, got {_describe(item)}")
        pools.append(pool)
    return tuple(pools)


class KeyFunctionFailed(Exception):
    """A key function failed on a message's arguments; ``option`` and ``problem`` say how."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(problem)
        self.option = option
        self.problem = problem


@dataclass(frozen=True)
class _Entry:
    option: str
    limit_id: str
    key: Callable[..., Any] | None


@dataclass(frozen=True)
class Plan:
    """The limits of one actor, ready to be turned into specs for a message."""

    rates: tuple[tuple[_Entry, Limit], ...]
    pools: tuple[tuple[_Entry, Concurrency], ...]

    @property
    def definitions(self) -> tuple[LimitDefinition, ...]:
        """How this process defines each of the actor's limits (announced to the other processes)."""
        items: tuple[tuple[_Entry, Limit | Concurrency], ...] = (*self.rates, *self.pools)
        return tuple(LimitDefinition(item.kind, entry.limit_id, item.describe()) for entry, item in items)

    def specs(
        self, actor_fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[RateSpec], list[LeaseSpec]]:
        """The specs for a message with these arguments (key functions get them by name).

        Raises:
          KeyFunctionFailed: a key function raised or returned something else than a string.
        """
        arguments = Arguments(actor_fn, args, kwargs) if self.keyed else None
        rates = [
            RateSpec(entry.limit_id, _key(entry, arguments), limit.count, limit.per)
            for entry, limit in self.rates
        ]
        pools = [
            LeaseSpec(entry.limit_id, _key(entry, arguments), pool.n, pool.lease)
            for entry, pool in self.pools
        ]
        return rates, pools

    @functools.cached_property
    def keyed(self) -> bool:
        """Whether any limit of the actor has a key function."""
        return any(entry.key is not None for entry, _ in (*self.rates, *self.pools))


def _key(entry: _Entry, arguments: Arguments | None) -> str:
    if entry.key is None or arguments is None:
        return ""
    try:
        value = call_key(entry.key, arguments)
    except Exception as exc:
        raise KeyFunctionFailed(
            entry.option,
            f"the key function of limit {entry.limit_id!r} raised {type(exc).__name__}: {exc}",
        ) from exc
    if not isinstance(value, str):
        raise KeyFunctionFailed(
            entry.option,
            f"the key function of limit {entry.limit_id!r} must return a string, got {_describe(value)}",
        )
    return value


#: Named limits: (option, name) -> {actor name: (count, per) or (n, lease)}.
Registry = dict[tuple[str, str], dict[str, tuple[int, int]]]


def plan_for(
    actor_name: str, limits: tuple[Limit, ...], pools: tuple[Concurrency, ...], named: Registry
) -> Plan:
    """Build an actor's plan, registering its named limits in ``named``.

    Declaring an actor again replaces its earlier registrations.

    Only this process's declarations are checked here: processes that
    disagree (a rolling deploy) are found by the limiter's announcements.

    Raises:
      ConfigurationError: a named limit is declared with two definitions (by
        two actors, or twice by this one).
    """
    for users in named.values():
        users.pop(actor_name, None)

    def entries(option: str, items: tuple[Any, ...]) -> tuple[tuple[_Entry, Any], ...]:
        result = []
        for index, item in enumerate(items):
            if item.name:
                definition = (item.count, item.per) if isinstance(item, Limit) else (item.n, item.lease)
                _register(named, actor_name, option, item.name, definition)
            limit_id = item.name or f"{actor_name}.{option}[{index}]"
            result.append((_Entry(option, limit_id, item.key), item))
        return tuple(result)

    return Plan(entries("rate_limits", limits), entries("rate_concurrency", pools))


_DESCRIBE = {
    "rate_limits": lambda d: f"{d[0]} per {d[1]} ms",
    "rate_concurrency": lambda d: f"{d[0]} at once (lease {d[1]} ms)",
}


def _register(named: Registry, actor_name: str, option: str, name: str, definition: tuple[int, int]) -> None:
    users = named.setdefault((option, name), {})
    for other, known in users.items():
        if known != definition:
            who = "this actor" if other == actor_name else f"actor {other!r}"
            raise ConfigurationError(
                f"limit {name!r} is {_DESCRIBE[option](definition)} here, but {who} declared it as "
                f"{_DESCRIBE[option](known)}; a named limit is one budget and needs one definition",
                actor_name=actor_name,
                option=option,
            )
    users[actor_name] = definition
