"""Requeue: send dead letters back to work, each exactly once.

Each batch of records is **claimed** in the backend (one atomic step:
``dead`` -> ``claimed`` by this operation's token), its messages are
**enqueued**, then the records are **finished** (``requeued``, with the
redrive added to their history), or **released** back to ``dead`` where the
enqueue certainly did not happen.

What is guaranteed:

* **Concurrency.**  Of any number of requeues of one record at once (threads,
  processes, hosts), exactly one claims it, so its message is enqueued once.
* **The store fails.**  Claim, finish and release are idempotent (a call
  repeated after its reply was lost returns what the first did), so each is
  retried with a short backoff (:data:`RETRY_DELAYS_MS`, 3.15 s in all).  If
  finishing still fails, the records stay claimed, are reported in
  ``unconfirmed`` (enqueued, not marked requeued) and the operation stops.
* **The broker fails.**  A refusal by a ``before_enqueue`` hook
  (``MiddlewareError``), or an error after which nothing can have been
  enqueued, releases the record (``failed``).  On a plain ``RedisBroker``
  each batch (with a rate: each tenth of a second's worth) is enqueued by one
  script behind a fence key (kept :data:`FENCE_TTL`), so a lost reply
  (timeout, dropped connection, even a retry by redis-py itself) is settled
  exactly: the batch ran once, or it never will and its records are
  released.  Only if the broker stays unreachable through the backoff, or on
  other brokers (RabbitMQ) where a connection error during an enqueue is
  ambiguous, does the record stay claimed, reported in ``unconfirmed``; the
  operation stops.
* **The one at-least-once case.**  A record left claimed (by a process that
  died between claim and finish, or reported ``unconfirmed``) is released
  by ``trim()`` after the store's ``claim_timeout``; a later requeue then
  enqueues it again, although its message may have been enqueued already.
  A requeue that holds one batch longer than ``claim_timeout`` (not possible
  with the batch sizes used here unless the process stalls) is the same
  case: its records are reported ``unconfirmed`` when finish finds the claim
  gone.

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
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import msgpack
from dramatiq import Message
from dramatiq.broker import Broker
from dramatiq.common import q_name
from dramatiq.middleware import MiddlewareError

from .. import events
from ..enqueue import internal_enqueue
from ..errors import BackendError, ConfigurationError
from .query import DeadLetterFilter, chunked
from .record import FIRST_FAILURE_OPTION, REDRIVES_OPTION, DeadLetterRecord, Redrive, UnreadableRecord

if TYPE_CHECKING:
    from redis.commands.core import Script

    from ..backends.dead_letters import StoredDeadLetter
    from .store import DeadLetterStore, Progress

__all__ = [
    "FENCE_TTL",
    "REDRIVES_OPTION",
    "RESET_OPTIONS",
    "RETRY_DELAYS_MS",
    "RequeueReport",
    "enqueue_fenced",
    "redrive_message",
    "requeue",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

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

#: Milliseconds to wait before each retry of a failed claim, finish or
#: release, and of settling a broker batch whose outcome is unknown.
RETRY_DELAYS_MS = (50, 100, 200, 400, 800, 1_600)

#: Milliseconds a RedisBroker batch's fence is kept (10 minutes).  It must
#: outlive any request for its batch still on its way to Redis, so that the
#: settling ``SET NX`` (made within seconds of the error) and a late copy of the
#: request (redis-py resending on a new connection, within its own timeouts)
#: meet it; a request on a connection that was closed never arrives.
FENCE_TTL = 600_000

#: Seconds of a rate-limited requeue's messages sent behind one fence (so that
#: a paced requeue leaves a few fences a second, not one per message).
_PACED_SLICE_SECONDS = 0.1

#: Records per batch without a rate limit: claimed, enqueued and finished together.
BATCH = 500

#: Seconds of work one claimed batch may represent when rate-limited, well
#: inside the claim timeout.
_BATCH_SECONDS = 10


@dataclass
class RequeueReport:
    """What a requeue did (or, with ``dry_run``, would do).

    Each record id is in exactly one of ``requeued``, ``skipped``,
    ``failed`` and ``unconfirmed``.

    Attributes:
      requeued: ids of the records enqueued and marked requeued (would be,
        on a dry run).
      skipped: record id -> why it was not: ``"not_found"``, ``"not_dead"``
        (already requeued, or claimed by another requeue),
        ``"unreadable"``, ``"undecodable"`` (imported bytes the broker could
        not decode), ``"redacted"`` (without ``allow_redacted``),
        ``"max_redrives"`` (a policy's limit), ``"not_attempted"`` (after
        a failure stopped the operation).
      failed: record id -> the enqueue error; nothing was enqueued and the
        record is dead again.
      unconfirmed: record id -> what is uncertain: enqueued but not marked
        requeued (the store failed), or perhaps enqueued (the broker
        failed midway).  The record stays claimed until ``trim()`` releases
        it after the store's ``claim_timeout``; a requeue after that may
        enqueue its message a second time.
      dry_run: whether nothing was enqueued.
      queue_names: record id -> the queue it went (would go) to.
    """

    requeued: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    queue_names: dict[str, str] = field(default_factory=dict)
    unconfirmed: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.requeued)

    def merge(self, other: RequeueReport) -> None:
        self.requeued += other.requeued
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)
        self.unconfirmed.update(other.unconfirmed)
        self.queue_names.update(other.queue_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def redrive_message(
    record: DeadLetterRecord, *, queue_name: str | None, now: int, reason: str, host: str
) -> tuple[Message[Any], DeadLetterRecord]:
    """The message that requeues ``record``, and the record with this redrive in its history."""
    message, history = _redrive(record, queue_name, now, reason, host, None)
    return message, record.replace(redrives=history, status="requeued")


def _redrive(  # noqa: PLR0917 (private; called once per record on the hot path)
    record: DeadLetterRecord,
    queue_name: str | None,
    now: int,
    reason: str,
    host: str,
    redis_message_id: str | None,
) -> tuple[Message[Any], tuple[Redrive, ...]]:
    target = queue_name or record.queue_name
    redrive = Redrive(at=now, record_id=record.record_id, queue_name=target, reason=reason, host=host)
    history = (*record.redrives, redrive)
    options = {key: value for key, value in record.options.items() if key not in RESET_OPTIONS}
    options[REDRIVES_OPTION] = [item.to_dict() for item in history]
    if redis_message_id is not None:
        options["redis_message_id"] = redis_message_id
    message: Message[Any] = Message(
        queue_name=target,
        actor_name=record.actor_name,
        args=tuple(record.args),
        kwargs=dict(record.kwargs),
        options=options,
        message_id=record.message_id,
        message_timestamp=now,
    )
    return message, history


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

    def wait(self, count: int = 1) -> None:
        """Wait for the slot of the next ``count`` messages (sent together)."""
        if self.rate is None:
            return
        with self.lock:
            slot = self.started + self.sent / self.rate
            self.sent += count
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass(frozen=True)
class Uncertain:
    """The outcome of an enqueue that failed midway: the message may have been enqueued."""

    error: BaseException


#: Per message: ``None`` (enqueued), the error (certainly not enqueued),
#: :class:`Uncertain`, or ``"not_attempted"`` (after an earlier failure).
Outcome: TypeAlias = "BaseException | Uncertain | str | None"


def _fenced(broker: Broker | None) -> bool:
    """Whether ``broker`` is a plain RedisBroker, whose enqueues a requeue makes itself, fenced."""
    try:
        from dramatiq.brokers.redis import RedisBroker
    except ImportError:  # pragma: no cover (redis is a dependency)
        return False
    if not isinstance(broker, RedisBroker) or "enqueue" in vars(broker):
        return False  # another broker, or an enqueue patched on this one (it must run)
    # A subclass that changes how messages are enqueued must be called, not bypassed.
    return all(
        "enqueue" not in vars(cls) and "do_enqueue" not in vars(cls)
        for cls in type(broker).__mro__
        if cls is not RedisBroker and issubclass(cls, RedisBroker)
    )


def _ambiguous(broker: Broker | None, error: BaseException) -> bool:
    """Whether ``broker.enqueue`` raising ``error`` may have enqueued the message anyway.

    Hooks refuse with ``MiddlewareError`` (Dramatiq swallows anything else
    they raise) and the StubBroker enqueues in memory, so those failures are
    certain; a connection error or timeout while talking to a real broker
    is not.
    """
    import dramatiq.errors
    import redis.exceptions
    from dramatiq.brokers.stub import StubBroker

    if isinstance(error, MiddlewareError) or isinstance(broker, StubBroker):
        return False
    # Dramatiq 2 renamed its ConnectionError (keeping the old name, deprecated).
    broker_errors = getattr(dramatiq.errors, "BrokerConnectionError", None) or dramatiq.errors.ConnectionError
    transport = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, broker_errors)
    return isinstance(error, transport)


_scripts: weakref.WeakKeyDictionary[Any, Script] = weakref.WeakKeyDictionary()
_scripts_lock = threading.Lock()


def _enqueue_script(client: Any) -> Script:
    script = _scripts.get(client)
    if script is None:
        from ..backends.redis_base import script_source

        with _scripts_lock:
            script = _scripts.get(client)
            if script is None:
                script = _scripts[client] = client.register_script(
                    script_source("dead_letters_broker_enqueue")
                )
    return script


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def enqueue_fenced(broker: Any, messages: list[Message[Any]], fence: str) -> list[Outcome]:
    """Enqueue ``messages`` on a RedisBroker in one script run, at most once, behind ``fence``.

    Does what ``RedisBroker.enqueue`` does for each message (the
    ``before_enqueue``/``after_enqueue`` hooks, the message stored in
    ``<ns>:<queue>.msgs`` under its ``redis_message_id`` option, which each
    message must carry, and that id pushed on ``<ns>:<queue>``), in one round
    trip.  ``fence`` is a key of the broker's Redis unique to this batch (see
    ``lua/dead_letters_broker_enqueue.lua``): when the reply is lost, the
    fence tells whether the batch ran, or stops it from ever running.  One
    outcome per message (see :data:`Outcome`); a hook's refusal stops the
    batch at that message.
    """
    outcomes: list[Outcome] = ["not_attempted"] * len(messages)
    prepared: list[Message[Any]] = []
    for n, message in enumerate(messages):
        try:
            broker.emit_before("enqueue", message, None)
        except Exception as exc:
            outcomes[n] = exc
            break
        prepared.append(message)
    if not prepared:
        return outcomes
    keys = [fence]
    slots: dict[str, int] = {}
    items: list[Any] = []
    for message in prepared:
        slot = slots.get(message.queue_name)
        if slot is None:
            slot = slots[message.queue_name] = len(keys) + 1
            queue = f"{broker.namespace}:{message.queue_name}"
            keys += [queue, f"{queue}.msgs"]
        items += [slot, message.options["redis_message_id"], message.encode()]
    args = [b"", FENCE_TTL, msgpack.packb(items, use_bin_type=False)]
    outcome = _run_fenced(broker.client, keys, args)
    for n in range(len(prepared)):
        outcomes[n] = outcome
    if outcome is None:
        for message in prepared:
            try:
                broker.emit_after("enqueue", message, None)
            except Exception:  # the message is enqueued; a failing after-hook does not undo it
                logger.exception("An after_enqueue hook failed for requeued message %r.", message.message_id)
    return outcomes


def _run_fenced(client: Any, keys: list[str], args: list[Any]) -> Outcome:
    """Run one fenced batch: ``None`` once it is enqueued, the error if it never will be, else uncertain."""
    try:
        state = _text(_enqueue_script(client)(keys=keys, args=args))
    except Exception as exc:
        return _settle(client, keys[0], exc)
    if state in ("enqueued", "done"):
        return None
    if state == "fenced":
        return RuntimeError(f"the requeue batch {keys[0]!r} was fenced off before it ran")
    return Uncertain(RuntimeError(f"the requeue batch {keys[0]!r} failed midway ({state})"))


def _settle(client: Any, fence: str, error: BaseException) -> Outcome:
    """After ``error``, find out whether the batch behind ``fence`` ran; if not, make sure it never does."""
    logger.warning(
        "Enqueueing requeued dead letters failed (%s: %s); checking whether the batch ran.",
        type(error).__name__,
        error,
    )
    for delay in (0, *RETRY_DELAYS_MS):
        if delay:
            time.sleep(delay / 1000)
        try:
            if client.set(fence, "fenced", nx=True, px=FENCE_TTL):
                logger.warning("Requeue batch %r had not run; it is fenced off and never will.", fence)
                return error
            value = client.get(fence)
        except Exception as exc:
            logger.warning("Checking requeue batch %r failed: %s", fence, exc)
            continue
        state = None if value is None else _text(value)
        if state == "done":
            logger.warning("Requeue batch %r had run: its messages are enqueued.", fence)
            return None
        if state == "fenced":
            return error
        if state == "started":
            return Uncertain(error)
    logger.error("Could not find out whether requeue batch %r ran; its records stay claimed.", fence)
    return Uncertain(error)


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
    """Enqueue dead records again, each exactly once (see the module docstring for failures).

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

    A failed or unconfirmed enqueue, or a store that keeps failing, stops
    the operation; the report says what happened to each record.
    """
    if (ids is None) == (filter is None):
        raise ConfigurationError("give record ids or a filter (not both)", option="requeue")
    queue, rate = _check_queue(queue), _check_rate(rate)
    if broker is None and not dry_run:
        raise ConfigurationError("a requeue needs the broker to enqueue into", option="broker")
    report = RequeueReport(dry_run=dry_run)
    size = BATCH if rate is None else max(1, min(BATCH, int(rate * _BATCH_SECONDS)))
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
    if dry_run:
        for candidates in batches:
            batch = candidates if limit is None else candidates[: max(0, limit - len(report.requeued))]
            if not batch:
                break
            operation.preview(batch)
            if progress is not None:
                progress(len(report.requeued) + len(report.skipped), total)
    else:
        with closing(operation.claimed_batches(batches, limit)) as claimed_batches:
            for batch, claimed in claimed_batches:
                operation.run(batch, claimed)
                if progress is not None:
                    settled = len(report.requeued) + len(report.skipped) + len(report.failed)
                    progress(settled + len(report.unconfirmed), total)
    if operation.stop.is_set() and ids is not None:
        accounted = set(report.requeued) | report.failed.keys() | report.unconfirmed.keys()
        for record_id in wanted:
            if record_id not in accounted:
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
    if report.unconfirmed:
        logger.error(
            "Requeue (%s) stopped: %d requeued, %d skipped, %d failed, and %d unconfirmed: %s.  They stay "
            "claimed; trim() releases them after the claim timeout, and a requeue after that may enqueue "
            "them a second time.",
            reason,
            len(report.requeued),
            len(report.skipped),
            len(report.failed),
            len(report.unconfirmed),
            ", ".join(f"{key!r} ({why})" for key, why in list(report.unconfirmed.items())[:10]),
        )
    elif report.failed:
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


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


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
        self.fenced = _fenced(broker)
        self.batches = 0

    def _retry(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()``, an idempotent backend step, retried with a short backoff while the backend fails."""
        for delay in RETRY_DELAYS_MS:
            try:
                return call()
            except BackendError as exc:
                logger.warning(
                    "Dead-letter requeue could not %s (%s); retrying in %d milliseconds.", what, exc, delay
                )
                time.sleep(delay / 1000)
        return call()

    def _enqueue_one(self, message: Message[Any]) -> Outcome:
        if self.stop.is_set():
            return "not_attempted"
        self.pacer.wait()
        try:
            assert self.broker is not None  # checked by requeue()
            with internal_enqueue("redrive"):
                self.broker.enqueue(message)
        except Exception as exc:
            self.stop.set()
            return Uncertain(exc) if _ambiguous(self.broker, exc) else exc
        return None

    def _enqueue_fenced(self, messages: list[Message[Any]]) -> list[Outcome]:
        self.batches += 1
        fence = f"{self.broker.namespace}:__dlq_requeue__.{self.token}.{self.batches}"  # type: ignore[union-attr]
        with internal_enqueue("redrive"):
            outcomes = enqueue_fenced(self.broker, messages, fence)
        if any(outcome is not None for outcome in outcomes):
            self.stop.set()
        return outcomes

    def _enqueue_all(self, messages: list[Message[Any]]) -> list[Outcome]:
        if not self.fenced:
            return [self._enqueue_one(message) for message in messages]
        if self.pacer.rate is None:
            return self._enqueue_fenced(messages)
        # Paced: slices of a tenth of a second's worth, each one script behind one fence.
        size = max(1, int(self.pacer.rate * _PACED_SLICE_SECONDS))
        outcomes: list[Outcome] = []
        for start in range(0, len(messages), size):
            part = messages[start : start + size]
            if self.stop.is_set():
                outcomes += ["not_attempted"] * len(part)
                continue
            self.pacer.wait(len(part))
            outcomes += self._enqueue_fenced(part)
        return outcomes

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

    def _claim(self, batch: list[str]) -> dict[str, StoredDeadLetter]:
        """Claim ``batch``; the ids not claimed are reported skipped."""
        claimed = {
            entry.record_id: entry
            for entry in self._retry("claim", lambda: self.backend.dead_letters_claim(batch, self.token))
        }
        if len(claimed) < len(batch):
            missing = [record_id for record_id in batch if record_id not in claimed]
            try:
                found = self._retry("read records", lambda: self.backend.dead_letters_get(missing))
            except BackendError:
                self._release_or_log(list(claimed))  # not enqueued: give them back at once
                raise
            for record_id, stored in zip(missing, found, strict=True):
                self.report.skipped[record_id] = "not_found" if stored is None else "not_dead"
        return claimed

    def _release_or_log(self, record_ids: list[str]) -> None:
        """Release claims of records that were not enqueued (else ``trim()`` does, after the timeout)."""
        if not record_ids:
            return
        try:
            self._retry("release", lambda: self.backend.dead_letters_release(record_ids, self.token))
        except BackendError as exc:
            logger.warning("Could not release %d dead-letter claims: %s", len(record_ids), exc)

    def claimed_batches(
        self, batches: Iterator[list[str]], limit: int | None
    ) -> Generator[tuple[list[str], dict[str, StoredDeadLetter]], None, None]:
        """Each batch with its claimed records, the next one listed and claimed while this one is enqueued.

        The lookahead overlaps the store's work (listing, claiming) with this
        process's (decoding, encoding, enqueueing).  Every batch claimed is
        yielded, even after the operation stopped, so that :meth:`run`
        releases it; one claimed but never yielded (the caller failed) is
        released here.
        """

        leftover: list[str] = []  # candidates of a page cut short by the limit, for the next batch

        def fetch(reserved: int) -> tuple[list[str], dict[str, StoredDeadLetter]] | None:
            nonlocal leftover
            candidates: list[str] | None = leftover or next(batches, None)
            leftover = []
            if candidates is None:
                return None
            if limit is not None:
                room = max(0, limit - reserved)
                candidates, leftover = candidates[:room], candidates[room:]
            return (candidates, self._claim(candidates)) if candidates else None

        if limit is not None:
            # With a limit, each batch is sized by what the batches before it really requeued
            # (skipped records are made up from the next candidates): no lookahead.
            while not self.stop.is_set() and len(self.report.requeued) < limit:
                got = fetch(len(self.report.requeued))
                if got is None:
                    return
                yield got
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="dead-letter-requeue")
        ahead: Future[tuple[list[str], dict[str, StoredDeadLetter]] | None] | None = pool.submit(fetch, 0)
        try:
            while ahead is not None:
                current, ahead = ahead, None
                got = current.result()
                if got is None:
                    return
                if not self.stop.is_set():
                    ahead = pool.submit(fetch, 0)
                yield got
        finally:
            if ahead is not None:  # claimed ahead, never yielded: the caller failed
                try:
                    left = ahead.result()
                except Exception:  # the caller's own error is on its way
                    left = None
                if left is not None and left[1]:
                    try:
                        self.backend.dead_letters_release(list(left[1]), self.token)
                    except BackendError as exc:
                        logger.warning("Could not release %d dead-letter claims: %s", len(left[1]), exc)
            pool.shutdown(wait=True)

    def run(self, batch: list[str], claimed: dict[str, StoredDeadLetter]) -> None:
        """Enqueue the claimed records of ``batch``, then finish or release them (the steps, in order)."""
        from .store import item_from

        report, token = self.report, self.token
        release: list[str] = []
        ready: list[tuple[DeadLetterRecord, Message[Any], tuple[Redrive, ...]]] = []
        try:
            now = self._retry("read the time", self.store.now)
        except BackendError:
            self._release_or_log(list(claimed))
            raise
        for record_id in batch:
            entry = claimed.get(record_id)
            if entry is None:
                continue
            item = item_from(entry)
            why = "not_attempted" if self.stop.is_set() else self._skip_reason(item)
            if why is not None or not isinstance(item, DeadLetterRecord):
                release.append(record_id)
                report.skipped[record_id] = why or "unreadable"
                continue
            redis_id = str(uuid.uuid4()) if self.fenced else None
            message, history = _redrive(item, self.queue, now, self.reason, self.host, redis_id)
            ready.append((item, message, history))
        done: list[tuple[str, bytes]] = []
        sent: list[tuple[str, Message[Any], int]] = []
        outcomes = self._enqueue_all([message for _, message, _ in ready]) if ready else []
        for (item, message, history), outcome in zip(ready, outcomes, strict=True):
            if outcome is None:
                done.append((item.record_id, item.encode(redrives=history)))
                sent.append((item.record_id, message, len(history)))
            elif isinstance(outcome, Uncertain):
                report.unconfirmed[item.record_id] = (
                    f"the enqueue failed midway ({_describe(outcome.error)}): it may have been enqueued"
                )
            elif isinstance(outcome, str):
                release.append(item.record_id)
                report.skipped[item.record_id] = outcome
            else:
                logger.error(
                    "Could not requeue dead letter %r: %s", item.record_id, outcome, exc_info=outcome
                )
                release.append(item.record_id)
                report.failed[item.record_id] = _describe(outcome)
        finished: set[str] = set()
        finish_error: BackendError | None = None
        if done:
            try:
                finished = set(self._retry("finish", lambda: self.backend.dead_letters_finish(done, token)))
            except BackendError as exc:
                finish_error = exc
        if release:
            try:
                self._retry("release", lambda: self.backend.dead_letters_release(release, self.token))
            except BackendError as exc:
                # Nothing of these was enqueued: trim() puts them back after the claim timeout.
                logger.warning("Could not release %d dead-letter claims: %s", len(release), exc)
                self.stop.set()
        for record_id, message, redrives in sent:
            if finish_error is not None:
                report.unconfirmed[record_id] = (
                    f"enqueued, but not marked requeued: the store failed ({_describe(finish_error)})"
                )
                continue
            if record_id not in finished:
                report.unconfirmed[record_id] = (
                    "enqueued, but its claim was lost meanwhile (released as stale, or removed)"
                )
                continue
            report.requeued.append(record_id)
            report.queue_names[record_id] = message.queue_name
            events.emit(
                "dead_letter_requeued",
                record_id=record_id,
                message_id=message.message_id,
                actor_name=message.actor_name,
                queue_name=message.queue_name,
                reason=self.reason,
                redrives=redrives,
            )
        if report.unconfirmed:
            self.stop.set()
