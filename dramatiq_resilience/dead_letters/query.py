"""Filters and pages for listing dead letters."""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigurationError
from .record import CATEGORIES, DeadLetterRecord, UnreadableRecord, error_type_name

__all__ = ["DeadLetterFilter", "DeadLetterPage", "Item", "decode_cursor", "encode_cursor", "to_ms"]

#: What a listing yields: a record, or an unreadable one (listed with its id).
Item = DeadLetterRecord | UnreadableRecord

#: Statuses a filter may ask for.
FILTER_STATUSES = ("dead", "requeued", "any")


def to_ms(value: Any, *, what: str) -> int | None:
    """Milliseconds since the epoch from an int, or a ``datetime`` (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"must be milliseconds since the epoch or a datetime, got {value!r}", option=what
        )
    return value


def _names(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (
        [value]
        if isinstance(value, (str, type))
        else list(value)
        if isinstance(value, Collection)
        else [value]
    )
    names = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.append(error_type_name(item))
        elif isinstance(item, str) and item:
            names.append(item)
        else:
            raise ConfigurationError(f"must be a name or a list of names, got {item!r}", option=what)
    return tuple(names)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to list, requeue, purge or export.

    Every field is optional; given fields must all match.  A field given a
    list matches any of its values.

    Parameters:
      actor: actor name(s).
      queue: canonical queue name(s).
      error_type: exception type name(s) (``"actors.gateway.CardDeclined"``)
        or classes.  A name without a dot also matches every stored type
        whose last part it is (``"CardDeclined"``).
      category: failure categories (``"transient"``, ``"permanent"``,
        ``"timeout"``, ``"expired"``, ``"rejected"``, ``"imported"``).
      status: ``"dead"`` (default), ``"requeued"`` or ``"any"``.
      since: failed at or after, in milliseconds since the epoch (or a datetime).
      until: failed before, in milliseconds since the epoch (or a datetime).
    """

    actor: Any = None
    queue: Any = None
    error_type: Any = None
    category: Any = None
    status: str = "dead"
    since: Any = None
    until: Any = None

    def __post_init__(self) -> None:
        for name in ("actor", "queue", "error_type", "category"):
            object.__setattr__(self, name, _names(getattr(self, name), name))
        for category in self.category or ():
            if category not in CATEGORIES:
                raise ConfigurationError(
                    f"must be one of {', '.join(CATEGORIES)}, got {category!r}", option="category"
                )
        if self.status not in FILTER_STATUSES:
            raise ConfigurationError(
                f"must be one of {', '.join(FILTER_STATUSES)}, got {self.status!r}", option="status"
            )
        object.__setattr__(self, "since", to_ms(self.since, what="since"))
        object.__setattr__(self, "until", to_ms(self.until, what="until"))

    @classmethod
    def of(cls, value: DeadLetterFilter | Mapping[str, Any] | None) -> DeadLetterFilter:
        """A filter from a filter, a mapping of its fields, or ``None`` (every dead record)."""
        if value is None:
            return cls()
        if isinstance(value, DeadLetterFilter):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigurationError(
                    f"unknown filter field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                    option="filter",
                )
            return cls(**value)
        raise ConfigurationError(f"must be a DeadLetterFilter or a dict, got {value!r}", option="filter")

    def replace(self, **changes: Any) -> DeadLetterFilter:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return DeadLetterFilter(**values)

    @property
    def is_empty(self) -> bool:
        """True when it selects every record of its status."""
        return all(
            getattr(self, name) is None
            for name in ("actor", "queue", "error_type", "category", "since", "until")
        )

    def facets(self, known_error_types: Collection[str] = ()) -> dict[str, list[str]]:
        """The backend's facet filters; short error-type names are expanded with ``known_error_types``."""
        result: dict[str, list[str]] = {}
        for facet, value in (("actor", self.actor), ("queue", self.queue), ("category", self.category)):
            if value is not None:
                result[facet] = list(value)
        if self.error_type is not None:
            names: list[str] = []
            for name in self.error_type:
                names.append(name)
                if "." not in name:
                    names += [known for known in known_error_types if known.endswith("." + name)]
            result["error_type"] = list(dict.fromkeys(names))
        return result

    def matches(self, record: Item) -> bool:
        """Whether ``record`` passes this filter (the same rules as the backend's)."""
        if self.status not in ("any", record.status):
            return False
        for facet, value in (
            (self.actor, record.actor_name),
            (self.queue, record.queue_name),
            (self.category, record.category),
        ):
            if facet is not None and value not in facet:
                return False
        if self.error_type is not None and not any(
            record.error_type == name or ("." not in name and record.error_type.endswith("." + name))
            for name in self.error_type
        ):
            return False
        if self.since is not None and record.last_failure_at < self.since:
            return False
        return self.until is None or record.last_failure_at < self.until

    def describe(self) -> str:
        """A short human description, for logs."""
        parts = [f"status={self.status}"]
        for name in ("actor", "queue", "error_type", "category"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={','.join(value)}")
        if self.since is not None:
            parts.append(f"since={self.since}")
        if self.until is not None:
            parts.append(f"until={self.until}")
        return " ".join(parts)


def encode_cursor(cursor: tuple[int, str] | None) -> str | None:
    return None if cursor is None else f"{cursor[0]}:{cursor[1]}"


def decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    """Parse a cursor returned by a previous page."""
    if cursor is None:
        return None
    score, sep, record_id = str(cursor).partition(":")
    try:
        if not sep or not record_id:
            raise ValueError
        return int(score), record_id
    except ValueError:
        raise ConfigurationError(
            f"is not a cursor returned by a listing: {cursor!r}", option="cursor"
        ) from None


@dataclass(frozen=True)
class DeadLetterPage:
    """One page of a listing: ``items`` and the ``cursor`` of the next page (``None`` at the end)."""

    items: list[Item]
    cursor: str | None

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def chunked(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
