"""Operating cron jobs from anywhere that reaches the backend: list, enable, disable, run now."""

from __future__ import annotations

from ..backends.base import StateBackend
from ..backends.cron import CronJobState
from ..errors import UnknownJob

__all__ = ["CronJobs"]


class CronJobs:
    """The cron jobs registered in a backend, as every scheduler sees them.

    What this changes is honoured by every scheduler instance: a disabled
    job's occurrences are skipped (``cron_skipped`` with reason
    ``"disabled"``) until it is enabled again, and a run-now request is taken
    by one running scheduler within its ``poll_interval``.

    Parameters:
      backend: the state backend the schedulers use.
    """

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend

    def list(self) -> list[CronJobState]:
        """Every job any scheduler registered, sorted by name."""
        return self.backend.cron_jobs()

    def get(self, name: str) -> CronJobState:
        """Job ``name``'s state.  Raises :class:`UnknownJob`."""
        state = self.backend.cron_job(name)
        if state is None:
            raise self._unknown(name)
        return state

    def enable(self, name: str) -> None:
        """Enable job ``name`` (every scheduler sends its next occurrence).  Raises :class:`UnknownJob`."""
        if not self.backend.cron_set_enabled(name, True):
            raise self._unknown(name)

    def disable(self, name: str) -> None:
        """Disable job ``name`` (every scheduler skips its occurrences).  Raises :class:`UnknownJob`."""
        if not self.backend.cron_set_enabled(name, False):
            raise self._unknown(name)

    def run_now(self, name: str) -> None:
        """Ask a running scheduler to send job ``name`` now, once.  Raises :class:`UnknownJob`."""
        if not self.backend.cron_request_run(name):
            raise self._unknown(name)

    def _unknown(self, name: str) -> UnknownJob:
        known = tuple(job.name for job in self.backend.cron_jobs())
        listing = ", ".join(known) if known else "none (has a scheduler started?)"
        return UnknownJob(
            f"No cron job {name!r} is registered; known jobs: {listing}.", job=name, known=known
        )
