"""Housekeeping jobs, scheduled with cron.

Any number of worker processes run a scheduler (the ``Scheduling``
middleware that ``install()`` adds); each occurrence is still sent once.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

import dramatiq_resilience as dr

from .config import ledger


@dramatiq.actor(queue_name="maintenance", max_retries=1)
def purge_expired_sessions() -> None:
    """Delete expired login sessions (here: count the run)."""
    ledger.incr("maintenance", "purge_expired_sessions")


@dr.cron("0 3 * * *", tz="Europe/Paris", misfire_grace=600_000)
@dramatiq.actor(queue_name="maintenance", max_retries=3)
def send_daily_digest() -> None:
    """Mail yesterday's digest at 03:00 Paris time, even across DST changes (here: count it)."""
    ledger.incr("maintenance", "send_daily_digest")


# Every second so that the demo sees it fire; a real heartbeat would use every=60_000.
@dr.cron(every=1_000, name="maintenance.heartbeat")
@dramatiq.actor(queue_name="maintenance", max_retries=0)
def heartbeat() -> None:
    """Record which occurrence ran ("run-now" for a run by hand), so duplicates would show."""
    message = CurrentMessage.get_current_message()
    occurrence = None if message is None else message.options.get("cron_occurrence")
    ledger.incr("heartbeats", "run-now" if occurrence is None else str(occurrence))
