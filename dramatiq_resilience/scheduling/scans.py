"""Recovery scans: internal actors on their own queue, sent by the scheduler as interval jobs.

A scan is a named operation run periodically: the scheduler sends its actor
(``dramatiq_resilience.scan.<name>`` on queue ``dramatiq_resilience``) as the
interval job ``scan:<name>``, so any number of schedulers run each tick once,
and a worker runs it like any job (time limit, failures, metrics).  A
scheduler sends no scan during its first interval (``CronJob.warm_up``): the
schedulers already running do, and a short-lived worker runs none.  Each run
logs what it did and emits ``scan_completed`` with its counts (``scan_failed``
when it raises).

Built in (see :mod:`.recovery`): ``dead_workers``, ``stalled``,
``dead_letters_trim``, ``dead_letters_redrive`` and ``dead_letters_import``.

Other pieces (dead letters, metrics, health) register theirs with
:func:`register_scan`: a name, an operation taking a :class:`ScanContext` and
returning its counts, an interval, and a predicate saying on which brokers it
applies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import Broker
from dramatiq.logging import get_logger

from .. import events
from ..backends.base import StateBackend
from ..errors import ConfigurationError
from .cron import CronJob
from .schedules import IntervalSchedule

__all__ = [
    "DEFAULT_SCAN_TIME_LIMIT",
    "SCAN_QUEUE",
    "Scan",
    "ScanContext",
    "declare_scans",
    "register_scan",
    "registered_scans",
    "run_scan",
    "scan_actor_name",
    "scan_jobs",
    "scan_queues",
    "unregister_scan",
]

logger = get_logger(__name__)

#: The queue of every scan actor.
SCAN_QUEUE = "dramatiq_resilience"

#: Milliseconds a scan may run (its actor's ``time_limit``).
DEFAULT_SCAN_TIME_LIMIT = 60_000


@dataclass(frozen=True)
class ScanContext:
    """What a scan operation gets.

    Attributes:
      name: the scan's name.
      broker: the broker of the worker running the scan.
      backend: the state backend.
      stack: the ``Stack`` that ``install()`` put on the broker (or ``None``).
      now_ms: the backend's time when the scan started, in milliseconds.
    """

    name: str
    broker: Broker
    backend: StateBackend
    stack: Any
    now_ms: int

    @property
    def settings(self) -> Any:
        """The ``Scheduling`` middleware on the broker, or ``None``."""
        return _scheduling(self.broker)


#: ``operation(context) -> {count name: count}``.
Operation = Callable[[ScanContext], Mapping[str, int] | None]


@dataclass(frozen=True)
class Scan:
    """A registered scan.  See :func:`register_scan`."""

    name: str
    operation: Operation
    every: int
    applies: Callable[[Broker], bool]
    time_limit: int = DEFAULT_SCAN_TIME_LIMIT
    description: str = ""


def _scheduling(broker: Broker) -> Any:
    from .middleware import Scheduling

    return next((m for m in broker.middleware if isinstance(m, Scheduling)), None)


_scans: dict[str, Scan] = {}
_builtins_registered = False


def _always(broker: Broker) -> bool:
    return True


def register_scan(
    name: str,
    operation: Operation,
    *,
    every: int,
    applies: Callable[[Broker], bool] | None = None,
    time_limit: int = DEFAULT_SCAN_TIME_LIMIT,
    description: str = "",
) -> Scan:
    """Register (or replace) the scan ``name``, run every ``every`` milliseconds.

    Call it before schedulers and workers start (at import of the piece that
    owns the scan, or in its constructor).  Registering the same name again
    replaces the scan.

    Parameters:
      name: letters, digits and ``_``; the job is ``scan:<name>`` and the actor
        ``dramatiq_resilience.scan.<name>``.
      operation: ``operation(ScanContext) -> {count name: int}``; what it
        returns is logged and emitted with ``scan_completed``.
      every: the interval in milliseconds (>= 1000); overridable per
        deployment with ``Scheduling(scan_every={name: ms})``.
      applies: ``applies(broker) -> bool``: whether the scan runs for a broker
        (default: always).  Evaluated when a scheduler or worker starts.
      time_limit: the scan actor's time limit in milliseconds (default 60 000).
        A run counts as queued or running for one and a half intervals only
        (so that a worker dying with it blocks the scan for one tick, not
        more); a run slower than that may have the next one beside it, so
        build the operation from steps that tolerate it (atomic, idempotent).
      description: one line for listings.
    """
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ConfigurationError(
            f"must be letters, digits and _, got {name!r}", job=f"scan:{name}", option="name"
        )
    if isinstance(every, bool) or not isinstance(every, int) or every < 1000:
        raise ConfigurationError(
            f"must be an interval in milliseconds >= 1000, got {every!r}", job=f"scan:{name}", option="every"
        )
    scan = Scan(name, operation, every, applies or _always, time_limit, description)
    registered_scans()  # built-ins first, so that a piece's own scan may replace one
    _scans[name] = scan
    return scan


def unregister_scan(name: str) -> None:
    """Remove scan ``name`` (unknown names are ignored)."""
    registered_scans()
    _scans.pop(name, None)


def registered_scans() -> dict[str, Scan]:
    """Every registered scan, by name (the built-in ones of :mod:`.recovery` first)."""
    global _builtins_registered  # noqa: PLW0603 - registered once, on first use
    if not _builtins_registered:
        _builtins_registered = True
        from .recovery import register_builtin_scans

        register_builtin_scans()
    return dict(_scans)


def scan_actor_name(name: str) -> str:
    return f"dramatiq_resilience.scan.{name}"


def _selected(broker: Broker, names: Sequence[str] | None) -> list[Scan]:
    scans = registered_scans()
    if names is not None:
        unknown = sorted(set(names) - set(scans))
        if unknown:
            raise ConfigurationError(
                f"unknown scan(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(scans))}",
                option="scans",
            )
        chosen = [scans[name] for name in names]
    else:
        chosen = list(scans.values())
    return [scan for scan in chosen if scan.applies(broker)]


def scan_queues(broker: Broker, names: Sequence[str] | None = None) -> dict[str, str]:
    """The actors :func:`declare_scans` declares on ``broker``, by name, with their queue; declares none.

    For a process that reports on workers without being one (``health``, the demo's
    summary): the scans' queue is known before any scan has run there.
    """
    return {scan_actor_name(scan.name): SCAN_QUEUE for scan in _selected(broker, names)}


def declare_scans(broker: Broker, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Declare the actors of the scans that apply to ``broker`` (idempotent); return them by scan name."""
    actors: dict[str, Any] = {}
    for scan in _selected(broker, names):
        actor_name = scan_actor_name(scan.name)
        if actor_name in broker.actors:
            actors[scan.name] = broker.actors[actor_name]
            continue

        def run(scan_name: str = scan.name) -> None:
            run_scan(broker, scan_name)

        run.__name__ = f"scan_{scan.name}"
        # No circuit breaker: a scan that fails (the backend is down) must run again at its
        # next tick, not wait out a cooldown after the outage; its failures are counted and
        # logged as scan_failed, and operators' breaker lists stay about their dependencies.
        options = {"breaker": False} if "breaker" in broker.actor_options else {}
        actors[scan.name] = dramatiq.actor(  # type: ignore[call-overload]
            run,
            broker=broker,
            actor_name=actor_name,
            queue_name=SCAN_QUEUE,
            max_retries=0,
            time_limit=scan.time_limit,
            **options,
        )
    return actors


def scan_jobs(
    broker: Broker, *, names: Sequence[str] | None = None, every: Mapping[str, int] | None = None
) -> list[CronJob]:
    """The interval jobs ``scan:<name>`` of the scans that apply to ``broker`` (declaring their actors)."""
    every = every or {}
    jobs = []
    scans = registered_scans()
    for name, actor in declare_scans(broker, names).items():
        scan = scans[name]
        interval = int(every.get(name, scan.every))
        jobs.append(
            CronJob(
                name=f"scan:{name}",
                actor=actor,
                schedule=IntervalSchedule(interval),
                # A scan is worth running late only within one interval; then the next tick comes.
                misfire_grace=max(1_000, interval),
                overlap="skip",
                # How long a run blocks the next ticks when no worker reports it finished: from its
                # send, and again from its start.  A worker that dies (or is saturated) holding the
                # run would block the scan for the whole lease, and the dead-worker scan is what
                # frees what a dead worker held, its own run included: a long lease (it was
                # max(2 x time_limit, interval), 2 minutes) stopped every recovery that long.
                # One and a half intervals skip exactly one tick, and the one after sends the scan
                # again: recovery waits at most two intervals for a lost run, and saturated workers
                # still get at most one queued run of a scan per two intervals, not one per tick.
                # A run slower than that may get a second one beside it: scans are made of atomic
                # steps that tolerate it (see register_scan).
                overlap_lease=interval + interval // 2,
                warm_up=interval,
            )
        )
    return jobs


def run_scan(broker: Broker, name: str) -> dict[str, int]:
    """Run scan ``name`` now, in this process: log, emit ``scan_completed`` (or ``scan_failed``)."""
    from ..install import installed

    scan = registered_scans()[name]
    stack = installed(broker)
    # Without install(), the Scheduling middleware added by hand knows the backend.
    backend = stack.backend if stack is not None else getattr(_scheduling(broker), "backend", None)
    if backend is None:
        raise ConfigurationError(
            "the broker has neither a resilience stack nor the Scheduling middleware: call "
            "dr.install(broker, backend=...)",
            job=f"scan:{name}",
        )
    started = time.monotonic()
    try:
        context = ScanContext(name, broker, backend, stack, backend.now_ms())
        counts = dict(scan.operation(context) or {})
    except Exception as exc:
        duration = int((time.monotonic() - started) * 1000)
        logger.error("Scan %r failed after %d milliseconds: %s", name, duration, exc)
        events.emit("scan_failed", scan=name, error=exc, duration_ms=duration)
        raise
    duration = int((time.monotonic() - started) * 1000)
    summary = ", ".join(f"{key}={value}" for key, value in counts.items()) or "nothing to report"
    logger.info("Scan %r completed in %d milliseconds: %s.", name, duration, summary)
    events.emit("scan_completed", scan=name, counts=counts, duration_ms=duration)
    return counts
