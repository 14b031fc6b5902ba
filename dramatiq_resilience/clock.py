"""Clocks: where "now" comes from.

Windows, leases and cooldowns are measured on the state backend's clock (Redis
``TIME``), so clock skew between hosts cannot break a limit.  Tests inject a
:class:`FakeClock` instead of sleeping through a window.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything with a ``now_ms()`` method returning UNIX time in milliseconds."""

    def now_ms(self) -> int: ...


class SystemClock:
    """This host's wall clock, in milliseconds."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that only moves when told to.  Thread-safe.

    Parameters:
      start_ms: the initial time in milliseconds since the epoch (default
        2026-01-01T00:00:00Z, so that timestamps in tests are readable).
    """

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:
        self._now = int(start_ms)
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` milliseconds and return the new time."""
        if ms < 0:
            raise ValueError(f"a FakeClock only moves forward; got {ms} milliseconds")
        with self._lock:
            self._now += int(ms)
            return self._now

    def set(self, now_ms: int) -> None:
        """Jump to an absolute time in milliseconds (backwards too, for skew tests)."""
        with self._lock:
            self._now = int(now_ms)

    def __repr__(self) -> str:
        return f"FakeClock({self._now})"
