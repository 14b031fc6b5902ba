"""Keeps the concurrency leases of running messages alive (the limiter's renewer)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from .. import events
from ..backends.base import StateBackend
from ..backends.window import HeldLease, LeaseSpec
from ..errors import BackendError
from ..outage import OutageLog

__all__ = ["LeaseRenewer"]

#: The shortest pause between two renewals, in milliseconds.
MIN_RENEW_INTERVAL = 50


class LeaseRenewer:
    """Renews every lease this process holds, every third of the shortest lease.

    One daemon thread per process, started on the first lease (so after
    ``dramatiq --processes N`` has forked: a forked child starts its own) and
    stopped by :meth:`stop`.  All held leases are renewed by one backend call
    (one round trip) per tick.  A lease found gone (it expired during a long
    backend outage and may have been given away) is logged and announced as
    ``rate_lease_lost``; the message keeps running.

    Parameters:
      backend: the state backend.
      outage: where backend errors are reported (the limiter's outage log).
      logger: where lost leases are logged.
    """

    def __init__(self, backend: StateBackend, outage: OutageLog, logger: logging.Logger) -> None:
        self.backend = backend
        self.outage = outage
        self.logger = logger
        self._lock = threading.Lock()
        self._held: dict[str, tuple[HeldLease, ...]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, token: str, leases: Sequence[LeaseSpec]) -> None:
        """Start renewing ``token``'s ``leases``."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread and leases are not ours
                self._pid, self._thread, self._held = os.getpid(), None, {}
            self._held[token] = tuple(HeldLease(token, spec) for spec in leases)
            if self._thread is None or not self._thread.is_alive():
                self._wake.clear()
                self._thread = threading.Thread(
                    target=self._run, name="dramatiq-resilience-lease-renewer", daemon=True
                )
                self._thread.start()

    def drop(self, token: str) -> None:
        """Stop renewing ``token``'s leases (they are being released)."""
        with self._lock:
            self._held.pop(token, None)

    def stop(self) -> None:
        """Stop the thread (it is started again by the next :meth:`hold`)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _interval_s(self) -> float | None:
        with self._lock:
            leases = [lease.spec.lease_ms for held in self._held.values() for lease in held]
        if not leases:
            return None
        return max(MIN_RENEW_INTERVAL, min(leases) // 3) / 1000

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            interval = self._interval_s()
            if self._wake.wait(interval if interval is not None else 1.0):
                return
            with self._lock:
                if self._thread is not me:
                    return
                held = [lease for leases in self._held.values() for lease in leases]
            if held:
                self.renew(held)

    def renew(self, held: Sequence[HeldLease]) -> None:
        """Renew ``held`` now (the thread's tick; public for tests)."""
        try:
            renewed = self.backend.window_renew(held)
        except BackendError as exc:
            self.outage.failed(exc, action="keep running messages and retry renewing their leases")
            return
        self.outage.succeeded()
        for lease, ok in zip(held, renewed, strict=True):
            if ok:
                continue
            with self._lock:
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
