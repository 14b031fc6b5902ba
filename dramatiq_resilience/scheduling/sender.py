"""Sending a cron job's run: enqueue (with retries), confirm in the backend, announce.

A claimed occurrence is leased to its sender for ``send_lease`` ms; then any
scheduler takes the send over.  Within that lease the sender

1. enqueues for up to half of it, retrying with a back-off.  Each attempt runs
   on a thread of its own and is abandoned at that deadline, so a broker call
   that blocks (a hung connection) cannot keep the occurrence past its lease
   without a word: it is reported as a failed send and left to the takeover;
2. confirms (``cron_sent``) for up to three quarters of it, retrying a
   backend that blips, so that nobody sends it again.

A scheduler taking over a send first looks whether the run is out already (its
claimer died between its enqueue and its confirmation): on a RedisBroker, the
message id still in the queue's or its delay queue's messages (queued, delayed,
or being worked on; the queue's messages are scanned, up to
``TAKEOVER_SCAN_LIMIT`` of them, on a thread of its own until a quarter of the
lease), or a worker having started it (``cron_run_started``).  The delay queue
is read first, then the queue, then the starts: a delayed run enters the queue
before it leaves the delay queue, and a worker records a start before it acks,
so no run slips between the reads.  It then only confirms the send.  On other
brokers, or when it cannot tell, it sends again.

Each enqueue carries a send id of its own (message option ``cron_send_id``).
If both a late sender and a taker-over enqueue the run (the confirmation was
lost, or an abandoned enqueue went through after all), the two copies share
the message id but not the send id, and the worker runs only the first one
started (``Scheduling`` middleware, ``cron_started``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
import uuid
from datetime import datetime, timezone
from typing import Any

from dramatiq import Message
from dramatiq.broker import Broker
from dramatiq.common import dq_name
from dramatiq.logging import get_logger

from .. import events
from ..backends.base import StateBackend
from ..backends.cron import CronSend
from ..broker_kind import broker_kind
from ..clock import Clock, FakeClock
from ..enqueue import internal_enqueue
from ..errors import BackendError
from ..outage import OutageLog
from .cron import CronJob

__all__ = ["SEND_ID_OPTION", "Sender", "iso"]

#: The message option holding the id of one enqueue of a run.
SEND_ID_OPTION = "cron_send_id"

#: Abandoned enqueues still blocked in the broker after which a scheduler starts no new one.
MAX_BLOCKED = 4

#: Messages of a queue past which a takeover does not scan it (it sends again; workers run one copy).
TAKEOVER_SCAN_LIMIT = 100_000

#: Seconds of the first back-off between two enqueue or confirmation attempts (then doubled).
_FIRST_BACKOFF = 0.05

#: Seconds of the longest back-off.
_MAX_BACKOFF = 2.0


def iso(ms: int) -> str:
    """An occurrence for log lines: ``2026-01-01T03:00:00.000Z``."""
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclasses.dataclass(eq=False)  # hashable by identity: abandoned ones are kept in a set
class _Attempt:
    """One broker call running on its own thread, and whether its waiter gave up on it."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: BaseException | None = None
    result: Any = None
    abandoned: bool = False


class Sender:
    """Enqueues runs for a :class:`~dramatiq_resilience.scheduling.scheduler.Scheduler`.

    Parameters:
      broker, backend, clock: the scheduler's.  With a ``FakeClock`` (tests)
        back-offs move the clock instead of sleeping.
      send_lease: milliseconds; a failing enqueue is retried for half of it,
        a failing confirmation for three quarters, then the send is left to
        the scheduler that takes the unconfirmed send over.
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
        # Abandoned enqueues still blocked in the broker: once MAX_BLOCKED are, new attempts
        # fail at once instead of piling up a thread and a connection each on a hung broker
        # (a few may go on: a fresh connection often works where a dead socket hangs).
        # Takeover checks blocked in the broker or the backend are counted apart, so that
        # they never keep enqueues to a healthy broker from starting.
        self._blocked: set[_Attempt] = set()
        self._blocked_checks: set[_Attempt] = set()
        self._blocked_lock = threading.Lock()

    # -- time ------------------------------------------------------------------------

    def _pause(self, seconds: float, deadline: int) -> None:
        """Back off for ``seconds``, not past ``deadline`` (ms on the clock)."""
        ms = max(0, min(round(seconds * 1000), deadline - self.clock.now_ms()))
        if isinstance(self.clock, FakeClock):
            self.clock.advance(ms)
        else:
            self.stopping.wait(ms / 1000)

    def _wait(self, attempt: _Attempt, deadline: int) -> bool:
        """Wait for ``attempt`` until ``deadline`` (ms on the clock); ``True`` if it is done."""
        while True:
            remaining = deadline - self.clock.now_ms()
            if remaining <= 0:
                return attempt.done.is_set()
            # A FakeClock moves by itself (the test moves it): look at it again often.
            if attempt.done.wait(0.01 if isinstance(self.clock, FakeClock) else remaining / 1000):
                return True

    # -- enqueue -----------------------------------------------------------------------

    def _attempt(self, message: Message[Any], delay: int, deadline: int, late: Any) -> None:
        """Enqueue once on a thread of its own; raise its error, or ``TimeoutError`` at ``deadline``.

        An abandoned enqueue may still complete: ``late()`` is then called on its thread.
        """

        def enqueue() -> None:
            with internal_enqueue("scheduled"):
                self.broker.enqueue(message, delay=delay or None)

        self._on_thread(enqueue, deadline, late, blocked=self._blocked, name="enqueue")

    def _on_thread(
        self, work: Any, deadline: int, late: Any = None, *, blocked: set[_Attempt], name: str
    ) -> Any:
        """``work()`` on a thread of its own; its result, its error, or ``TimeoutError`` at ``deadline``.

        An abandoned ``work`` that completes after all calls ``late()`` (if given) on its
        thread; until it completes it stays in ``blocked``, which holds ``MAX_BLOCKED`` at most.
        """
        with self._blocked_lock:
            if len(blocked) >= MAX_BLOCKED:
                raise TimeoutError(
                    f"{len(blocked)} earlier {name}s of this scheduler are still blocked; "
                    "not starting another one"
                )
        attempt = _Attempt()

        def run() -> None:
            try:
                attempt.result = work()
            except BaseException as exc:
                attempt.error = exc
            with attempt.lock:
                attempt.done.set()
                abandoned = attempt.abandoned
            with self._blocked_lock:
                blocked.discard(attempt)
            if abandoned and attempt.error is None and late is not None:
                late()

        waited_from = self.clock.now_ms()
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(run,), name=f"dramatiq-resilience-{name}", daemon=True
        ).start()
        if not self._wait(attempt, deadline):
            with attempt.lock:
                attempt.abandoned = not attempt.done.is_set()
                if attempt.abandoned:
                    with self._blocked_lock:
                        blocked.add(attempt)
            if attempt.abandoned:
                raise TimeoutError(
                    f"the broker did not answer within {self.clock.now_ms() - waited_from} milliseconds"
                )
        if attempt.error is not None:
            raise attempt.error
        return attempt.result

    def _enqueue(self, message: Message[Any], delay: int, *, leased_at: int, late: Any) -> bool:
        """Enqueue with retries until half the send lease (then another instance takes over)."""
        attempts, backoff = 0, _FIRST_BACKOFF
        deadline = leased_at + self.send_lease // 2
        while True:
            # Every attempt gets at least a tenth of the lease, even one that starts late.
            attempt_deadline = max(deadline, self.clock.now_ms() + self.send_lease // 10)
            one = dataclasses.replace(message, options={**message.options, SEND_ID_OPTION: uuid.uuid4().hex})
            try:
                self._attempt(one, delay, attempt_deadline, late)
                return True
            except Exception as exc:
                attempts += 1
                if self.stopping.is_set() or self.clock.now_ms() >= deadline:
                    self.logger.error(
                        "Could not send message %r of cron job %r after %d attempt(s): %s. Another "
                        "scheduler takes the send over when its lease ends, %d milliseconds after the claim.",
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
                self._pause(backoff, deadline)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    # -- confirm -----------------------------------------------------------------------

    def _confirm(self, job: CronJob, send: CronSend, *, leased_at: int) -> bool:
        """``cron_sent``, retried until three quarters of the send lease."""
        deadline = leased_at + self.send_lease * 3 // 4
        backoff = _FIRST_BACKOFF
        while True:
            try:
                self.backend.cron_sent(job.name, send.message_id, occurrence_ms=send.occurrence_ms)
            except BackendError as exc:
                self.outage.failed(exc, action="retry confirming sends")
                if self.stopping.is_set() or self.clock.now_ms() >= deadline:
                    self.logger.error(
                        "Sent message %r of cron job %r but could not confirm it: %s. Another scheduler "
                        "may send it again when its lease ends; workers run it once.",
                        send.message_id,
                        job.name,
                        exc,
                    )
                    return False
                self._pause(backoff, deadline)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self.outage.succeeded()
            return True

    def _late(self, job: CronJob, send: CronSend) -> Any:
        def confirm() -> None:
            self.logger.warning(
                "Message %r of cron job %r was enqueued after all, after this scheduler gave up on it; "
                "if another scheduler sent it too, workers run it once.",
                send.message_id,
                job.name,
            )
            try:
                self.backend.cron_sent(job.name, send.message_id, occurrence_ms=send.occurrence_ms)
            except BackendError as exc:
                self.outage.failed(exc, action="leave the send unconfirmed")

        return confirm

    # -- sends -------------------------------------------------------------------------

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

    def _out_already(self, job: CronJob, send: CronSend, *, leased_at: int) -> bool:
        """Whether the run of a taken-over send was enqueued by its dead claimer (see the module).

        The broker is asked on a thread of its own, until a quarter of the send
        lease (at least a tenth of it from now): a broker that hangs, or a check
        that takes longer, cannot tell.
        """
        if broker_kind(self.broker) != "redis":
            return False

        def look() -> bool:
            # The delay queue first: a delayed run moves to the queue before it leaves the
            # delay queue, and a run that starts is recorded before it leaves the queue.
            return any(
                _holds(self.broker, queue, send.message_id)
                for queue in (dq_name(job.queue_name), job.queue_name)
            ) or self.backend.cron_run_started(job.name, send.message_id)

        try:
            deadline = max(leased_at + self.send_lease // 4, self.clock.now_ms() + self.send_lease // 10)
            return bool(self._on_thread(look, deadline, blocked=self._blocked_checks, name="takeover-check"))
        except Exception as exc:  # cannot tell: send it again (workers run one copy)
            self.logger.warning(
                "Could not tell whether message %r of cron job %r is out already: %s; sending it again.",
                send.message_id,
                job.name,
                exc,
            )
            return False

    def send(
        self,
        job: CronJob,
        send: CronSend,
        *,
        coalesced: int = 0,
        recovered: bool = False,
        leased_at: int | None = None,
    ) -> bool:
        """Send a claimed occurrence and confirm it; ``False`` if the broker refused it.

        ``leased_at``: when (ms on the clock) the backend leased the send to
        this scheduler (default: now); the retries are measured from it.
        """
        leased_at = self.clock.now_ms() if leased_at is None else leased_at
        message = job.message(send.message_id, occurrence_ms=send.occurrence_ms)
        delay = job.delay_for(send.message_id)
        if recovered and self._out_already(job, send, leased_at=leased_at):
            self.logger.warning(
                "Message %r of cron job %r was enqueued by the scheduler that claimed it; "
                "confirming it without sending it again.",
                send.message_id,
                job.name,
            )
        elif not self._enqueue(message, delay, leased_at=leased_at, late=self._late(job, send)):
            return False
        self._confirm(job, send, leased_at=leased_at)
        overdue = self.clock.now_ms() - leased_at - self.send_lease
        if overdue >= 0:
            self.logger.warning(
                "Message %r of cron job %r was sent %d milliseconds after its send lease ended; if "
                "another scheduler took the send over, workers run it once.",
                send.message_id,
                job.name,
                overdue,
            )
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
        message = dataclasses.replace(message, options={**message.options, SEND_ID_OPTION: uuid.uuid4().hex})
        with internal_enqueue("scheduled"):
            self.broker.enqueue(message)
        try:
            self.backend.cron_sent(job.name, message.message_id, lease_ms=job.overlap_lease)
        except BackendError as exc:
            self.outage.failed(exc, action="run the job without recording it")
        self.logger.info("Cron job %r run now as message %r.", job.name, message.message_id)
        self._fired(job, message.message_id, None, delay_ms=0, coalesced=0, recovered=False, run_now=True)
        return message


def _holds(broker: Any, queue: str, message_id: str) -> bool:
    """Whether RedisBroker ``broker`` holds a message ``message_id`` on ``queue`` (queued or unacked).

    The broker keys its messages by an id of each enqueue (``redis_message_id``),
    so the queue's messages are scanned, a thousand per round trip; only a
    takeover, which follows a scheduler's death, pays for it.  A queue holding
    more than ``TAKEOVER_SCAN_LIMIT`` messages is not scanned: ``ValueError``.
    """
    key = f"{broker.namespace}:{queue}.msgs"
    held = broker.client.hlen(key)
    if held > TAKEOVER_SCAN_LIMIT:
        raise ValueError(f"queue {queue!r} holds {held} messages, more than {TAKEOVER_SCAN_LIMIT} to scan")
    needle = message_id.encode()
    for _, stored in broker.client.hscan_iter(key, count=1_000):
        data = stored.encode() if isinstance(stored, str) else stored
        if needle in data and Message.decode(data).message_id == message_id:
            return True
    return False
