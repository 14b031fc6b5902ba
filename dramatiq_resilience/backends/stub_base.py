"""Plumbing of the in-memory state backend: one lock, a clock, a dict.

Feature mixins (``stub_<feature>.py``) subclass :class:`StubBase`;
:class:`~dramatiq_resilience.backends.stub.StubBackend` composes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import BackendUnavailable
from .base import DEFAULT_NAMESPACE
from .keys import Keyed

__all__ = ["StubBase"]


class StubBase(Keyed):
    """The in-memory plumbing every feature mixin uses.  See ``StubBackend``."""

    def __init__(self, *, clock: Clock | None = None, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.clock: Clock = clock or SystemClock()
        self.namespace = namespace
        self.unavailable = False
        self.lock = threading.RLock()
        # Each feature keeps its state under its own top-level name, e.g.
        # self.data.setdefault("breaker", {}); every access happens inside atomic().
        self.data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"StubBackend(clock={self.clock!r}, namespace={self.namespace!r})"

    @contextmanager
    def atomic(self) -> Iterator[int]:
        """Hold the lock for one atomic step and yield the current time in milliseconds.

        Raises ``BackendUnavailable`` while :attr:`unavailable` is set.
        """
        with self.lock:
            if self.unavailable:
                raise BackendUnavailable("StubBackend is marked unavailable")
            yield self.clock.now_ms()

    def now_ms(self) -> int:
        with self.atomic() as now:
            return now

    def ping(self) -> None:
        with self.atomic():
            pass

    def close(self) -> None:
        pass
