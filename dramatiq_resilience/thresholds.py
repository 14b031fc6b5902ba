"""Queue-depth thresholds and the levels they define, for :class:`~dramatiq_resilience.Backpressure`.

A queue is at the highest level whose threshold its depth has reached
(``depth >= threshold``):

==============  ==================================================================
``normal``      below every threshold: sends pass
``warning``     sends pass; the level change is logged and announced
``critical``    sends are slowed: a bounded wait in ``send``, or a delayed enqueue
``emergency``   producers' sends raise ``QueueOverloaded``
==============  ==================================================================

A threshold set to ``None`` turns its level off.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dramatiq.common import q_name

from .errors import ConfigurationError, DepthUnavailable
from .options import positive_int
from .queue_depth import QueueDepth

__all__ = [
    "CRITICAL",
    "EMERGENCY",
    "LEVELS",
    "NORMAL",
    "WARNING",
    "QueueStatus",
    "ThresholdTable",
    "Thresholds",
    "queue_statuses",
]

NORMAL = "normal"
WARNING = "warning"
CRITICAL = "critical"
EMERGENCY = "emergency"

#: The levels, from calmest to worst.
LEVELS = (NORMAL, WARNING, CRITICAL, EMERGENCY)

_FIELDS = (WARNING, CRITICAL, EMERGENCY)


@dataclass(frozen=True)
class Thresholds:
    """The depths (in messages) at which a queue reaches each level; ``None`` turns a level off.

    Parameters:
      warning: depth from which sends are logged and announced (default ``None``).
      critical: depth from which sends are slowed (default ``None``).
      emergency: depth from which producers' sends are refused (default ``None``).

    Each is a positive integer, and ``warning <= critical <= emergency``
    among those that are set; anything else raises ``ConfigurationError``.
    """

    warning: int | None = None
    critical: int | None = None
    emergency: int | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                object.__setattr__(self, name, positive_int(value))
            except ValueError as exc:
                raise ConfigurationError(f"{exc} (a depth in messages, or None)", option=name) from None
        set_ = [(name, getattr(self, name)) for name in _FIELDS if getattr(self, name) is not None]
        for (low_name, low), (high_name, high) in itertools.pairwise(set_):
            if low > high:
                raise ConfigurationError(
                    f"{low_name}={low} is above {high_name}={high}; thresholds must rise: "
                    "warning <= critical <= emergency",
                    option=low_name,
                )

    @classmethod
    def of(cls, value: Any) -> Thresholds:
        """``value`` as ``Thresholds``: a ``Thresholds``, or a dict of warning/critical/emergency."""
        if isinstance(value, Thresholds):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(_FIELDS))
            if unknown:
                raise ConfigurationError(
                    f"unknown key(s) {', '.join(map(repr, unknown))}; use warning, critical, emergency",
                    option="thresholds",
                )
            return cls(**value)
        raise ConfigurationError(
            f"must be Thresholds(warning=..., critical=..., emergency=...) or a dict of them, got {value!r}",
            option="thresholds",
        )

    def level(self, depth: int) -> str:
        """The level a queue of ``depth`` messages is at."""
        if self.emergency is not None and depth >= self.emergency:
            return EMERGENCY
        if self.critical is not None and depth >= self.critical:
            return CRITICAL
        if self.warning is not None and depth >= self.warning:
            return WARNING
        return NORMAL

    def threshold(self, level: str) -> int | None:
        """The threshold of ``level`` (``None`` for ``normal`` and for levels turned off)."""
        return getattr(self, level) if level in _FIELDS else None

    def to_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in _FIELDS}

    def __str__(self) -> str:
        return ", ".join(
            f"{name} {getattr(self, name)}" for name in _FIELDS if getattr(self, name) is not None
        )


class ThresholdTable:
    """Thresholds by canonical queue name (``.DQ``/``.XQ`` stripped), with a default for other queues.

    Parameters:
      thresholds: queue name to ``Thresholds`` (or a dict of them, or ``None``
        to leave that queue unchecked even when there is a default).
      default: the thresholds of every queue not named, or ``None``.
    """

    def __init__(self, thresholds: Mapping[str, Any] | None = None, default: Any = None) -> None:
        if thresholds is not None and not isinstance(thresholds, Mapping):
            raise ConfigurationError(
                f"must be a dict of queue name to Thresholds, got {thresholds!r}", option="thresholds"
            )
        self.default = None if default is None else self._checked("default", default)
        self.by_queue: dict[str, Thresholds | None] = {}
        for name, value in (thresholds or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"queue names must be non-empty strings, got {name!r}", option="thresholds"
                )
            canonical = q_name(name)
            if canonical in self.by_queue:
                raise ConfigurationError(
                    f"queue {canonical!r} is given twice ({name!r} names the same queue)", option="thresholds"
                )
            self.by_queue[canonical] = None if value is None else self._checked(f"queue {canonical!r}", value)

    @staticmethod
    def _checked(where: str, value: Any) -> Thresholds:
        try:
            return Thresholds.of(value)
        except ConfigurationError as exc:
            option = "default" if where == "default" else "thresholds"
            field = f" {exc.option}" if exc.option not in (None, "thresholds") else ""
            raise ConfigurationError(f"{where}{field}: {exc.problem}", option=option) from None

    def __bool__(self) -> bool:
        return self.default is not None or any(value is not None for value in self.by_queue.values())

    def get(self, queue_name: str) -> Thresholds | None:
        """The thresholds of ``queue_name`` (canonical), or ``None`` when it is unchecked."""
        if queue_name in self.by_queue:
            return self.by_queue[queue_name]
        return self.default

    def named(self) -> list[str]:
        """The queues given by name, checked or not."""
        return list(self.by_queue)


@dataclass(frozen=True)
class QueueStatus:
    """A queue's depth, level and thresholds, as ``Backpressure.status()`` and the CLI report them.

    Attributes:
      queue_name: the canonical queue name.
      depth: the reading, or ``None`` when it could not be read (see ``error``).
      thresholds: the queue's thresholds, or ``None`` when it is unchecked.
      error: why the depth could not be read, or ``None``.
    """

    queue_name: str
    depth: QueueDepth | None
    thresholds: Thresholds | None
    error: str | None = None

    @property
    def level(self) -> str | None:
        """The queue's level; ``None`` when it is unchecked or its depth unknown."""
        if self.thresholds is None or self.depth is None:
            return None
        return self.thresholds.level(self.depth.depth)

    def to_dict(self) -> dict[str, Any]:
        reading = self.depth
        return {
            "queue_name": self.queue_name,
            "depth": None if reading is None else reading.depth,
            "ready": None if reading is None else reading.ready,
            "delayed": None if reading is None else reading.delayed,
            "read_at_ms": None if reading is None else reading.read_at_ms,
            "level": self.level,
            "thresholds": None if self.thresholds is None else self.thresholds.to_dict(),
            "error": self.error,
        }


def queue_statuses(
    read: Callable[[list[str]], Mapping[str, QueueDepth]],
    known: Callable[[], list[str]],
    table: ThresholdTable | None,
    queue_names: Iterable[str] | None = None,
) -> list[QueueStatus]:
    """Read queues now and report each with its level and thresholds; a failed read goes in ``error``.

    ``queue_names`` defaults to the queues named in ``table`` plus ``known()``
    (those the broker knows).
    """
    if queue_names is not None:
        names = sorted({q_name(name) for name in queue_names})
    else:
        named = set(table.named()) if table is not None else set()
        try:
            names = sorted(named | set(known()))
        except DepthUnavailable:
            names = sorted(named)
    error = None
    try:
        readings = read(names) if names else {}
    except DepthUnavailable as exc:
        readings, error = {}, str(exc)
    return [
        QueueStatus(name, readings.get(name), table.get(name) if table is not None else None, error)
        for name in names
    ]
