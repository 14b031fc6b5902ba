"""Scheduling: a scheduler in every worker process, and the worker's side of cron runs and scans."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import SkipMessage

from .. import events
from ..backends.base import StateBackend
from ..errors import BackendError, ConfigurationError
from ..middleware.base import ResilienceMiddleware, scratch
from ..options import Option, milliseconds, optional
from .cron import DEFAULT_OVERLAP_LEASE
from .inflight import DEFAULT_INFLIGHT_INTERVAL, InflightTracker
from .recovery import DEFAULT_STALLED_AFTER
from .scans import declare_scans, scan_queues
from .scheduler import DEFAULT_POLL_INTERVAL, DEFAULT_SEND_LEASE, Scheduler
from .sender import SEND_ID_OPTION

__all__ = ["Scheduling"]

#: Longest error text kept as a job's last error.
_ERROR_LIMIT = 500


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 3] + "..."


class Scheduling(ResilienceMiddleware):
    """Middleware that runs a scheduler in each worker process and reports cron runs.

    In each worker process (after fork: ``after_worker_boot``) it starts a
    :class:`~dramatiq_resilience.scheduling.scheduler.Scheduler` for the
    broker's cron jobs and recovery scans; N processes on M hosts still send
    each occurrence once, thanks to the backend's claims.  It stops it in
    ``before_worker_shutdown``.  On every message it keeps the process's
    in-flight list for the stalled scan (in memory; published every
    ``inflight_interval``), and for messages of cron jobs it records the
    run's status and last error in the backend, and when the run is over
    (for ``overlap="skip"``): a retried or deferred run is still pending.
    A second send of a run that already started (a scheduler took over a
    send whose confirmation was lost) is skipped without running, counted
    as ``cron_skipped`` with reason ``"duplicate"``; redeliveries, retries
    and deferrals of the run that started are not duplicates.

    Position: second, right after ``RetryGuard`` (``install()`` puts it
    there), so that its before-hook sees every delivery and its after-hooks
    run after ``Retries`` has re-enqueued (or not) a failed run.

    Parameters:
      backend: the state backend.
      run_scheduler: run a scheduler in each worker process (default
        ``True``).  ``False`` when standalone ``dramatiq-resilience scheduler``
        processes do the sending; the worker side (run status, scans,
        in-flight snapshots) stays on.
      scans: which recovery scans run: ``True`` (default, every scan that
        applies to the broker), ``False``, or a list of names.
      scan_every: ``{scan name: milliseconds}`` overriding scan intervals.
      stalled_after: milliseconds (default 300 000) after which a running
        message is reported as stalled; ``None`` turns reporting off.  Actor
        option ``scan_stalled_after``.
      inflight_interval: milliseconds between in-flight snapshots (default 10 000).
      poll_interval: milliseconds between polls for run-now requests (default 2 000).
      send_lease: milliseconds before an unconfirmed send is taken over (default 10 000).
    """

    option_specs = (
        Option("scan_stalled_after", "stalled_after", optional(milliseconds()), per_message=False),
    )

    def __init__(
        self,
        *,
        backend: StateBackend,
        run_scheduler: bool = True,
        scans: bool | Sequence[str] = True,
        scan_every: Mapping[str, int] | None = None,
        stalled_after: int | None = DEFAULT_STALLED_AFTER,
        inflight_interval: int = DEFAULT_INFLIGHT_INTERVAL,
        poll_interval: int = DEFAULT_POLL_INTERVAL,
        send_lease: int = DEFAULT_SEND_LEASE,
    ) -> None:
        super().__init__(backend=backend, on_backend_error="allow")
        self.run_scheduler = bool(run_scheduler)
        if not isinstance(scans, bool) and (
            isinstance(scans, str) or not all(isinstance(name, str) for name in scans)
        ):
            raise ConfigurationError(
                f"must be True, False or a list of scan names, got {scans!r}", option="scans"
            )
        self.scans = scans if isinstance(scans, bool) else list(scans)
        self.scan_every = {
            name: self._check_default(f"scan_every[{name}]", milliseconds(minimum=1_000), every)
            for name, every in (scan_every or {}).items()
        }
        self.stalled_after = stalled_after
        self.inflight_interval = self._check_default("inflight_interval", milliseconds(), inflight_interval)
        self.poll_interval = self._check_default("poll_interval", milliseconds(minimum=100), poll_interval)
        self.send_lease = self._check_default("send_lease", milliseconds(minimum=1_000), send_lease)
        self.check_defaults()
        self.scheduler: Scheduler | None = None
        self.tracker = InflightTracker(backend, interval=self.inflight_interval)
        self._local = threading.local()

    # -- worker life cycle ------------------------------------------------------------

    def _scan_names(self) -> list[str] | None:
        return None if self.scans is True else list(self.scans or [])

    def scan_queues(self, broker: Broker) -> dict[str, str]:
        """The scan actors this middleware's workers declare (by name), with their queue."""
        return scan_queues(broker, self._scan_names()) if self.scans else {}

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        # Declared before the worker starts its consumers, so it consumes the scans' queue.
        if self.scans:
            declare_scans(broker, self._scan_names())

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.tracker.start()
        if self.run_scheduler:
            self.scheduler = Scheduler(
                broker,
                backend=self.backend,
                scans=self.scans,
                scan_every=self.scan_every,
                poll_interval=self.poll_interval,
                send_lease=self.send_lease,
            ).start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        self.tracker.stop()

    # -- deliveries ---------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        # Every message comes through here: read the Message behind the proxy directly.
        raw = getattr(message, "_message", message)
        local = self._local
        local.current = raw.message_id
        local.reenqueued = False
        job = raw.options.get("cron_job")
        if not isinstance(job, str):
            self.tracker.started(raw)
            return
        notes = scratch(message, "scheduling")
        notes["started"] = time.monotonic()
        lease = raw.options.get("cron_lease")
        send_id = raw.options.get(SEND_ID_OPTION)
        first = True
        try:
            first = self.backend.cron_started(
                job,
                message.message_id,
                lease_ms=lease if isinstance(lease, int) else DEFAULT_OVERLAP_LEASE,
                send_id=send_id if isinstance(send_id, str) else None,
            )
        except BackendError as exc:
            self.outage.failed(exc, action="run the job without recording its status")
        else:
            self.outage.succeeded()
        if not first:
            notes["duplicate"] = True
            self.logger.info(
                "Skipping message %r of cron job %r: another send of the same run already started.",
                message.message_id,
                job,
            )
            events.emit(
                "cron_skipped",
                job=job,
                actor_name=message.actor_name,
                occurrence_ms=raw.options.get("cron_occurrence"),
                reason="duplicate",
                pending_message_id=message.message_id,
                message_id=message.message_id,
            )
            # Not tracked: the copy that runs has this message id too, maybe in this process.
            raise SkipMessage(f"Message {message.message_id!r} of cron job {job!r} was sent twice.")
        self.tracker.started(raw)
        events.emit("cron_started", job=job, actor_name=message.actor_name, message_id=message.message_id)

    def after_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        # A retry or a deferral of the delivery in progress: the run goes on.
        if getattr(self._local, "current", None) == message.message_id:
            self._local.reenqueued = True

    def _finish(self, broker: Broker, message: Any, status: str, error: BaseException | None) -> None:
        raw = getattr(message, "_message", message)
        local = self._local
        reenqueued = getattr(local, "reenqueued", False)
        local.current = None
        local.reenqueued = False
        job = raw.options.get("cron_job")
        if isinstance(job, str) and scratch(message, "scheduling").get("duplicate"):
            return  # a skipped second send says nothing about the run that started (nor untracks it)
        self.tracker.finished(raw)
        if not isinstance(job, str):
            return
        if reenqueued and status != "succeeded":
            status = "retrying" if status == "failed" else "deferred"
        text = _error_text(error)
        started = scratch(message, "scheduling").get("started")
        duration = None if started is None else int((time.monotonic() - started) * 1000)
        try:
            self.backend.cron_finished(
                job, message.message_id, status=status, error=text, keep_pending=reenqueued
            )
        except BackendError as exc:
            self.outage.failed(exc, action="leave the run pending until its lease ends")
        else:
            self.outage.succeeded()
        fields = {"job": job, "actor_name": message.actor_name, "message_id": message.message_id}
        events.emit("cron_finished", **fields, status=status, duration_ms=duration, error=text)
        if status in ("failed", "rejected"):
            self.logger.warning("Run %r of cron job %r %s: %s", message.message_id, job, status, text)
            events.emit("cron_failed", **fields, status=status, error=error)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._finish(broker, message, "succeeded" if exception is None else "failed", exception)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        error = getattr(message, "_exception", None) if message.failed else None
        self._finish(broker, message, "rejected" if message.failed else "skipped", error)
