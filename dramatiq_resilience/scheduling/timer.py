"""APScheduler 3.x as the scheduler's timer.

APScheduler decides *when* to wake up: each job is an APScheduler job whose
trigger is the job's :class:`~dramatiq_resilience.scheduling.schedules.Schedule`.
It does not tell a job function which run time it was called for, so this
module hooks the executor instead: APScheduler hands an executor the job and
its scheduled run times, and :class:`OccurrenceExecutor` passes those run
times (in milliseconds) to a callback.  The callback (the scheduler) derives
the occurrences itself from the schedule and its clock, so it is exact even
when APScheduler skipped a wake-up, and testable without APScheduler.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from .schedules import Schedule

__all__ = ["OccurrenceExecutor", "ScheduleTrigger", "Timer"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: APScheduler's own log lines ("Added job...", "Scheduler started") repeat what the
#: scheduler logs in every worker process; only its warnings and errors are kept.
_aps_logger = logging.getLogger(f"{__name__}.apscheduler")
_aps_logger.setLevel(logging.WARNING)

#: ``callback(job_id, run_times_ms)``.
Callback = Callable[[str, Sequence[int]], None]


def _ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class ScheduleTrigger(BaseTrigger):
    """An APScheduler trigger that fires at a :class:`Schedule`'s occurrences."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        after = _ms(previous_fire_time) if previous_fire_time is not None else _ms(now) - 1
        moment = self.schedule.next_after(after)
        return None if moment is None else _EPOCH + timedelta(milliseconds=moment)

    def __str__(self) -> str:
        return self.schedule.describe()


class OccurrenceExecutor(BaseExecutor):
    """An APScheduler executor that calls ``callback(job_id, run_times_ms)`` on a thread pool."""

    def __init__(self, callback: Callback, *, max_workers: int = 4) -> None:
        super().__init__()
        self._callback = callback
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix="dramatiq-resilience-scheduler"
        )

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        times = [_ms(moment) for moment in run_times]

        def run() -> None:
            try:
                self._callback(job.id, times)
            except BaseException as exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, [])

        self._pool.submit(run)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


class Timer:
    """A ``BackgroundScheduler`` (in UTC) whose jobs call ``callback(job_id, run_times_ms)``.

    Parameters:
      callback: called on a pool thread for each due job; never concurrently
        for one job (APScheduler's ``max_instances=1``).
      max_workers: the size of that pool.
    """

    def __init__(self, callback: Callback, *, max_workers: int = 4) -> None:
        self._scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": OccurrenceExecutor(callback, max_workers=max_workers)},
            # The callback derives occurrences itself; APScheduler must neither drop
            # late run times nor queue a second call behind a slow one.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            logger=_aps_logger,
        )

    def add(self, job_id: str, schedule: Schedule) -> None:
        """Wake up at ``schedule``'s occurrences and call back with ``job_id``."""
        self._scheduler.add_job(_unused, trigger=ScheduleTrigger(schedule), id=job_id, name=job_id)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop waking up; with ``wait``, let running callbacks finish."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)


def _unused() -> None:  # pragma: no cover - the executor calls the callback instead
    """APScheduler needs a job function; :class:`OccurrenceExecutor` never calls it."""
