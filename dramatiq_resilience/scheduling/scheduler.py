"""The scheduler: sends each occurrence of each cron job exactly once, whatever the number of schedulers.

Any number of :class:`Scheduler` instances may run (one per worker process
through the ``Scheduling`` middleware, standalone ``dramatiq-resilience
scheduler`` processes, or both).  APScheduler wakes each one up at the jobs'
occurrences (:mod:`.timer`); each instance then, for the job that is due:

1. derives the occurrences since it last looked from the job's schedule and
   its clock (not from APScheduler, which does not say which run time it
   woke up for);
2. keeps the latest one within ``misfire_grace`` (older ones are coalesced
   into it); if even the latest is too late, records it as missed, once;
3. claims it in the backend (``cron_claim``: one atomic step, a high-water
   mark per job), so exactly one instance goes on; the claim also decides to
   skip it when the job is disabled or (``overlap="skip"``) its previous run
   is still queued or running;
4. sends the actor's message with an id derived from the job and the
   occurrence, then confirms the send (``cron_sent``, see :mod:`.sender`).

Every instance also polls the backend every ``poll_interval`` ms (and once
when it starts) for run-now requests (``dramatiq-resilience cron run-now``),
taken by one instance each, and for unconfirmed sends whose lease expired, of
every job: a claimer that died (or a whole deployment that restarted) between
claim and confirmation is replaced within a poll interval of the lease's end,
by whichever instance polls first, without any of them having seen the
claim.  Such a send is taken over while its occurrence is within the job's
``misfire_grace``; later it is reported once as missed (``unsent``) and stops
blocking ``overlap="skip"``.  A duplicate of the same occurrence has the same
message id, and workers run only one of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dramatiq import Message
from dramatiq.broker import Broker
from dramatiq.logging import get_logger

from .. import events
from ..backends.base import StateBackend
from ..backends.cron import CronClaim, CronSend
from ..clock import Clock, SystemClock
from ..errors import BackendError, ConfigurationError
from ..options import milliseconds
from ..outage import OutageLog
from .cron import CronJob, occurrence_message_id
from .cron import jobs as declared_jobs
from .sender import Sender, iso
from .timer import Timer

__all__ = ["DEFAULT_POLL_INTERVAL", "DEFAULT_SEND_LEASE", "POLL_JOB", "Scheduler"]

#: Milliseconds between two polls for run-now requests and expired unconfirmed sends.
DEFAULT_POLL_INTERVAL = 2_000

#: Milliseconds a claimed occurrence may stay unconfirmed before another
#: scheduler takes its send over.
DEFAULT_SEND_LEASE = 10_000

#: How far back (milliseconds) a starting scheduler looks for occurrences
#: missed while no scheduler ran, beyond a job's misfire grace.
MISSED_LOOKBACK = 3_600_000

#: The timer job that polls the backend.
POLL_JOB = "__dramatiq_resilience_poll__"


def _checked(name: str, check: Any, value: Any) -> Any:
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc), option=name) from None


class Scheduler:
    """Sends the cron jobs (and recovery scans) of one broker, each occurrence once across instances.

    Parameters:
      broker: the broker to send on; its declared jobs are scheduled.
      backend: where claims and job state live (default: the backend that
        ``install()`` put on ``broker``).
      jobs: the jobs to schedule (default: every job declared on ``broker``
        plus the recovery scans).
      scans: which recovery scans to schedule when ``jobs`` is not given:
        ``True`` (all that apply), ``False``, or a list of scan names (default:
        what the installed ``Scheduling`` middleware says, else ``True``).
      scan_every: ``{scan name: milliseconds}`` overriding scan intervals.
      clock: where "now" comes from (default: this host's clock; tests pass a
        ``FakeClock`` and call :meth:`tick` instead of :meth:`start`; the
        sender's back-offs then move it instead of sleeping).
      poll_interval: milliseconds between polls for run-now requests and
        expired unconfirmed sends (default 2 000).
      send_lease: milliseconds before another instance takes over a claimed
        but unconfirmed send (default 10 000).  A job whose ``misfire_grace``
        is shorter than ``send_lease`` plus ``poll_interval`` cannot be taken
        over in time: a claimer's death costs it that occurrence (reported
        as missed), never more.
      max_workers: threads sending due jobs (default 4).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        backend: StateBackend | None = None,
        jobs: Iterable[CronJob] | None = None,
        scans: bool | Sequence[str] | None = None,
        scan_every: Mapping[str, int] | None = None,
        clock: Clock | None = None,
        poll_interval: int = DEFAULT_POLL_INTERVAL,
        send_lease: int = DEFAULT_SEND_LEASE,
        max_workers: int = 4,
    ) -> None:
        from ..install import installed

        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        stack = installed(broker)
        if backend is None:
            if stack is None:
                raise ConfigurationError(
                    "the broker has no resilience stack: call dr.install(broker, backend=...) first",
                    option="backend",
                )
            backend = stack.backend
        self.backend = backend
        self._given_jobs = None if jobs is None else list(jobs)
        settings = stack.middleware.get("scheduling") if stack is not None else None
        self.scans = scans if scans is not None else getattr(settings, "scans", True)
        self.scan_every = dict(scan_every if scan_every is not None else getattr(settings, "scan_every", {}))
        self.clock: Clock = clock or SystemClock()
        self.poll_interval = _checked("poll_interval", milliseconds(minimum=100), poll_interval)
        self.send_lease = _checked("send_lease", milliseconds(minimum=1_000), send_lease)
        self.max_workers = max_workers
        self.outage = OutageLog("Scheduler", self.logger)
        self.jobs: dict[str, CronJob] = {}
        self._evaluated: dict[str, int] = {}
        self._warm_until: dict[str, int] = {}
        self._unregistered: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._stopping = threading.Event()
        self._timer: Timer | None = None
        self.sender = Sender(
            broker,
            backend,
            clock=self.clock,
            send_lease=send_lease,
            stopping=self._stopping,
            outage=self.outage,
        )

    # -- life cycle -----------------------------------------------------------------

    def _collect(self) -> dict[str, CronJob]:
        if self._given_jobs is not None:
            return {job.name: job for job in self._given_jobs}
        from .scans import scan_jobs

        found = declared_jobs(self.broker)
        if self.scans:
            names = None if self.scans is True else list(self.scans)
            for job in scan_jobs(self.broker, names=names, every=self.scan_every):
                found.setdefault(job.name, job)
        return found

    def start(self, *, timer: bool = True) -> Scheduler:
        """Register the jobs in the backend, resume where the last scheduler stopped, and start the timer.

        With ``timer=False`` nothing runs by itself: call :meth:`tick` (tests
        with a ``FakeClock``).
        """
        self.jobs = self._collect()
        self._locks = {name: threading.Lock() for name in self.jobs}
        now = self.clock.now_ms()
        for name in self.jobs:
            self._evaluated[name] = now
            if self.jobs[name].warm_up:
                self._warm_until[name] = now + self.jobs[name].warm_up - 1
        self._unregistered = set(self.jobs)
        self._register(now)
        self._stopping.clear()
        if timer:
            self._timer = Timer(self._on_timer, max_workers=self.max_workers)
            for name, job in self.jobs.items():
                self._timer.add(name, job.schedule)
            from .schedules import IntervalSchedule

            self._timer.add(POLL_JOB, IntervalSchedule(max(1_000, self.poll_interval)))
            self._timer.start()
        self.logger.info(
            "Scheduler started with %d job(s): %s.", len(self.jobs), ", ".join(sorted(self.jobs)) or "none"
        )
        # Occurrences missed while no scheduler ran: send the latest within grace.
        for name in self.jobs:
            self.fire_due(name)
        # Sends claimed by a scheduler that died (this one, before a restart, too).
        self._recover()
        return self

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the timer; with ``wait``, let sends in progress finish (claims are never left half done)."""
        self._stopping.set()
        if self._timer is not None:
            self._timer.shutdown(wait=wait)
            self._timer = None
        self.logger.info("Scheduler stopped.")

    def _register(self, now: int) -> None:
        for name in sorted(self._unregistered):
            job = self.jobs[name]
            try:
                last_fired = self.backend.cron_register(
                    name, job.spec(), next_run_ms=job.schedule.next_after(now)
                )
            except BackendError as exc:
                self.outage.failed(exc, action="register the jobs again at the next poll")
                return
            self.outage.succeeded()
            self._unregistered.discard(name)
            if last_fired is not None:
                lookback = now - max(job.misfire_grace, MISSED_LOOKBACK)
                self._evaluated[name] = min(self._evaluated[name], max(last_fired, lookback))

    # -- the timer's callback ----------------------------------------------------------

    def _on_timer(self, job_id: str, run_times: Sequence[int]) -> None:
        if self._stopping.is_set():
            return
        if job_id == POLL_JOB:
            self.poll()
        else:
            self.fire_due(job_id, hint_ms=max(run_times, default=None))

    def tick(self) -> None:
        """Evaluate every job and poll once, at the clock's time (what the timer does, for tests)."""
        for name in self.jobs:
            self.fire_due(name)
        self.poll()

    # -- firing ------------------------------------------------------------------------

    def fire_due(self, name: str, *, hint_ms: int | None = None) -> str | None:
        """Send job ``name``'s due occurrence if this instance claims it.

        ``hint_ms`` is the run time APScheduler woke up for; the occurrences
        are those of the schedule since this instance last looked, up to the
        later of the clock and the hint.  Returns the claim's status, or
        ``None`` when nothing was due or the backend failed (the occurrence
        is then looked at again on the next call, within its grace).
        """
        job = self.jobs[name]
        with self._locks[name]:
            now = self.clock.now_ms()
            upto = now if hint_ms is None else max(now, hint_ms)
            since = max(self._evaluated[name], self._warm_until.get(name, 0))
            occurrences = job.schedule.between(since, upto)
            if not occurrences:
                return None
            runnable = [moment for moment in occurrences if now - moment <= job.misfire_grace]
            occurrence = (runnable or occurrences)[-1]
            message_id = occurrence_message_id(name, occurrence)
            following = job.schedule.next_after(occurrence)
            try:
                claim = self.backend.cron_claim(
                    name,
                    occurrence,
                    message_id,
                    next_run_ms=following,
                    skip_if_pending=job.overlap == "skip",
                    lease_ms=job.overlap_lease,
                    send_lease_ms=self.send_lease,
                    grace_ms=job.misfire_grace,
                    missed=not runnable,
                )
            except BackendError as exc:
                self.outage.failed(exc, action="retry the occurrence at the next wake-up")
                return None
            self.outage.succeeded()
            self._evaluated[name] = upto
            self._settle(job, claim, leased_at=now)
            self._decided(job, claim, occurrence, message_id, now=now, coalesced=len(runnable) - 1)
            return claim.status

    def _decided(
        self, job: CronJob, claim: CronClaim, occurrence: int, message_id: str, *, now: int, coalesced: int
    ) -> None:
        fields: dict[str, Any] = {"job": job.name, "actor_name": job.actor_name, "occurrence_ms": occurrence}
        if claim.status == "claimed":
            self.sender.send(
                job, CronSend(occurrence, message_id), coalesced=max(0, coalesced), leased_at=now
            )
        elif claim.status in ("disabled", "overlap"):
            self.logger.info(
                "Skipped occurrence %s of cron job %r: %s.",
                iso(occurrence),
                job.name,
                "the job is disabled"
                if claim.status == "disabled"
                else f"its previous run {claim.pending_message_id!r} is still queued or running",
            )
            events.emit(
                "cron_skipped", **fields, reason=claim.status, pending_message_id=claim.pending_message_id
            )
        elif claim.status == "missed":
            self.logger.warning(
                "Missed occurrence %s of cron job %r: no scheduler sent it within its grace of %d "
                "milliseconds (it is %d milliseconds late).",
                iso(occurrence),
                job.name,
                job.misfire_grace,
                now - occurrence,
            )
            events.emit("cron_missed", **fields, late_ms=now - occurrence, reason="late")

    def _settle(self, job: CronJob, claim: CronClaim, *, leased_at: int) -> None:
        """Send what a dead claimer left unconfirmed; report what is too old to send."""
        for send in claim.recovered:
            self.logger.warning(
                "Taking over occurrence %s of cron job %r: the scheduler that claimed it did not confirm.",
                iso(send.occurrence_ms),
                job.name,
            )
            self.sender.send(job, send, recovered=True, leased_at=leased_at)
        for send in claim.expired:
            self.logger.error(
                "Occurrence %s of cron job %r was claimed but never confirmed sent within its grace of "
                "%d milliseconds; it is dropped and no longer blocks the job.",
                iso(send.occurrence_ms),
                job.name,
                job.misfire_grace,
            )
            events.emit(
                "cron_missed",
                job=job.name,
                actor_name=job.actor_name,
                occurrence_ms=send.occurrence_ms,
                late_ms=self.clock.now_ms() - send.occurrence_ms,
                reason="unsent",
            )

    # -- run now and polling -------------------------------------------------------------

    def run_now(self, name: str) -> Message[Any]:
        """Send job ``name`` now, outside its schedule (also when it is disabled or still running).

        Raises:
          KeyError: if this scheduler has no job ``name``.
        """
        return self.sender.run_now(self.jobs.get(name) or declared_jobs(self.broker)[name])

    def poll(self) -> None:
        """Take run-now requests, take over expired unconfirmed sends, retry failed registrations."""
        now = self.clock.now_ms()
        try:
            if self._unregistered:
                self._register(now)
            taken = self.backend.cron_take_requests(sorted(self.jobs))
        except BackendError as exc:
            self.outage.failed(exc, action="poll again later")
            return
        for name in taken:
            try:
                self.run_now(name)
            except Exception:
                self.logger.exception("Could not run cron job %r on request.", name)
        self._recover()

    def _recover(self) -> None:
        """Take over every job's unconfirmed sends whose lease expired, whoever claimed them.

        Nothing in memory says which sends to look for: a scheduler that just
        started (or restarted) finds those of a claimer that died as well as
        one that saw the claim.  Not under the jobs' locks, so that a job busy
        sending does not delay the others' takeovers.
        """
        now = self.clock.now_ms()
        try:
            claims = self.backend.cron_recover(
                {name: job.misfire_grace for name, job in sorted(self.jobs.items())},
                send_lease_ms=self.send_lease,
            )
        except BackendError as exc:
            self.outage.failed(exc, action="check unconfirmed sends at the next poll")
            return
        self.outage.succeeded()
        for name, claim in claims.items():
            self._settle(self.jobs[name], claim, leased_at=now)
