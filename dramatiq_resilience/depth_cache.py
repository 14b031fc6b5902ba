"""A per-process cache of queue depths, so that a ``send`` almost never asks the broker.

Each queue's reading is trusted for ``cache_ms`` milliseconds, plus the
messages this process enqueued to the queue since (:meth:`DepthCache.estimate`),
so that one fast producer stops at a threshold instead of sending a whole
period's worth past it; what other processes sent shows at the next reading.  When it is
stale, one thread reads it again while the others go on with the stale
reading (single flight); a thread that finds no reading at all waits for the
one being read, at most ``wait_ms``.  A failed read is remembered for
``cache_ms`` too (as "unknown"), so that an unreachable broker is asked once
per period, not once per send.

Locks and readings are per process: a child made by ``fork`` (``dramatiq
--processes N``) starts with an empty cache and fresh locks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .clock import Clock
from .errors import DepthUnavailable
from .per_process import PerProcess
from .queue_depth import DepthReader, QueueDepth

__all__ = ["DepthCache"]

#: Milliseconds a thread waits for another thread's first reading of a queue.
DEFAULT_WAIT_MS = 5_000


@dataclass
class _Entry:
    depth: QueueDepth | None  # None: the last read failed
    expires: int
    added: int = 0  # messages this process enqueued since the reading (approximate under races)


@dataclass
class _Process:
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[str, _Entry] = field(default_factory=dict)
    reading: set[str] = field(default_factory=set)
    done: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.done = threading.Condition(self.lock)


class DepthCache:
    """Queue depths read through ``reader`` and kept ``cache_ms`` milliseconds.

    Parameters:
      reader: where depths come from.
      cache_ms: milliseconds a reading is trusted (0: read on every call).
      clock: the time source for lifetimes (a monotonic one in production).
      on_read: called with each fresh reading (outside the lock).
      on_error: called with each failed read's ``DepthUnavailable``.
      wait_ms: milliseconds a thread waits for another thread's first reading.
    """

    def __init__(
        self,
        reader: DepthReader,
        *,
        cache_ms: int,
        clock: Clock,
        on_read: Callable[[QueueDepth], None] = lambda depth: None,
        on_error: Callable[[DepthUnavailable], None] = lambda error: None,
        wait_ms: int = DEFAULT_WAIT_MS,
    ) -> None:
        self.reader = reader
        self.cache_ms = cache_ms
        self.clock = clock
        self.on_read = on_read
        self.on_error = on_error
        self.wait_ms = wait_ms
        self._process = PerProcess(_Process)

    @property
    def _local(self) -> _Process:
        return self._process.value

    def get(self, queue_name: str) -> QueueDepth | None:
        """The depth of ``queue_name`` (canonical) no older than ``cache_ms``; ``None`` if unreadable."""
        local = self._local
        entry = local.entries.get(queue_name)
        if entry is not None and self.clock.now_ms() < entry.expires:
            return entry.depth
        with local.lock:
            entry = local.entries.get(queue_name)
            if entry is not None and self.clock.now_ms() < entry.expires:
                return entry.depth
            if queue_name in local.reading:
                if entry is not None:
                    return entry.depth  # another thread is reading it: go on with the last reading
                local.done.wait_for(lambda: queue_name not in local.reading, timeout=self.wait_ms / 1000)
                entry = local.entries.get(queue_name)
                return None if entry is None else entry.depth
            local.reading.add(queue_name)
        return self._refresh(local, [queue_name]).get(queue_name)

    def estimate(self, queue_name: str) -> int | None:
        """The depth of ``queue_name``: its reading (see :meth:`get`) plus what this process enqueued since.

        ``None`` when the depth cannot be read.
        """
        entry = self._process.value.entries.get(queue_name)
        if entry is not None and entry.depth is not None and self.clock.now_ms() < entry.expires:
            return entry.depth.depth + entry.added  # the hot path: a warm cache
        reading = self.get(queue_name)
        if reading is None:
            return None
        entry = self._process.value.entries.get(queue_name)
        return reading.depth + (entry.added if entry is not None and entry.depth is reading else 0)

    def note_enqueued(self, queue_name: str) -> None:
        """Count one message this process enqueued to ``queue_name`` since its last reading."""
        entry = self._process.value.entries.get(queue_name)
        if entry is not None and entry.depth is not None:
            entry.added += 1

    def read(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        """Read ``queue_names`` now (one reader call) and cache them.

        Raises:
          DepthUnavailable: the broker could not be asked.
        """
        if not queue_names:
            return {}
        local = self._local
        with local.lock:
            local.reading.update(queue_names)
        readings = self._refresh(local, list(queue_names), raise_errors=True)
        return {name: depth for name, depth in readings.items() if depth is not None}

    def _refresh(
        self, local: _Process, queue_names: list[str], *, raise_errors: bool = False
    ) -> dict[str, QueueDepth | None]:
        readings: dict[str, QueueDepth | None] = {}
        error: DepthUnavailable | None = None
        try:
            readings.update(self.reader.read(queue_names))
        except DepthUnavailable as exc:
            error = exc
        except Exception as exc:  # a reader bug must not break sends: report it like an outage
            error = DepthUnavailable(f"reading queue depths failed: {exc!r}", queue_name=queue_names[0])
            error.__cause__ = exc
        except BaseException:
            # Dramatiq's TimeLimitExceeded and Shutdown interrupt a send inside an actor: the
            # queue must not stay "being read", or this process would trust its last reading forever.
            with local.lock:
                for name in queue_names:
                    local.reading.discard(name)
                local.done.notify_all()
            raise
        expires = self.clock.now_ms() + self.cache_ms
        with local.lock:
            for name in queue_names:
                local.entries[name] = _Entry(None if error is not None else readings.get(name), expires)
                local.reading.discard(name)
            local.done.notify_all()
        if error is not None:
            self.on_error(error)
            if raise_errors:
                raise error
            return readings
        for depth in readings.values():
            if depth is not None:
                self.on_read(depth)
        return readings

    def forget(self, queue_name: str | None = None) -> None:
        """Drop the reading of ``queue_name`` (every reading if ``None``): the next ``get`` reads again."""
        local = self._local
        with local.lock:
            if queue_name is None:
                local.entries.clear()
            else:
                local.entries.pop(queue_name, None)
