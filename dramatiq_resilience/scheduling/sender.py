"""Sending a cron job's run: enqueue (with retries), confirm in the backend, announce."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from dramatiq import Message
from dramatiq.broker import Broker
from dramatiq.logging import get_logger

from .. import events
from ..backends.base import StateBackend
from ..backends.cron import CronSend
from ..clock import Clock
from ..enqueue import internal_enqueue
from ..errors import BackendError
from ..outage import OutageLog
from .cron import CronJob

__all__ = ["Sender", "iso"]


def iso(ms: int) -> str:
    """An occurrence for log lines: ``2026-01-01T03:00:00.000Z``."""
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class Sender:
    """Enqueues runs for a :class:`~dramatiq_resilience.scheduling.scheduler.Scheduler`.

    Parameters:
      broker, backend, clock: the scheduler's.
      send_lease: milliseconds; a failing enqueue is retried for half of it,
        then left to the scheduler that takes the unconfirmed send over.
      stopping: set when the scheduler shuts down (retries stop at once).
      outage: where backend errors are counted.
    """

    def __init__(
        self,
        broker: Broker,
        backend: StateBackend,
        *,
        clock: Clock,
        send_lease: int,
        stopping: threading.Event,
        outage: OutageLog,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.backend = backend
        self.clock = clock
        self.send_lease = send_lease
        self.stopping = stopping
        self.outage = outage

    def _enqueue(self, message: Message[Any], delay: int) -> bool:
        """Enqueue with retries for up to half the send lease (then another instance takes over)."""
        attempts, backoff = 0, 0.1
        deadline = time.monotonic() + self.send_lease / 2000
        while True:
            try:
                with internal_enqueue("scheduled"):
                    self.broker.enqueue(message, delay=delay or None)
                return True
            except Exception as exc:
                attempts += 1
                if self.stopping.is_set() or time.monotonic() >= deadline:
                    self.logger.error(
                        "Could not send message %r of cron job %r after %d attempt(s): %s. Another "
                        "scheduler takes the send over in %d milliseconds.",
                        message.message_id,
                        message.options.get("cron_job"),
                        attempts,
                        exc,
                        self.send_lease,
                    )
                    events.emit(
                        "cron_send_failed",
                        job=message.options.get("cron_job"),
                        actor_name=message.actor_name,
                        message_id=message.message_id,
                        error=exc,
                    )
                    return False
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _fired(self, job: CronJob, message_id: str, occurrence: int | None, **fields: Any) -> None:
        events.emit(
            "cron_fired",
            job=job.name,
            actor_name=job.actor_name,
            queue_name=job.queue_name,
            occurrence_ms=occurrence,
            message_id=message_id,
            **fields,
        )

    def send(self, job: CronJob, send: CronSend, *, coalesced: int = 0, recovered: bool = False) -> bool:
        """Send a claimed occurrence and confirm it; ``False`` if the broker refused it."""
        message = job.message(send.message_id, occurrence_ms=send.occurrence_ms)
        delay = job.delay_for(send.message_id)
        if not self._enqueue(message, delay):
            return False
        try:
            self.backend.cron_sent(job.name, send.message_id, occurrence_ms=send.occurrence_ms)
        except BackendError as exc:
            self.outage.failed(exc, action="leave the send unconfirmed")
        self.logger.info(
            "Cron job %r fired occurrence %s as message %r%s.",
            job.name,
            iso(send.occurrence_ms),
            send.message_id,
            f" (coalescing {coalesced} missed)" if coalesced else "",
        )
        self._fired(
            job, send.message_id, send.occurrence_ms,
            delay_ms=delay, coalesced=coalesced, recovered=recovered, run_now=False,
        )  # fmt: skip
        return True

    def run_now(self, job: CronJob) -> Message[Any]:
        """Send ``job`` now, outside its schedule; the run becomes the job's pending run."""
        message = job.message(str(uuid.uuid4()), occurrence_ms=None)
        with internal_enqueue("scheduled"):
            self.broker.enqueue(message)
        try:
            self.backend.cron_sent(job.name, message.message_id, lease_ms=job.overlap_lease)
        except BackendError as exc:
            self.outage.failed(exc, action="run the job without recording it")
        self.logger.info("Cron job %r run now as message %r.", job.name, message.message_id)
        self._fired(job, message.message_id, None, delay_ms=0, coalesced=0, recovered=False, run_now=True)
        return message
