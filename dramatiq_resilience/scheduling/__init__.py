"""Cron jobs fired exactly once by any number of schedulers, and recovery scans.

* :mod:`.schedules`: cron expressions and intervals, their occurrences.
* :mod:`.cron`: declaring jobs (``@cron``, ``schedule()``).
* :mod:`.scheduler`: ``Scheduler``, which claims and sends occurrences.
* :mod:`.timer`: APScheduler 3.x as the scheduler's timer.
* :mod:`.middleware`: ``Scheduling``, a scheduler in every worker process.
* :mod:`.scans`: recovery scans and how to register one.
* :mod:`.dead_workers`, :mod:`.inflight`: what two built-in scans use.
* :mod:`.admin`: ``CronJobs``, list / enable / disable / run now.
"""

from __future__ import annotations

from .admin import CronJobs
from .cron import (
    DEFAULT_MISFIRE_GRACE,
    DEFAULT_OVERLAP_LEASE,
    CronJob,
    cron,
    jobs,
    occurrence_message_id,
    schedule,
)
from .middleware import Scheduling
from .scans import SCAN_QUEUE, Scan, ScanContext, register_scan, registered_scans, run_scan, unregister_scan
from .scheduler import Scheduler
from .schedules import CronSchedule, IntervalSchedule, Schedule

__all__ = [
    "DEFAULT_MISFIRE_GRACE",
    "DEFAULT_OVERLAP_LEASE",
    "SCAN_QUEUE",
    "CronJob",
    "CronJobs",
    "CronSchedule",
    "IntervalSchedule",
    "Scan",
    "ScanContext",
    "Schedule",
    "Scheduler",
    "Scheduling",
    "cron",
    "jobs",
    "occurrence_message_id",
    "register_scan",
    "registered_scans",
    "run_scan",
    "schedule",
    "unregister_scan",
]
