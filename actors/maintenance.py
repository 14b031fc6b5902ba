"""Housekeeping jobs."""

from __future__ import annotations

import dramatiq

from .config import ledger


@dramatiq.actor(queue_name="maintenance", max_retries=1)
def purge_expired_sessions() -> None:
    """Delete expired login sessions (here: count the run)."""
    ledger.incr("maintenance", "purge_expired_sessions")
