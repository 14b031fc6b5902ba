"""Scheduler state: cron jobs, their claimed occurrences and runs, and in-flight snapshots.

One job's state lives in one record (a Redis hash ``cron:{<job>}:job``) next to
its unconfirmed sends (``cron:{<job>}:sending``), so that one script decides an
occurrence:

* ``last_fired``, the high-water mark: the latest occurrence any scheduler
  claimed.  :meth:`CronOps.cron_claim` succeeds only for an occurrence later
  than it and moves it, so each occurrence is claimed once, by one scheduler,
  whatever the number of schedulers.
* ``sending``: claimed occurrences whose message is not yet confirmed sent,
  each with a lease.  If the claiming scheduler dies before it confirms
  (:meth:`CronOps.cron_sent`), another scheduler takes the send over once the
  lease has expired (the message id is derived from the occurrence, so a
  duplicate send is recognisable).  An expired send older than the grace is
  dropped together with the pending run it set, so it cannot block
  ``overlap="skip"``.
* ``pending``: the message of the job's latest run until a worker reports it
  finished, with a lease, for ``overlap="skip"``.
* ``runs`` (``cron:{<job>}:runs`` and ``:started``): which send of each
  recently started run a worker ran.  Every enqueue of a run carries its own
  send id (message option ``cron_send_id``); a redelivery, retry or deferral
  keeps it, while a second send of the same message id (a scheduler that took
  over a send whose confirmation was lost) has another one, and
  :meth:`CronOps.cron_started` tells the worker to skip it.

Job names index (``cron:{index}:jobs``) and run-now requests
(``cron:{index}:requests``) share one hash group; in-flight snapshots of worker
processes live under ``cron:{inflight}``.  Every time argument is in
milliseconds.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "CLAIM_STATUSES",
    "RUN_MEMORY",
    "RUN_MEMORY_COUNT",
    "CronClaim",
    "CronJobState",
    "CronOps",
    "CronSend",
    "InflightMessage",
    "InflightSnapshot",
]

#: What :meth:`CronOps.cron_claim` can answer.
CLAIM_STATUSES = ("claimed", "taken", "disabled", "overlap", "missed", "none")

#: Milliseconds a started run's send id is remembered, to recognise a second send of it.
RUN_MEMORY = 86_400_000

#: At most this many started runs are remembered per job (the oldest are forgotten first).
RUN_MEMORY_COUNT = 1_000


@dataclass(frozen=True)
class CronSend:
    """A claimed occurrence and the id of its message."""

    occurrence_ms: int
    message_id: str


@dataclass(frozen=True)
class CronClaim:
    """The answer of :meth:`CronOps.cron_claim`.

    Attributes:
      status: ``"claimed"`` (send it), ``"taken"`` (another scheduler decided
        this occurrence or a later one), ``"disabled"`` / ``"overlap"`` (this
        caller decided to skip it), ``"no_history"`` (a catch-up claim on a job
        that never fired), or ``"none"`` (only recovery was asked for).
      previous_ms: ``last_fired`` before this claim (``None`` if never fired).
      pending_message_id: with ``"overlap"``, the run still queued or running.
      recovered: unconfirmed sends whose lease expired, now leased to the
        caller, which must send them and confirm.
      expired: unconfirmed sends too old to send (older than the grace),
        dropped with the pending run they set.
    """

    status: str
    previous_ms: int | None = None
    pending_message_id: str | None = None
    recovered: tuple[CronSend, ...] = ()
    expired: tuple[CronSend, ...] = ()


@dataclass(frozen=True)
class CronJobState:
    """What the backend knows about one job (times in milliseconds since the epoch)."""

    name: str
    enabled: bool
    actor_name: str | None = None
    queue_name: str | None = None
    schedule: str | None = None
    timezone: str | None = None
    overlap: str | None = None
    last_fired_ms: int | None = None
    next_run_ms: int | None = None
    last_run_ms: int | None = None
    last_message_id: str | None = None
    last_status: str | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    last_finished_ms: int | None = None
    pending_message_id: str | None = None
    pending_until_ms: int | None = None
    registered_ms: int | None = None
    run_requested: bool = False

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))


@dataclass(frozen=True)
class InflightMessage:
    """A message a worker process is running, and since when (milliseconds)."""

    message_id: str
    actor_name: str
    queue_name: str
    started_ms: int


@dataclass(frozen=True)
class InflightSnapshot:
    """What one worker process was running when it last published."""

    process: str
    published_ms: int
    messages: tuple[InflightMessage, ...]


class CronOps(abc.ABC):
    """Atomic operations of the scheduler.  See the module docstring for the model."""

    @abc.abstractmethod
    def cron_register(self, name: str, spec: Mapping[str, str], *, next_run_ms: int | None) -> int | None:
        """Record (or refresh) job ``name``'s definition and next run; a new job starts enabled.

        ``spec`` holds plain strings (``actor_name``, ``queue_name``, ``schedule``,
        ``timezone``, ``overlap``).  State (enabled, last run...) is kept.
        Returns ``last_fired`` (``None`` if the job never fired), where a
        starting scheduler resumes.
        """

    @abc.abstractmethod
    def cron_claim(
        self,
        name: str,
        occurrence_ms: int | None,
        message_id: str,
        *,
        next_run_ms: int | None,
        skip_if_pending: bool,
        lease_ms: int,
        send_lease_ms: int,
        grace_ms: int,
        missed: bool = False,
    ) -> CronClaim:
        """Decide occurrence ``occurrence_ms`` of job ``name``, once across every scheduler.

        If it is not later than ``last_fired``: ``"taken"``.  Otherwise
        ``last_fired`` moves to it (and ``next_run`` to ``next_run_ms``) and the
        answer is ``"disabled"`` if the job is disabled, ``"overlap"`` if
        ``skip_if_pending`` and the previous run's lease has not expired, or
        ``"claimed"``: the run is then pending for ``lease_ms`` and an
        unconfirmed send is recorded for ``send_lease_ms``.  With ``missed``
        (the occurrence is too late to send), ``last_fired`` moves and the
        answer is ``"missed"``, so that one scheduler reports it.  With
        ``occurrence_ms=None`` only recovery runs (answer ``"none"``).

        Recovery, in every call: unconfirmed sends whose lease expired are
        leased to the caller for ``send_lease_ms`` (``recovered``), or dropped
        if their occurrence is more than ``grace_ms`` old (``expired``); a
        dropped send that is still the pending run stops being pending.
        """

    def cron_recover(self, graces: Mapping[str, int], *, send_lease_ms: int) -> dict[str, CronClaim]:
        """Recovery only (:meth:`cron_claim` without an occurrence) for each job of ``graces``.

        ``graces`` maps job names to their misfire grace in milliseconds.
        Returns ``{job: claim}`` (status ``"none"``).  Backends may do it in
        one round trip; each job is still one atomic step, and a job whose step
        fails (a corrupt key) is left out of the answer rather than failing the
        others; ``BackendError`` only when every job's step failed.
        """
        answers = {}
        for name, grace in graces.items():
            answers[name] = self.cron_claim(
                name, None, "", next_run_ms=None, skip_if_pending=False, lease_ms=0,
                send_lease_ms=send_lease_ms, grace_ms=grace,
            )  # fmt: skip
        return answers

    @abc.abstractmethod
    def cron_sent(
        self, name: str, message_id: str, *, occurrence_ms: int | None = None, lease_ms: int | None = None
    ) -> None:
        """Confirm that a run's message was enqueued: last run, last message id, status ``"queued"``.

        ``occurrence_ms`` clears that unconfirmed send; ``lease_ms`` (for runs
        requested by hand, which claim nothing) makes this message the pending run.
        """

    @abc.abstractmethod
    def cron_started(self, name: str, message_id: str, *, lease_ms: int, send_id: str | None = None) -> bool:
        """A worker started the run ``message_id``: status ``"running"``; its pending lease is renewed.

        ``send_id`` identifies the enqueue this delivery came from.  The first
        send id started for a message id is remembered (for :data:`RUN_MEMORY`
        milliseconds, and the job's last :data:`RUN_MEMORY_COUNT` runs); a
        delivery of the same message id with another send id is a second send
        of a run that already started: the answer is then ``False`` (skip it)
        and nothing changes.  ``True`` otherwise, also without ``send_id`` and
        for a job no scheduler registered.
        """

    @abc.abstractmethod
    def cron_run_started(self, name: str, message_id: str) -> bool:
        """Whether a worker started run ``message_id`` of job ``name`` (as :meth:`cron_started` remembers)."""

    @abc.abstractmethod
    def cron_finished(
        self, name: str, message_id: str, *, status: str, error: str | None = None, keep_pending: bool = False
    ) -> None:
        """A delivery of run ``message_id`` ended with ``status`` (and ``error``).

        Unless ``keep_pending`` (the message was re-enqueued: a retry or a
        deferral), the run stops being pending.
        """

    @abc.abstractmethod
    def cron_set_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable job ``name``; ``False`` if no scheduler ever registered it."""

    @abc.abstractmethod
    def cron_request_run(self, name: str) -> bool:
        """Ask any scheduler to run job ``name`` now; ``False`` if the job is unknown."""

    @abc.abstractmethod
    def cron_take_requests(self, names: Sequence[str]) -> list[str]:
        """Take the run-now requests of the jobs in ``names`` (each request is taken once)."""

    @abc.abstractmethod
    def cron_jobs(self) -> list[CronJobState]:
        """Every registered job, sorted by name."""

    @abc.abstractmethod
    def cron_job(self, name: str) -> CronJobState | None:
        """Job ``name``'s state, or ``None``."""

    @abc.abstractmethod
    def cron_inflight_publish(
        self, process: str, messages: Sequence[InflightMessage], *, ttl_ms: int
    ) -> None:
        """Replace worker process ``process``'s snapshot; it expires after ``ttl_ms``.

        An empty ``messages`` deletes the snapshot.
        """

    @abc.abstractmethod
    def cron_inflight(self) -> list[InflightSnapshot]:
        """Every unexpired snapshot, sorted by process; expired ones are deleted."""


def _int(value: object) -> int | None:
    if value is None or value in {"", b""}:
        return None
    return int(value)  # type: ignore[call-overload]


def _text(value: object) -> str | None:
    if value is None or value in {"", b""}:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def job_state(name: str, fields: Mapping[str, object], *, run_requested: bool) -> CronJobState:
    """Decode a job record (a Redis hash, or the stub's dict of the same strings)."""
    get = {(_text(k) or ""): v for k, v in fields.items()}.get
    return CronJobState(
        name=name,
        enabled=_text(get("enabled")) != "0",
        actor_name=_text(get("actor_name")),
        queue_name=_text(get("queue_name")),
        schedule=_text(get("schedule")),
        timezone=_text(get("timezone")),
        overlap=_text(get("overlap")),
        last_fired_ms=_int(get("last_fired")),
        next_run_ms=_int(get("next_run")),
        last_run_ms=_int(get("last_run")),
        last_message_id=_text(get("last_message_id")),
        last_status=_text(get("last_status")),
        last_error=_text(get("last_error")),
        last_error_ms=_int(get("last_error_ms")),
        last_finished_ms=_int(get("last_finished")),
        pending_message_id=_text(get("pending_id")),
        pending_until_ms=_int(get("pending_until")),
        registered_ms=_int(get("registered")),
        run_requested=run_requested,
    )
