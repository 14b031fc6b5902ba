"""What each worker process is running, published on an interval for the stalled-message scan.

Each worker process keeps its in-flight messages in memory (a dict insert
and delete per message, no I/O) and a background thread publishes a snapshot
to the backend every ``interval`` ms, only while something runs (and once
more, empty, when it stops).  A snapshot expires after three intervals, so a
dead process's snapshot disappears by itself (dead-worker recovery handles
its messages).  The stalled scan reads the snapshots: one read per scan.

Start times are published on the backend's clock, which the scan compares
them with: the process measures how long each message has run on its own
monotonic clock (a duration, which no skew between hosts changes) and
subtracts it from the backend's time, read once per snapshot.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

from dramatiq.common import q_name
from dramatiq.logging import get_logger

from ..backends.base import StateBackend
from ..backends.cron import InflightMessage
from ..clock import Clock
from ..errors import BackendError
from ..outage import OutageLog

__all__ = ["DEFAULT_INFLIGHT_INTERVAL", "InflightTracker"]

#: Milliseconds between two snapshots of a worker process's running messages.
DEFAULT_INFLIGHT_INTERVAL = 10_000


class _MonotonicClock:
    """This process's monotonic clock in milliseconds: for durations only (it is no time of day)."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class InflightTracker:
    """Tracks one process's running messages and publishes them.

    Parameters:
      backend: where snapshots go.
      interval: milliseconds between snapshots (default 10 000); a snapshot
        lives for three intervals.
      clock: what running times are measured with (default: the backend's
        injected clock if it has one, else this process's monotonic clock).
        Published start times are on the backend's clock whatever this is.
    """

    def __init__(
        self, backend: StateBackend, *, interval: int = DEFAULT_INFLIGHT_INTERVAL, clock: Clock | None = None
    ):
        self.logger = get_logger(__name__, type(self))
        self.backend = backend
        self.interval = interval
        self.clock: Clock = clock or getattr(backend, "clock", None) or _MonotonicClock()
        self.outage = OutageLog("InflightTracker", self.logger)
        self.process = ""
        # message id -> (actor, queue, started ms on self.clock): a tuple, the cheapest thing to build.
        self._running: dict[str, tuple[str, str, int]] = {}
        self._now = self.clock.now_ms
        self._published_something = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self, message: Any) -> None:
        """``message`` (a ``Message``, not its proxy: attribute access is cheaper) started."""
        self._running[message.message_id] = (message.actor_name, message.queue_name, self._now())

    def finished(self, message: Any) -> None:
        self._running.pop(message.message_id, None)

    def snapshot(self) -> list[InflightMessage]:
        """The running messages, with their start times on the backend's clock (one ``now_ms()`` call)."""
        running = list(self._running.items())
        if not running:
            return []
        # Each message's running time on this process's clock, subtracted from the backend's time.
        backend_now = self.backend.now_ms()
        offset = backend_now - self._now()
        messages = [
            InflightMessage(message_id, actor, q_name(queue), started + offset)
            for message_id, (actor, queue, started) in running
        ]
        return sorted(messages, key=lambda m: (m.started_ms, m.message_id))

    def publish(self) -> None:
        """Publish the current snapshot (nothing when idle and already published empty)."""
        if not self._running and not self._published_something:
            return
        try:
            messages = self.snapshot()
            self.backend.cron_inflight_publish(self.process, messages, ttl_ms=3 * self.interval)
        except BackendError as exc:
            self.outage.failed(exc, action="publish the next snapshot")
            return
        self.outage.succeeded()
        self._published_something = bool(messages)

    def start(self) -> None:
        """Start publishing from this process (call after fork: the id names this process)."""
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dramatiq-resilience-inflight", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop publishing and delete this process's snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._running.clear()
        self.publish()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval / 1000):
            self.publish()
