"""The in-memory state backend, for tests and the embedded demo."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import BackendUnavailable
from .base import DEFAULT_NAMESPACE, StateBackend

__all__ = ["StubBackend"]


class StubBackend(StateBackend):
    """State backend in process memory: one lock, an injectable clock.

    It implements every operation with the same results as
    :class:`~dramatiq_resilience.backends.redis.RedisBackend` (one contract test
    suite runs both), but its state is only shared by the threads of one
    process.

    Parameters:
      clock: where time comes from (default: this host's clock).
      namespace: the key prefix, as for ``RedisBackend``.

    Attributes:
      unavailable: set to ``True`` to make every operation raise
        ``BackendUnavailable``, as if Redis were down (a test switch).
    """

    def __init__(self, *, clock: Clock | None = None, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.clock: Clock = clock or SystemClock()
        self.namespace = namespace
        self.unavailable = False
        self.lock = threading.RLock()
        # Each feature keeps its state under its own top-level name.
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
