"""Keeps the concurrency leases of running messages alive (the limiter's renewer).

Every lease is due for renewal a third of its length after it was taken or
last renewed, so a renewal that fails can be tried again before the lease
could end.  Each lease has its own due moment: a short lease taken while a
long one is held, or taken after the renewer was idle, is renewed on its own
schedule.  :meth:`LeaseRenewer.hold` wakes the thread when the new lease is
due before the moment the thread was going to look again.

All leases due at one moment are renewed by one backend call (one round
trip), and so is every lease that has passed half of its renewal interval:
leases of one length thus settle onto shared ticks instead of one round trip
each, and none is renewed sooner than a sixth of its length after the last
time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .. import events
from ..backends.base import StateBackend
from ..backends.window import HeldLease, LeaseSpec
from ..clock import Clock
from ..errors import BackendError
from ..outage import OutageLog

__all__ = ["RETRY_INTERVAL", "LeaseRenewer", "renew_interval"]

#: Milliseconds between two attempts to renew a lease while the backend
#: fails (shorter for leases whose renewal interval is shorter).
RETRY_INTERVAL = 200


def renew_interval(lease_ms: int) -> int:
    """Milliseconds between two renewals of a lease of ``lease_ms``: a third of it."""
    return max(1, lease_ms // 3)


class _MonotonicClock:
    """This host's monotonic clock in milliseconds: the renewer only measures durations."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


@dataclass(eq=False)
class _Held:
    """One lease being renewed: when it was taken or last renewed, and when it is due (clock ms)."""

    lease: HeldLease
    renewed_at: int
    due_at: int

    @property
    def interval(self) -> int:
        return renew_interval(self.lease.spec.lease_ms)

    def joins(self, now: int) -> bool:
        """Whether a tick at ``now`` renews it: it is due, or past half its interval."""
        return now >= self.due_at or now - self.renewed_at >= self.interval // 2


class LeaseRenewer:
    """Renews every lease this process holds before a third of it has passed (see the module).

    One daemon thread per process, started on the first lease (so after
    ``dramatiq --processes N`` has forked: a forked child starts its own) and
    stopped by :meth:`stop`.  The thread sleeps until the next lease is due,
    or, holding none, until :meth:`hold` wakes it.  A lease found gone (it
    expired during a long backend outage and may have been given away) is
    logged and announced as ``rate_lease_lost``, and no longer renewed; the
    message keeps running.

    Parameters:
      backend: the state backend.
      outage: where backend errors are reported (the limiter's outage log).
      logger: where lost leases are logged.
      clock: what measures the intervals, in milliseconds (default this
        host's monotonic clock); tests pass a ``FakeClock``.
      threaded: ``False`` starts no thread: the caller runs :meth:`tick` at
        :attr:`wakes_at` (tests drive it with a ``FakeClock``).
    """

    def __init__(
        self,
        backend: StateBackend,
        outage: OutageLog,
        logger: logging.Logger,
        *,
        clock: Clock | None = None,
        threaded: bool = True,
    ) -> None:
        self.backend = backend
        self.outage = outage
        self.logger = logger
        self.clock: Clock = clock or _MonotonicClock()
        self.threaded = threaded
        self._cond = threading.Condition()
        self._held: dict[str, list[_Held]] = {}
        self._wakes_at: int | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @property
    def wakes_at(self) -> int | None:
        """When the thread looks again (clock ms); ``None``: not until a lease is held."""
        with self._cond:
            return self._wakes_at

    def hold(self, token: str, leases: Sequence[LeaseSpec]) -> None:
        """Start renewing ``token``'s ``leases``, taken just now."""
        if self._pid != os.getpid():  # forked: the parent's thread, lock and leases are not ours
            self._pid, self._thread, self._held, self._wakes_at = os.getpid(), None, {}, None
            self._cond = threading.Condition()
        now = self.clock.now_ms()
        with self._cond:
            held = [
                _Held(HeldLease(token, spec), now, now + renew_interval(spec.lease_ms)) for spec in leases
            ]
            self._held[token] = held
            due = min((item.due_at for item in held), default=None)
            if due is not None and (self._wakes_at is None or due < self._wakes_at):
                self._wakes_at = due
                self._cond.notify_all()
            if self.threaded and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self._run, name="dramatiq-resilience-lease-renewer", daemon=True
                )
                self._thread.start()

    def drop(self, token: str) -> None:
        """Stop renewing ``token``'s leases (they are being released)."""
        with self._cond:
            self._held.pop(token, None)

    def stop(self) -> None:
        """Stop the thread (it is started again by the next :meth:`hold`)."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _next_due(self) -> int | None:
        """The earliest due moment of every held lease.  Called with the lock held."""
        return min((item.due_at for held in self._held.values() for item in held), default=None)

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while True:
                    if self._thread is not me:
                        return
                    wakes_at = self._wakes_at
                    now = self.clock.now_ms()
                    if wakes_at is not None and now >= wakes_at:
                        break
                    self._cond.wait(None if wakes_at is None else (wakes_at - now) / 1000)
            self.tick()

    def tick(self) -> int | None:
        """Renew, in one backend call, every lease that is due now (and those past half their interval).

        What the thread does when it wakes; public for tests.  Returns (and
        sets :attr:`wakes_at` to) the moment the next lease is due, in clock
        milliseconds, or ``None`` when no lease is held.
        """
        now = self.clock.now_ms()
        with self._cond:
            batch = [item for held in self._held.values() for item in held if item.joins(now)]
        renewed = self.renew([item.lease for item in batch]) if batch else []
        with self._cond:
            if renewed is None:  # the backend failed: try again soon, before any of them can expire
                for item in batch:
                    item.due_at = now + min(RETRY_INTERVAL, item.interval)
            else:
                for item, ok in zip(batch, renewed, strict=True):
                    item.renewed_at, item.due_at = now, now + item.interval
                    held = self._held.get(item.lease.token)
                    if not ok and held is not None:  # lost: renewing it again cannot help
                        held[:] = [other for other in held if other is not item]
            self._wakes_at = self._next_due()
            return self._wakes_at

    def renew(self, held: Sequence[HeldLease]) -> list[bool] | None:
        """Renew ``held`` now, in one backend call; ``None`` if the backend failed.

        A lease found gone while its message still runs is logged and announced.
        """
        try:
            renewed = self.backend.window_renew(held)
        except BackendError as exc:
            self.outage.failed(exc, action="keep running messages and retry renewing their leases")
            return None
        self.outage.succeeded()
        for lease, ok in zip(held, renewed, strict=True):
            if ok:
                continue
            with self._cond:
                still_running = lease.token in self._held
            if still_running:
                self.logger.warning(
                    "Message %r lost its concurrency lease on %r (key %r): it expired before it could "
                    "be renewed, so another message may run in its slot.",
                    lease.token,
                    lease.spec.limit,
                    lease.spec.key,
                )
                events.emit(
                    "rate_lease_lost", message_id=lease.token, limit=lease.spec.limit, key=lease.spec.key
                )
        return renewed
