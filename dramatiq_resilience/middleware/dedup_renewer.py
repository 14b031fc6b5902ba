"""The lease renewer: one background thread per process keeps running jobs' claims alive.

Every claim is renewed once a third of its lease has passed since it was
taken or last renewed, so a renewal that fails can be tried again twice
before the lease could end.  All the claims due at one moment are renewed in
one round trip per backend (a pipeline).  A renewal that finds the key taken
over marks the claim lost and says so (a log line and ``dedup_lease_lost``).

The renewer also settles what a worker thread could not: a completion or a
release that failed because the backend was unreachable is retried here, and
the claim keeps being renewed until it is settled, so that nobody takes over a
key whose work is done.

No thread exists until the first claim is added.  The renewer notices a
``fork`` (``dramatiq --processes N`` forks): the child gets a fresh renewer.
:meth:`LeaseRenewer.stop` (called on worker shutdown) makes one last attempt
at what is unsettled and stops the thread once no claim is left.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..backends.dedup import RenewRequest
from ..errors import BackendError, CorruptRecord
from ..outage import OutageLog
from .dedup_claims import Claim

__all__ = ["LeaseRenewer", "lease_renewer"]

logger = logging.getLogger(__name__)

#: Seconds to wait before trying again after a failed renewal or settlement.
RETRY_INTERVAL = 0.2

#: Seconds the thread waits when it has nothing to do before looking again.
IDLE_INTERVAL = 1.0


@dataclass
class _Settlement:
    claim: Claim
    action: Callable[[], object]
    what: str


class LeaseRenewer:
    """Renews every active claim of this process; see the module docstring."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Condition()
        self._claims: set[Claim] = set()
        self._settlements: list[_Settlement] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: When the thread will look again by itself (time.monotonic(), seconds).
        self._wakes_at = 0.0
        self.outage = OutageLog("Deduplication lease renewer", logger)

    # -- what worker threads call ----------------------------------------------

    def add(self, claim: Claim) -> None:
        """Keep ``claim`` renewed until :meth:`discard`; starts the thread if needed."""
        with self._lock:
            self._claims.add(claim)
            due = claim.renewed_at + claim.lease_ms / 3_000
            if self._thread is None or self._stopping or due < self._wakes_at:
                self._wake()

    def discard(self, claim: Claim) -> None:
        """Stop renewing ``claim``."""
        with self._lock:
            self._claims.discard(claim)

    def settle_later(self, claim: Claim, action: Callable[[], object], what: str) -> None:
        """Retry ``action`` (a completion or release of ``claim``) until the backend answers.

        ``claim`` stays renewed meanwhile.  ``what`` describes it for logs.
        """
        with self._lock:
            self._claims.add(claim)
            self._settlements.append(_Settlement(claim, action, what))
            self._wake()

    def _wake(self) -> None:
        """Start the thread if it is not running, and wake it.  Called with the lock held."""
        self._stopping = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="dramatiq-resilience-lease-renewer", daemon=True
            )
            self._thread.start()
        self._lock.notify_all()

    @property
    def active(self) -> int:
        """How many claims are being renewed."""
        with self._lock:
            return len(self._claims)

    def stop(self, timeout: float = 5.0) -> None:
        """Make a last attempt at what is unsettled; stop the thread once no claim is left.

        Claims still held by running jobs (another worker in this process) keep
        being renewed.  Settlements that still fail are given up, with an error
        each: their keys' leases run out and a duplicate may run them again.
        """
        self._settle()
        with self._lock:
            for settlement in self._settlements:
                self._claims.discard(settlement.claim)
                logger.error(
                    "Could not %s on shutdown: the state backend is unreachable. The key's lease will "
                    "run out and a duplicate may run it again.",
                    settlement.what,
                )
            self._settlements.clear()
            self._stopping = True
            self._lock.notify_all()
            thread = self._thread if not self._claims else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping and not self._claims:
                    self._thread = None
                    return
                wait = self._next_wait()
                if wait > 0:
                    self._wakes_at = time.monotonic() + wait
                    self._lock.wait(wait)
                    self._wakes_at = 0.0
                    continue
            failed = not self._settle()
            failed = not self._renew_due() or failed
            if failed:
                time.sleep(RETRY_INTERVAL)

    def _next_wait(self) -> float:
        """Seconds until the next claim is due (0: now).  Called with the lock held."""
        if self._settlements:
            return 0.0
        now = time.monotonic()
        waits = [self._due_in(claim, now) for claim in self._claims if not claim.committed]
        if not waits:
            return 0.0 if self._stopping and not self._claims else IDLE_INTERVAL
        return max(0.0, min(waits))

    @staticmethod
    def _due_in(claim: Claim, now: float) -> float:
        """Seconds until ``claim`` is due; a claim being committed is looked at again shortly."""
        due = claim.renewed_at + claim.lease_ms / 3_000 - now
        return max(due, RETRY_INTERVAL / 4) if claim.committing else due

    def _renew_due(self) -> bool:
        """Renew the claims that are due; False if the backend failed."""
        now = time.monotonic()
        with self._lock:
            due = [
                c
                for c in self._claims
                if now >= c.renewed_at + c.lease_ms / 3_000 and not c.committing and not c.committed
            ]
        by_backend: dict[int, list[Claim]] = {}
        for claim in due:
            by_backend.setdefault(id(claim.backend), []).append(claim)
        ok = True
        for claims in by_backend.values():
            requests = [RenewRequest(c.key, c.token, c.lease_ms, c.ttl_ms) for c in claims]
            try:
                answers = claims[0].backend.dedup_renew(requests)
            except BackendError as exc:
                self.outage.failed(exc, action="retry renewing leases")
                ok = False
                continue
            self.outage.succeeded()
            for claim, held in zip(claims, answers, strict=True):
                claim.renewed_at = now
                if not held:
                    self._lost(claim)
        return ok

    def _lost(self, claim: Claim) -> None:
        with self._lock:
            if claim not in self._claims or claim.committing or claim.committed:
                return  # settled or committed meanwhile, not lost
            self._claims.discard(claim)
        logger.error(
            "Message %r lost deduplication key %r: its lease ran out and another message took the key "
            "over while it was still running. Effects not committed with Claim.commit() may happen twice.",
            claim.message_id,
            claim.key,
        )
        claim.report_lost("renew")

    def _settle(self) -> bool:
        """Try every pending settlement once; False if one failed again."""
        with self._lock:
            pending, self._settlements = self._settlements, []
        ok = True
        for settlement in pending:
            try:
                settlement.action()
            except CorruptRecord as exc:
                # A data error, not an outage: retrying would fail the same way forever.
                logger.error("Could not %s: %s.", settlement.what, exc)
                self.discard(settlement.claim)
                continue
            except BackendError as exc:
                self.outage.failed(exc, action="retry settling claims")
                ok = False
                with self._lock:
                    self._settlements.append(settlement)
                continue
            self.outage.succeeded()
            logger.info("Settled later: %s.", settlement.what)
            self.discard(settlement.claim)
        return ok


_renewers: dict[int, LeaseRenewer] = {}
_renewers_lock = threading.Lock()


def lease_renewer() -> LeaseRenewer:
    """This process's renewer (a new one in a forked child: keyed by process id)."""
    pid = os.getpid()
    renewer = _renewers.get(pid)
    if renewer is None:
        with _renewers_lock:
            renewer = _renewers.get(pid)
            if renewer is None:
                _renewers.clear()  # a parent's renewer, copied by fork, has no thread here
                renewer = _renewers[pid] = LeaseRenewer()
    return renewer
