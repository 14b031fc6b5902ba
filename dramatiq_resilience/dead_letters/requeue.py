"""Requeue: send dead letters back to work, each at most once.

Each batch of records is first **claimed** in the backend (one atomic step:
``dead`` -> ``claimed`` by this operation's token), then enqueued, then
marked ``requeued`` with the redrive added to its history.  A record whose
enqueue fails is released back to ``dead``.  So two requeues of the same
records, even from two processes at once, enqueue each record once: only
the claim's winner enqueues it.  If the requeuing process dies between claim
and finish, the claim is released by ``trim()`` after the store's
``claim_timeout``; its messages may then have been enqueued already (the
one case of at-least-once).

The requeued message keeps its message id (so result backends and logs
follow it), gets a fresh ``message_timestamp`` (so ``AgeLimit`` does not
expire it again at once), loses ``retries``, its saved traceback, deferral
counters and broker delivery options, and carries its redrive history in
the ``dead_letter_redrives`` option.  If it fails again, its next record is
``<message_id>-r<N>``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dramatiq import Message
from dramatiq.broker import Broker
from dramatiq.common import q_name

from .. import events
from ..enqueue import internal_enqueue
from ..errors import ConfigurationError
from .query import DeadLetterFilter, chunked
from .record import FIRST_FAILURE_OPTION, REDRIVES_OPTION, DeadLetterRecord, Redrive, UnreadableRecord

if TYPE_CHECKING:
    from .store import DeadLetterStore, Progress

__all__ = ["REDRIVES_OPTION", "RESET_OPTIONS", "RequeueReport", "redrive_message", "requeue"]

logger = logging.getLogger(__name__)

#: Options dropped from a requeued message: retry state, saved traceback,
#: deferral counters, per-delivery broker options, and our own stamps.
RESET_OPTIONS = frozenset(
    {
        "retries",
        "traceback",
        "requeue_timestamp",
        "eta",
        "redis_message_id",
        "deferrals",
        "deferral_counts",
        "deferred_reason",
        FIRST_FAILURE_OPTION,
        REDRIVES_OPTION,
    }
)

#: Seconds of work one claimed batch may represent when rate-limited, well
#: inside the claim timeout.
_BATCH_SECONDS = 10


@dataclass
class RequeueReport:
    """What a requeue did (or, with ``dry_run``, would do).

    Attributes:
      requeued: ids of the records enqueued (would be, on a dry run).
      skipped: record id -> why it was not: ``"not_found"``, ``"not_dead"``
        (already requeued, or claimed by another requeue),
        ``"unreadable"``, ``"undecodable"`` (imported bytes the broker could
        not decode), ``"redacted"`` (without ``allow_redacted``),
        ``"max_redrives"`` (a policy's limit), ``"not_attempted"`` (after
        an enqueue failure stopped the operation).
      failed: record id -> the enqueue error (the record is dead again).
      dry_run: whether nothing was enqueued.
      queue_names: record id -> the queue it went (would go) to.
    """

    requeued: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    queue_names: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.requeued)

    def merge(self, other: RequeueReport) -> None:
        self.requeued += other.requeued
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)
        self.queue_names.update(other.queue_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def redrive_message(
    record: DeadLetterRecord, *, queue_name: str | None, now: int, reason: str, host: str
) -> tuple[Message[Any], DeadLetterRecord]:
    """The message that requeues ``record``, and the record with this redrive in its history."""
    target = queue_name or record.queue_name
    redrive = Redrive(at=now, record_id=record.record_id, queue_name=target, reason=reason, host=host)
    history = (*record.redrives, redrive)
    options = {key: value for key, value in record.options.items() if key not in RESET_OPTIONS}
    options[REDRIVES_OPTION] = [item.to_dict() for item in history]
    message: Message[Any] = Message(
        queue_name=target,
        actor_name=record.actor_name,
        args=tuple(record.args),
        kwargs=dict(record.kwargs),
        options=options,
        message_id=record.message_id,
        message_timestamp=now,
    )
    return message, record.replace(redrives=history, status="requeued")


def _check_queue(queue: str | None) -> str | None:
    if queue is None:
        return None
    if not isinstance(queue, str) or not queue or q_name(queue) != queue:
        raise ConfigurationError(
            f"must be a canonical queue name (no .DQ/.XQ), got {queue!r}", option="queue"
        )
    return queue


def _check_rate(rate: float | None) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise ConfigurationError(f"must be a number of messages per second > 0, got {rate!r}", option="rate")
    return float(rate)


class _Pacer:
    """Sleeps so that at most ``rate`` messages per second go out (from any number of threads)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if self.rate is None:
            return
        with self.lock:
            slot = self.started + self.sent / self.rate
            self.sent += 1
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _pipelined(broker: Broker | None) -> bool:
    """Whether ``broker`` is a plain RedisBroker, whose enqueues a bulk requeue pipelines."""
    try:
        from dramatiq.brokers.redis import RedisBroker
    except ImportError:  # pragma: no cover (redis is a dependency)
        return False
    return isinstance(broker, RedisBroker) and type(broker).enqueue is RedisBroker.enqueue


def enqueue_pipelined(broker: Any, messages: list[Message[Any]]) -> list[BaseException | str | None]:
    """Enqueue ``messages`` on a RedisBroker in one MULTI/EXEC round trip.

    Does what ``RedisBroker.enqueue`` does for each message (a fresh
    ``redis_message_id``, the ``before_enqueue``/``after_enqueue`` hooks, the
    message stored in ``<ns>:<queue>.msgs`` and its id pushed on
    ``<ns>:<queue>``, the layout of Dramatiq's ``dispatch.lua``), but sends
    the writes together.  One outcome per message: ``None`` (enqueued), the
    error, or ``"not_attempted"`` after a hook refused an earlier message.
    """
    outcomes: list[BaseException | str | None] = ["not_attempted"] * len(messages)
    prepared: list[tuple[int, Message[Any]]] = []
    for n, message in enumerate(messages):
        copy = message.copy(options={"redis_message_id": str(uuid.uuid4())})
        try:
            broker.emit_before("enqueue", copy, None)
        except Exception as exc:
            outcomes[n] = exc
            break
        prepared.append((n, copy))
    if not prepared:
        return outcomes
    pipe = broker.client.pipeline(transaction=True)
    for _, copy in prepared:
        key = f"{broker.namespace}:{copy.queue_name}"
        pipe.hset(f"{key}.msgs", copy.options["redis_message_id"], copy.encode())
        pipe.rpush(key, copy.options["redis_message_id"])
    try:
        pipe.execute()
    except Exception as exc:
        for n, _ in prepared:
            outcomes[n] = exc
        return outcomes
    for n, copy in prepared:
        outcomes[n] = None
        try:
            broker.emit_after("enqueue", copy, None)
        except Exception:  # the message is enqueued; a failing after-hook does not undo it
            logger.exception("An after_enqueue hook failed for requeued message %r.", copy.message_id)
    return outcomes


def requeue(
    store: DeadLetterStore,
    broker: Broker | None,
    *,
    ids: Iterable[str] | None = None,
    filter: DeadLetterFilter | Mapping[str, Any] | None = None,
    queue: str | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    allow_redacted: bool = False,
    reason: str = "manual",
    precheck: Callable[[DeadLetterRecord], str | None] | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> RequeueReport:
    """Enqueue dead records again, each at most once (see the module docstring).

    Parameters:
      store: the dead-letter store.
      broker: where to enqueue (the records' own broker: Redis, RabbitMQ,
        Stub); may be ``None`` for a dry run.
      ids: record ids; or ``filter``: every dead record it matches (give one).
      queue: a queue to send them to instead of their own.
      rate: at most this many messages per second (``None``: as fast as possible).
      dry_run: report what would be requeued; change nothing.
      allow_redacted: requeue records whose arguments were redacted (the
        actor gets ``"[redacted]"``); skipped by default.
      reason: recorded in the redrive history: ``"manual"`` or ``"policy:<name>"``.
      precheck: returns a skip reason for a record that must stay dead.
      limit: requeue at most this many.
      progress: ``progress(done, total)`` after each batch.
    """
    if (ids is None) == (filter is None):
        raise ConfigurationError("give record ids or a filter (not both)", option="requeue")
    queue, rate = _check_queue(queue), _check_rate(rate)
    if broker is None and not dry_run:
        raise ConfigurationError("a requeue needs the broker to enqueue into", option="broker")
    report = RequeueReport(dry_run=dry_run)
    size = 500 if rate is None else max(1, min(500, int(rate * _BATCH_SECONDS)))
    total: int | None = None
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        total = len(wanted)
        batches: Iterator[list[str]] = chunked(wanted, size)
    else:
        flt = DeadLetterFilter.of(filter).replace(status="dead")
        batches = (
            store.ids(flt, batch=size)
            if precheck is None
            else _prechecked(store, flt, size, precheck, report)
        )
    operation = _Operation(
        store,
        broker,
        report,
        queue=queue,
        reason=reason,
        allow_redacted=allow_redacted,
        precheck=precheck,
        pacer=_Pacer(rate),
    )
    for candidates in batches:
        batch = candidates if limit is None else candidates[: max(0, limit - len(report.requeued))]
        if not batch:
            break
        if dry_run:
            operation.preview(batch)
        else:
            operation.run(batch)
        if progress is not None:
            progress(len(report.requeued) + len(report.skipped) + len(report.failed), total)
        if report.failed:
            break
    if report.failed and ids is not None:
        for record_id in wanted:
            if record_id not in report.requeued and record_id not in report.failed:
                report.skipped.setdefault(record_id, "not_attempted")
    if not dry_run:
        _log(report, reason)
    return report


def _prechecked(
    store: DeadLetterStore,
    flt: DeadLetterFilter,
    size: int,
    precheck: Callable[[DeadLetterRecord], str | None],
    report: RequeueReport,
) -> Iterator[list[str]]:
    """Ids matching ``flt`` that pass ``precheck``, read before claiming so that records a
    policy leaves alone are not claimed and released on every run."""
    from .store import item_from

    for page in store._pages(flt, size, False, True):
        passing = []
        for entry in page:
            item = item_from(entry)
            why = precheck(item) if isinstance(item, DeadLetterRecord) else None
            if why is None:
                passing.append(entry.record_id)
            else:
                report.skipped[entry.record_id] = why
        if passing:
            yield passing


def _log(report: RequeueReport, reason: str) -> None:
    if report.failed:
        logger.error(
            "Requeue (%s) stopped after an enqueue failure: %d requeued, %d skipped, %d failed (%s).",
            reason,
            len(report.requeued),
            len(report.skipped),
            len(report.failed),
            next(iter(report.failed.values())),
        )
    elif report.requeued or report.skipped:
        logger.info(
            "Requeued %d dead letters (%s); %d skipped.", len(report.requeued), reason, len(report.skipped)
        )


class _Operation:
    """One requeue operation: its claim token, and the per-batch steps."""

    def __init__(
        self,
        store: DeadLetterStore,
        broker: Broker | None,
        report: RequeueReport,
        *,
        queue: str | None,
        reason: str,
        allow_redacted: bool,
        precheck: Callable[[DeadLetterRecord], str | None] | None,
        pacer: _Pacer,
    ) -> None:
        self.store = store
        self.backend = store.backend
        self.broker = broker
        self.report = report
        self.queue = queue
        self.reason = reason
        self.allow_redacted = allow_redacted
        self.precheck = precheck
        self.pacer = pacer
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.stop = threading.Event()

    def _enqueue_one(self, message: Message[Any]) -> BaseException | str | None:
        """Enqueue ``message``; ``None`` on success, the error, or ``"not_attempted"`` after a failure."""
        if self.stop.is_set():
            return "not_attempted"
        self.pacer.wait()
        try:
            assert self.broker is not None  # checked by requeue()
            with internal_enqueue("redrive"):
                self.broker.enqueue(message)
        except Exception as exc:
            self.stop.set()
            return exc
        return None

    def _enqueue_all(self, messages: list[Message[Any]]) -> list[BaseException | str | None]:
        if self.pacer.rate is None and _pipelined(self.broker) and len(messages) > 1:
            with internal_enqueue("redrive"):
                outcomes = enqueue_pipelined(self.broker, messages)
            if any(outcome is not None for outcome in outcomes):
                self.stop.set()
            return outcomes
        return [self._enqueue_one(message) for message in messages]

    def _skip_reason(self, item: DeadLetterRecord | UnreadableRecord) -> str | None:
        if isinstance(item, UnreadableRecord):
            return "unreadable"
        if item.raw is not None:
            return "undecodable"
        if item.redacted and not self.allow_redacted:
            return "redacted"
        return self.precheck(item) if self.precheck is not None else None

    def preview(self, batch: list[str]) -> None:
        from .store import item_from

        for record_id, stored in zip(batch, self.backend.dead_letters_get(batch), strict=True):
            if stored is None:
                self.report.skipped[record_id] = "not_found"
            elif stored.status != "dead":
                self.report.skipped[record_id] = "not_dead"
            else:
                item = item_from(stored)
                why = self._skip_reason(item)
                if why is not None:
                    self.report.skipped[record_id] = why
                else:
                    self.report.requeued.append(record_id)
                    self.report.queue_names[record_id] = self.queue or stored.queue

    def run(self, batch: list[str]) -> None:
        from .store import item_from

        claimed = {entry.record_id: entry for entry in self.backend.dead_letters_claim(batch, self.token)}
        missing = [record_id for record_id in batch if record_id not in claimed]
        for record_id, stored in zip(missing, self.backend.dead_letters_get(missing), strict=True):
            self.report.skipped[record_id] = "not_found" if stored is None else "not_dead"
        release: list[str] = []
        ready: list[tuple[DeadLetterRecord, Message[Any], DeadLetterRecord]] = []
        for record_id in batch:
            entry = claimed.get(record_id)
            if entry is None:
                continue
            item = item_from(entry)
            why = "not_attempted" if self.stop.is_set() else self._skip_reason(item)
            if why is not None or not isinstance(item, DeadLetterRecord):
                release.append(record_id)
                self.report.skipped[record_id] = why or "unreadable"
                continue
            message, updated = redrive_message(
                item, queue_name=self.queue, now=self.store.now(), reason=self.reason, host=self.host
            )
            ready.append((item, message, updated))
        done: list[tuple[str, bytes]] = []
        sent: list[tuple[DeadLetterRecord, Message[Any]]] = []
        for (item, message, updated), error in zip(
            ready, self._enqueue_all([m for _, m, _ in ready]), strict=True
        ):
            if error is None:
                done.append((item.record_id, updated.encode()))
                sent.append((updated, message))
                continue
            release.append(item.record_id)
            if isinstance(error, str):
                self.report.skipped[item.record_id] = error
            else:
                logger.error("Could not requeue dead letter %r: %s", item.record_id, error, exc_info=error)
                self.report.failed[item.record_id] = f"{type(error).__name__}: {error}"
        finished = set(self.backend.dead_letters_finish(done, self.token)) if done else set()
        if release:
            self.backend.dead_letters_release(release, self.token)
        for record, message in sent:
            if record.record_id not in finished:
                logger.warning(
                    "Dead letter %r was requeued, but its claim was lost meanwhile (it was released as "
                    "stale or removed); it is not marked requeued.",
                    record.record_id,
                )
            self.report.requeued.append(record.record_id)
            self.report.queue_names[record.record_id] = message.queue_name
            events.emit(
                "dead_letter_requeued",
                record_id=record.record_id,
                message_id=message.message_id,
                actor_name=message.actor_name,
                queue_name=message.queue_name,
                reason=self.reason,
                redrives=len(record.redrives),
            )
