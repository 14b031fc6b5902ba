"""Import what sits in a broker's own dead-letter queue into the store.

Dramatiq rejects failed messages into ``<queue>.XQ``: on Redis a sorted set
``<namespace>:<queue>.XQ`` (ids by rejection time) with the messages in
``<namespace>:<queue>.XQ.msgs``; on RabbitMQ a queue ``<queue>.XQ``, which can
only be consumed; on the StubBroker ``broker.dead_letters_by_queue``.  Those
hold messages that failed before ``DeadLetters`` was installed, while the
store was unreachable, or in a worker that died between rejecting a message
and recording it.

Each batch is **stored first, then removed** from the broker (RabbitMQ:
``basic_get``, store, then ``basic_ack``; a failed store ``basic_nack``s them
back), so nothing is lost if either side fails midway.  Records get category
``imported`` and the deterministic id of their message, so a message the
middleware already recorded is not recorded twice (it is simply removed from
the broker), and a record purged, trimmed or requeued is not revived
(tombstones).  A readable copy is never dropped in favour of a stored record
that cannot be read: such a record (corrupt, or its data missing) is replaced
by the copy, keeping its status (``replaced_unreadable``); one written by a
newer release (a newer format version) is readable there, and is kept.
Imported records carry the traceback Dramatiq's ``Retries`` saved in the
message options (that of the attempt before the last), when
there is one; their error type is read from its last line.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dramatiq import Message
from dramatiq.broker import Broker
from dramatiq.common import q_name, xq_name

from .. import events
from ..backends.dead_letters import WRITE_REPLACED, WRITE_SKIPPED
from ..broker_kind import broker_kind
from ..errors import ConfigurationError
from .record import IMPORTED, DeadLetterRecord, build_record
from .redaction import redaction_keys

if TYPE_CHECKING:
    from .store import DeadLetterStore, Progress

__all__ = ["ImportReport", "QueueImport", "import_dead_letters"]

logger = logging.getLogger(__name__)

#: Messages per batch: stored in one backend step, then removed from the broker.
BATCH = 200

_LAST_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:<locals>\.[\w.]+)*)(?::\s?(.*))?$")


@dataclass
class QueueImport:
    """What one queue's import did.

    Attributes:
      before, after: messages in the broker's dead-letter queue before and after.
      imported: records stored from the broker's copies: new ones, and
        those of ``replaced_unreadable``.
      replaced_unreadable: records the store had but could not read
        (corrupt, or their data missing), replaced by the broker's readable
        copy (keeping their status) rather than losing that copy.
      already_stored: messages the store already had, readable (captured by
        the middleware), or removed on purpose: removed from the broker only.
      undecodable: messages the broker's encoder could not decode, stored
        with their raw bytes (they cannot be requeued).
    """

    queue_name: str
    before: int = 0
    after: int = 0
    imported: int = 0
    already_stored: int = 0
    undecodable: int = 0
    replaced_unreadable: int = 0


@dataclass
class ImportReport:
    """What :func:`import_dead_letters` did, per queue."""

    broker: str
    queues: dict[str, QueueImport] = field(default_factory=dict)

    @property
    def imported(self) -> int:
        return sum(item.imported for item in self.queues.values())

    @property
    def already_stored(self) -> int:
        return sum(item.already_stored for item in self.queues.values())

    def to_dict(self) -> dict[str, Any]:
        return {"broker": self.broker, "queues": {name: asdict(item) for name, item in self.queues.items()}}


def _error_from(traceback_text: str) -> tuple[str, str]:
    for line in reversed(traceback_text.strip().splitlines()):
        if line and not line.startswith((" ", "\t")):
            match = _LAST_LINE.match(line.strip())
            if match:
                return match.group(1), match.group(2) or ""
            break
    return "unknown", ""


def record_from_broker(
    broker: Broker, data: bytes | Message[Any], *, source: str, failed_at: int, fallback_id: str, queue: str
) -> DeadLetterRecord:
    """A record of category ``imported`` from a dead-lettered message (or its undecodable bytes)."""
    try:
        message = data if isinstance(data, Message) else Message.decode(data)
    except Exception as exc:
        raw = data if isinstance(data, bytes) else b""
        return DeadLetterRecord(
            record_id=f"undecodable-{fallback_id}",
            message_id=fallback_id,
            queue_name=queue,
            actor_name="unknown",
            args=(),
            kwargs={},
            options={},
            message_timestamp=failed_at,
            category=IMPORTED,
            error_type="unknown",
            error_message=f"the message could not be decoded: {type(exc).__name__}: {exc}",
            traceback="",
            chain=(),
            attempts=1,
            first_failure_at=failed_at,
            last_failure_at=failed_at,
            host="",
            pid=0,
            version=_version(),
            source=source,
            raw=raw,
        )
    saved = str(message.options.get("traceback") or "")
    error_type, error_message = _error_from(saved) if saved else ("unknown", "")
    retries = message.options.get("retries")
    try:
        fn = broker.get_actor(message.actor_name).fn
    except Exception:
        fn = None
    return build_record(
        message,
        category=IMPORTED,
        error_type=error_type,
        error_message=error_message,
        traceback=saved,
        chain=(),
        attempts=(retries if isinstance(retries, int) and retries >= 0 else 0) + 1,
        failed_at=failed_at,
        host="",
        pid=0,
        source=source,
        redact_keys=redaction_keys(broker, message.actor_name),
        fn=fn,
    )


def _version() -> str:
    from .. import __version__

    return __version__


def import_dead_letters(
    store: DeadLetterStore,
    broker: Broker,
    *,
    queues: Iterable[str] | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Move every message of the broker's dead-letter queues into ``store`` (see the module docstring).

    Parameters:
      queues: canonical queue names; by default every queue the broker
        declared (on Redis, also every ``<namespace>:*.XQ`` found).
      limit: import at most this many messages per queue.
      progress: ``progress(done, total)`` after each batch.

    Raises ``ConfigurationError`` for a broker without a known dead-letter
    queue, and the store's or broker's errors (what was stored is removed;
    the rest stays in the broker for next time).
    """
    source = _source_for(broker, store.now)
    names = sorted({q_name(name) for name in (queues if queues is not None else source.queues())})
    report = ImportReport(broker=source.kind)
    for queue_name in names:
        item = report.queues[queue_name] = QueueImport(queue_name)
        item.before = source.depth(queue_name)
        done = 0
        for batch, settle in source.batches(queue_name, BATCH if limit is None else min(BATCH, limit)):
            records = [
                record_from_broker(
                    broker,
                    data,
                    source=f"import:{source.kind}",
                    failed_at=at,
                    fallback_id=ref,
                    queue=queue_name,
                )
                for ref, data, at in batch
            ]
            try:
                outcomes = store.add_many(records, replace=False)
                skipped = [n for n, outcome in enumerate(outcomes) if outcome == WRITE_SKIPPED]
                if skipped:
                    replaced = store.replace_unreadable([records[n] for n in skipped])
                    for n, done in zip(skipped, replaced, strict=True):
                        if done:
                            outcomes[n] = WRITE_REPLACED
                            item.replaced_unreadable += 1
            except BaseException:
                settle(False)
                raise
            settle(True)
            item.imported += sum(1 for outcome in outcomes if outcome != WRITE_SKIPPED)
            item.already_stored += sum(1 for outcome in outcomes if outcome == WRITE_SKIPPED)
            item.undecodable += sum(1 for record in records if record.raw is not None)
            done += len(batch)
            if progress is not None:
                progress(done, item.before)
            if limit is not None and done >= limit:
                break
        item.after = source.depth(queue_name)
        if item.imported or item.already_stored:
            logger.info(
                "Imported %d dead letters from %s queue %r (%d replacing unreadable records; %d were "
                "already stored); %d left there.",
                item.imported,
                source.kind,
                xq_name(queue_name),
                item.replaced_unreadable,
                item.already_stored,
                item.after,
            )
        events.emit("dead_letters_imported", broker=source.kind, **asdict(item))
    return report


# -- broker sources -------------------------------------------------------------------
#
# A source yields batches of (reference, message bytes or Message, failed_at ms)
# with a settle(stored) callback: settle(True) removes the batch from the broker,
# settle(False) gives it back.


class _Source:
    kind = "unknown"

    def __init__(self, broker: Any, now: Callable[[], int]) -> None:
        self.broker = broker
        self.now = now

    def queues(self) -> Iterable[str]:
        return self.broker.get_declared_queues()

    def depth(self, queue_name: str) -> int:
        raise NotImplementedError

    def batches(self, queue_name: str, size: int) -> Iterator[tuple[list[tuple[str, Any, int]], Any]]:
        raise NotImplementedError


class _RedisSource(_Source):
    kind = "redis"

    def _keys(self, queue_name: str) -> tuple[str, str]:
        key = f"{self.broker.namespace}:{xq_name(queue_name)}"
        return key, f"{key}.msgs"

    def queues(self) -> Iterable[str]:
        found = set(self.broker.get_declared_queues())
        prefix = f"{self.broker.namespace}:"
        for key in self.broker.client.scan_iter(match=f"{prefix}*.XQ", count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            found.add(name[len(prefix) : -3])
        return found

    def depth(self, queue_name: str) -> int:
        return int(self.broker.client.zcard(self._keys(queue_name)[0]))

    def batches(self, queue_name: str, size: int) -> Iterator[tuple[list[tuple[str, Any, int]], Any]]:
        client = self.broker.client
        xq, msgs = self._keys(queue_name)
        while True:
            members = client.zrange(xq, 0, size - 1, withscores=True)
            if not members:
                return
            refs = [member for member, _ in members]
            payloads = client.hmget(msgs, refs)
            batch = [
                (ref.decode() if isinstance(ref, bytes) else str(ref), data, int(score))
                for (ref, score), data in zip(members, payloads, strict=True)
                if data is not None
            ]

            def settle(stored: bool, refs: list[Any] = refs) -> None:
                if stored:
                    # Redis message ids are unique per enqueue, so these entries
                    # cannot have been replaced since they were read.
                    with client.pipeline(transaction=True) as pipe:
                        pipe.zrem(xq, *refs)
                        pipe.hdel(msgs, *refs)
                        pipe.execute()

            if not batch:  # only ids whose message is gone: drop them
                settle(True)
                continue
            yield batch, settle


class _RabbitmqSource(_Source):
    kind = "rabbitmq"

    def queues(self) -> Iterable[str]:
        declared = self.broker.get_declared_queues()
        if not declared:
            raise ConfigurationError(
                "RabbitMQ cannot list queues: name them (--queue) or load the app that declares them (--app)",
                option="queues",
            )
        return declared

    def depth(self, queue_name: str) -> int:
        import pika

        try:
            return int(
                self.broker.channel.queue_declare(xq_name(queue_name), passive=True).method.message_count
            )
        except pika.exceptions.ChannelClosedByBroker:
            del self.broker.channel  # the queue does not exist; the broker closed the channel
            return 0

    def batches(self, queue_name: str, size: int) -> Iterator[tuple[list[tuple[str, Any, int]], Any]]:
        name = xq_name(queue_name)
        if not self.depth(queue_name):
            return
        channel = self.broker.channel
        while True:
            batch: list[tuple[str, Any, int]] = []
            last_tag = None
            for _ in range(size):
                method, properties, body = channel.basic_get(name, auto_ack=False)
                if method is None:
                    break
                last_tag = method.delivery_tag
                # Delivery tags restart with each channel: name undecodable bodies by content.
                ref = hashlib.sha256(body).hexdigest()[:32]
                batch.append((ref, body, _rejected_at(properties) or self.now()))
            if last_tag is None:
                return

            def settle(stored: bool, tag: int = last_tag) -> None:
                if stored:
                    channel.basic_ack(delivery_tag=tag, multiple=True)
                else:
                    channel.basic_nack(delivery_tag=tag, multiple=True, requeue=True)

            yield batch, settle
            if len(batch) < size:
                return


def _rejected_at(properties: Any) -> int | None:
    for death in (getattr(properties, "headers", None) or {}).get("x-death") or ():
        at = death.get("time") if isinstance(death, dict) else None
        if at is not None and hasattr(at, "timestamp"):
            return int(at.timestamp() * 1000)
    return None


class _StubSource(_Source):
    kind = "stub"

    def queues(self) -> Iterable[str]:
        return [name for name, items in self.broker.dead_letters_by_queue.items() if items]

    def depth(self, queue_name: str) -> int:
        return len(self.broker.dead_letters_by_queue.get(queue_name, ()))

    def batches(self, queue_name: str, size: int) -> Iterator[tuple[list[tuple[str, Any, int]], Any]]:
        dead = self.broker.dead_letters_by_queue.get(queue_name)
        while dead:
            taken = list(dead[:size])
            now = self.now()
            batch = [(proxy.message_id, getattr(proxy, "_message", proxy), now) for proxy in taken]

            def settle(stored: bool, taken: list[Any] = taken, dead: list[Any] = dead) -> None:
                if stored:
                    for proxy in taken:
                        for n, item in enumerate(dead):
                            if item is proxy:
                                del dead[n]
                                break

            yield batch, settle


def _source_for(broker: Broker, now: Callable[[], int]) -> _Source:
    kind = broker_kind(broker)
    if kind == "stub":
        return _StubSource(broker, now)
    if kind == "redis":
        return _RedisSource(broker, now)
    if kind == "rabbitmq":
        return _RabbitmqSource(broker, now)
    raise ConfigurationError(
        f"cannot import dead letters from a {type(broker).__name__}: "
        "RedisBroker, RabbitmqBroker and StubBroker are supported",
        option="broker",
    )
