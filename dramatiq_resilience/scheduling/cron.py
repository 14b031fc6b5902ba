"""Declaring cron jobs: ``@cron(...)`` stacked on ``@dramatiq.actor``, or ``schedule(actor, ...)``.

A job is an actor, a schedule (a 5-field cron expression in a time zone, or
a fixed interval) and the arguments to send.  Declaring a job only records it
on the actor's broker; a :class:`~dramatiq_resilience.scheduling.scheduler.Scheduler`
(in a worker process through the ``Scheduling`` middleware, or the standalone
``dramatiq-resilience scheduler`` process) sends its messages.  Everything is
checked at declaration: a bad cron field or time zone raises
``ConfigurationError`` naming the job and the field.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, TypeVar

from dramatiq import Actor, Message
from dramatiq.broker import Broker

from ..errors import ConfigurationError
from ..options import choice, milliseconds
from .schedules import CronSchedule, IntervalSchedule, Schedule, ScheduleError

__all__ = [
    "DEFAULT_MISFIRE_GRACE",
    "DEFAULT_OVERLAP_LEASE",
    "CronJob",
    "cron",
    "jobs",
    "occurrence_message_id",
    "schedule",
]

#: Milliseconds after an occurrence during which a late scheduler still sends
#: it (missed occurrences within the grace are coalesced into one run).
DEFAULT_MISFIRE_GRACE = 60_000

#: Milliseconds a run counts as queued or running for ``overlap="skip"`` when
#: no worker reports it finished (a lost message then stops blocking the job).
DEFAULT_OVERLAP_LEASE = 3_600_000

#: The namespace of message ids derived from a job and an occurrence.
MESSAGE_ID_NAMESPACE = uuid.UUID("5c7a8c8e-3b0d-5f0e-9a52-7d1c2c6f0a11")

_NAME = re.compile(r"^[A-Za-z0-9_.:@/-]+$")
_overlap = choice("skip", "allow")
_registry: weakref.WeakKeyDictionary[Broker, dict[str, CronJob]] = weakref.WeakKeyDictionary()

A = TypeVar("A", bound=Actor)


def occurrence_message_id(job_name: str, occurrence_ms: int) -> str:
    """The message id of job ``job_name``'s occurrence at ``occurrence_ms`` (a UUID5, the same everywhere)."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{job_name}@{occurrence_ms}"))


@dataclass(frozen=True)
class CronJob:
    """A scheduled actor.  Built by :func:`cron` and :func:`schedule`; see them for the fields."""

    name: str
    actor: Actor
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    jitter: int = 0
    misfire_grace: int = DEFAULT_MISFIRE_GRACE
    overlap: str = "skip"
    overlap_lease: int = DEFAULT_OVERLAP_LEASE
    #: Milliseconds after its start during which a scheduler sends none of this
    #: job's occurrences (other schedulers keep sending them).  0 for cron jobs;
    #: one interval for scans, so that a short-lived worker (a test, a one-off
    #: command) does not run them.
    warm_up: int = 0

    @property
    def actor_name(self) -> str:
        return str(self.actor.actor_name)

    @property
    def queue_name(self) -> str:
        return str(self.actor.queue_name)

    def spec(self) -> dict[str, str]:
        """The definition stored in the backend, for listings."""
        return {
            "actor_name": self.actor_name,
            "queue_name": self.queue_name,
            "schedule": self.schedule.describe(),
            "timezone": self.schedule.timezone,
            "overlap": self.overlap,
        }

    def message(self, message_id: str, *, occurrence_ms: int | None) -> Message[Any]:
        """The message of one run: for an occurrence, or run by hand (``occurrence_ms=None``)."""
        # cron_lease: the worker renews the pending run's lease by this much when it starts.
        options: dict[str, Any] = {"cron_job": self.name, "cron_lease": self.overlap_lease}
        if occurrence_ms is None:
            options["cron_run_now"] = True
        else:
            options["cron_occurrence"] = occurrence_ms
        message = self.actor.message_with_options(args=self.args, kwargs=self.kwargs, **options)
        return dataclasses.replace(message, message_id=message_id)

    def delay_for(self, message_id: str) -> int:
        """The jitter of a run in milliseconds, in ``[0, jitter]``, derived from its message id.

        Derived rather than random, so that whichever scheduler sends an
        occurrence (or sends it again after a takeover) gives it the same delay.
        """
        return uuid.UUID(message_id).int % (self.jitter + 1) if self.jitter else 0


def jobs(broker: Broker) -> dict[str, CronJob]:
    """The jobs declared on ``broker``, by name."""
    return dict(_registry.get(broker, {}))


def _forget(broker: Broker, name: str) -> None:
    _registry.get(broker, {}).pop(name, None)


def _check(name: str, option: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc), job=name, option=option) from None


def schedule(
    actor: A,
    expression: str | None = None,
    *,
    every: int | None = None,
    tz: str | tzinfo = "UTC",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    jitter: int = 0,
    misfire_grace: int = DEFAULT_MISFIRE_GRACE,
    overlap: str = "skip",
    overlap_lease: int = DEFAULT_OVERLAP_LEASE,
    name: str | None = None,
) -> CronJob:
    """Schedule ``actor``: a cron ``expression`` in ``tz``, or ``every`` milliseconds.

    The registry call for jobs declared away from the actor (``@cron`` is the
    decorator form).  Returns the :class:`CronJob`.

    Parameters:
      actor: a Dramatiq actor.
      expression: ``"minute hour day month day-of-week"`` (Vixie cron: day of
        week 0 and 7 are Sunday) or ``@hourly``, ``@daily``, ``@weekly``,
        ``@monthly``, ``@yearly``.
      every: instead of ``expression``, an interval in milliseconds (>= 1000);
        occurrences are multiples of it since the epoch.
      tz: the cron expression's time zone, an IANA name (default ``"UTC"``).
      args, kwargs: what each run is sent with (must be serializable).
      jitter: milliseconds (default 0): each run is delayed by a value in
        ``[0, jitter]`` derived from its message id, to spread jobs that share a tick.
      misfire_grace: milliseconds (default 60 000): how late an occurrence may
        still be sent; missed occurrences within it are coalesced into one run.
        It also bounds the takeover of a send whose scheduler died after
        claiming it: that happens when the scheduler's ``send_lease`` ends
        (10 000, seen within its ``poll_interval``, 2 000), so with a shorter
        grace such an occurrence is reported missed instead, and the job
        goes on at its next occurrence.
      overlap: ``"skip"`` (default) skips an occurrence while the previous run
        is still queued or running; ``"allow"`` sends it anyway.
      overlap_lease: milliseconds (default 3 600 000): how long a run counts as
        queued or running when no worker reports it finished.
      name: the job's name (default: the actor's name); required to schedule
        one actor twice.

    Raises:
      ConfigurationError: naming the job and what was wrong (``option`` is
        ``"cron"`` for the expression, with the field named in the message).
    """
    if not isinstance(actor, Actor):
        raise ConfigurationError(
            f"must be a Dramatiq actor (stack @cron above @dramatiq.actor), got {actor!r}",
            job=name,
            option="actor",
        )
    job_name = actor.actor_name if name is None else name
    if not isinstance(job_name, str) or not _NAME.match(job_name):
        raise ConfigurationError(
            f"must be a non-empty name of letters, digits and _ . : @ / -, got {job_name!r}", option="name"
        )
    if (expression is None) == (every is None):
        raise ConfigurationError(
            "give either a cron expression or every=milliseconds", job=job_name, option="cron"
        )
    try:
        schedule_: Schedule = (
            IntervalSchedule(every) if every is not None else CronSchedule(expression or "", tz)
        )
    except ScheduleError as exc:
        raise ConfigurationError(
            str(exc), job=job_name, option=exc.field if exc.field in ("tz", "every") else "cron"
        ) from None
    if every is not None and tz != "UTC":
        raise ConfigurationError("a time zone only applies to cron expressions", job=job_name, option="tz")
    if not isinstance(args, (tuple, list)):
        raise ConfigurationError(f"must be a tuple or list, got {args!r}", job=job_name, option="args")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"must be a dict, got {kwargs!r}", job=job_name, option="kwargs")
    job = CronJob(
        name=job_name,
        actor=actor,
        schedule=schedule_,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        jitter=_check(job_name, "jitter", milliseconds(minimum=0), jitter),
        misfire_grace=_check(job_name, "misfire_grace", milliseconds(minimum=1_000), misfire_grace),
        overlap=_check(job_name, "overlap", _overlap, overlap),
        overlap_lease=_check(job_name, "overlap_lease", milliseconds(minimum=1_000), overlap_lease),
    )
    try:
        job.message(occurrence_message_id(job_name, 0), occurrence_ms=0).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"args and kwargs must be serializable: {exc}", job=job_name, option="args"
        ) from None
    registry = _registry.setdefault(actor.broker, {})
    existing = registry.get(job_name)
    if existing is not None and existing.actor is actor:
        raise ConfigurationError(
            f"is already scheduled on actor {actor.actor_name!r}; give each schedule its own name=",
            job=job_name,
            option="name",
        )
    # A job declared again by a new actor object (a module imported again) replaces the old one.
    registry[job_name] = job
    return job


def cron(
    expression: str | None = None,
    *,
    every: int | None = None,
    tz: str | tzinfo = "UTC",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    jitter: int = 0,
    misfire_grace: int = DEFAULT_MISFIRE_GRACE,
    overlap: str = "skip",
    overlap_lease: int = DEFAULT_OVERLAP_LEASE,
    name: str | None = None,
) -> Callable[[A], A]:
    """Decorator: schedule the actor below it.  Stack it *above* ``@dramatiq.actor``::

        @dr.cron("0 3 * * *", tz="Europe/Paris")
        @dramatiq.actor
        def nightly_report(): ...

    The arguments are those of :func:`schedule`; the actor is returned unchanged.
    """

    def decorate(actor: A) -> A:
        schedule(
            actor,
            expression,
            every=every,
            tz=tz,
            args=args,
            kwargs=kwargs,
            jitter=jitter,
            misfire_grace=misfire_grace,
            overlap=overlap,
            overlap_lease=overlap_lease,
            name=name,
        )
        return actor

    return decorate
