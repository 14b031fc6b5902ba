"""What Backpressure knows in one process of each queue's level.

:class:`LevelWatch` sees every fresh depth reading (at most one per queue per
``cache_ms``), announces level changes, and logs them: at once on a change,
then at most once per ``log_interval`` while a queue stays above normal, never
once per send.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from .. import events
from ..clock import Clock
from ..errors import DepthUnavailable
from ..per_process import PerProcess
from ..queue_depth import QueueDepth
from ..thresholds import NORMAL, ThresholdTable

__all__ = ["LevelWatch"]

_CONSEQUENCE = {
    "warning": "",
    "critical": "; sends are slowed",
    "emergency": "; producers' sends are refused",
}


@dataclass
class _Levels:
    lock: threading.Lock = field(default_factory=threading.Lock)
    levels: dict[str, str] = field(default_factory=dict)
    logged: dict[str, int] = field(default_factory=dict)
    failing: bool = False


class LevelWatch:
    """Each queue's level as this process last read it; announces and logs changes.

    Parameters:
      table: the thresholds.
      logger: where to log.
      clock: time for the log interval.
      log_interval: milliseconds between reminders while a queue stays above normal.
    """

    def __init__(
        self, table: ThresholdTable, logger: logging.Logger, *, clock: Clock, log_interval: int
    ) -> None:
        self.table = table
        self.logger = logger
        self.clock = clock
        self.log_interval = log_interval
        self._state = PerProcess(_Levels)

    @property
    def _local(self) -> _Levels:
        return self._state.value

    def level(self, queue_name: str) -> str | None:
        """The level of ``queue_name`` at its last reading in this process (``None``: never read)."""
        return self._local.levels.get(queue_name)

    def seen(self, reading: QueueDepth) -> None:
        """A fresh reading arrived: announce it, and the level change if there is one."""
        local = self._local
        name, depth = reading.queue_name, reading.depth
        thresholds = self.table.get(name)
        level = thresholds.level(depth) if thresholds is not None else None
        if local.failing:
            local.failing = False
            self.logger.info("Backpressure reads queue depths again (queue %r: %d messages).", name, depth)
        events.emit(
            "backpressure_depth",
            queue_name=name,
            depth=depth,
            ready=reading.ready,
            delayed=reading.delayed,
            level=level,
        )
        if thresholds is None or level is None:
            return
        now = self.clock.now_ms()
        with local.lock:
            previous = local.levels.get(name, NORMAL)
            local.levels[name] = level
            changed = level != previous
            remind = (
                level != NORMAL and now - local.logged.get(name, now - self.log_interval) >= self.log_interval
            )
            if changed or remind:
                local.logged[name] = now
        if changed:
            if level == NORMAL:
                self.logger.info("Queue %r is back to normal: %d messages (%s).", name, depth, thresholds)
            else:
                self.logger.warning(
                    "Queue %r is at its %s level: %d messages (%s)%s.",
                    name,
                    level,
                    depth,
                    thresholds,
                    _CONSEQUENCE[level],
                )
            events.emit(
                "backpressure_level",
                queue_name=name,
                level=level,
                previous=previous,
                depth=depth,
                thresholds=thresholds.to_dict(),
            )
        elif remind:
            self.logger.warning(
                "Queue %r is still at its %s level: %d messages (%s)%s.",
                name,
                level,
                depth,
                thresholds,
                _CONSEQUENCE[level],
            )

    def failed(self, error: DepthUnavailable) -> None:
        """A read failed: log the first failure of an outage, announce every one."""
        local = self._local
        first = not local.failing
        local.failing = True
        if first:
            self.logger.warning(
                "Backpressure cannot read queue depths (%s); sends pass unchecked until it can. "
                "Further errors are not logged.",
                error,
            )
        events.emit("backpressure_depth_failed", queue_name=error.queue_name, error=error, first=first)
