"""DeadLetterStore: every final failure, kept, listed, requeued, purged, exported, trimmed."""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .. import events
from ..backends.base import StateBackend
from ..backends.dead_letters import WRITE_REPLACED, WRITE_SKIPPED, DeadLetterEntry, StoredDeadLetter
from ..errors import ConfigurationError, CorruptRecord
from ..options import milliseconds, positive_int
from .query import DeadLetterFilter, DeadLetterPage, Item, chunked, decode_cursor, encode_cursor
from .record import DeadLetterRecord, UnreadableRecord

if TYPE_CHECKING:
    from dramatiq.broker import Broker

    from .importer import ImportReport
    from .redrive import RedrivePolicy, RedriveReport
    from .requeue import RequeueReport

__all__ = [
    "DEFAULT_CLAIM_TIMEOUT",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_COUNT",
    "DEFAULT_TOMBSTONE_TTL",
    "DeadLetterStats",
    "DeadLetterStore",
    "Progress",
    "PurgeReport",
    "TrimReport",
]

logger = logging.getLogger(__name__)

#: Milliseconds a record is kept (30 days).
DEFAULT_MAX_AGE = 30 * 24 * 3_600_000

#: Records kept at most; the oldest beyond this are removed by ``trim()``.
DEFAULT_MAX_COUNT = 100_000

#: Milliseconds after which a requeue's claim counts as abandoned (its
#: process died midway) and ``trim()`` puts the record back to ``dead``.
DEFAULT_CLAIM_TIMEOUT = 300_000

#: Milliseconds a removed record's id is remembered, so that importing a
#: broker's dead-letter queue does not bring it back.  Dramatiq keeps its
#: own dead letters for 7 days; this outlives them by one.
DEFAULT_TOMBSTONE_TTL = 8 * 24 * 3_600_000

#: Tombstones kept at least (else twice ``max_count``), whatever their age.
MIN_TOMBSTONES = 100_000

#: Records per backend step in bulk operations.
BATCH = 500

#: Index entries one listing call examines at most (it returns a cursor to go on).
LIST_BUDGET = 100_000

#: ``progress(done, total)``: called during bulk work (``total`` may be ``None``).
Progress = Callable[[int, "int | None"], None]


def wall_ms(backend: StateBackend) -> int:
    """The time for record fields: the backend's injected clock if it has one, else this host's."""
    clock = getattr(backend, "clock", None)
    return clock.now_ms() if clock is not None else int(time.time() * 1000)


@dataclass(frozen=True)
class DeadLetterStats:
    """What is in the store.

    Attributes:
      dead, claimed, requeued, total: records by status (``total`` counts all).
      by_category, by_actor, by_queue, by_error_type: dead records per value.
      oldest_at, newest_at: failure times (ms) of the oldest and newest dead
        records, ``None`` when there are none.
      recent: records (any status) that failed in the last ``window_ms``.
      growth_per_minute: ``recent`` per minute of the window.
      now: the backend's time of the counts (ms).
    """

    dead: int
    claimed: int
    requeued: int
    total: int
    by_category: dict[str, int]
    by_actor: dict[str, int]
    by_queue: dict[str, int]
    by_error_type: dict[str, int]
    oldest_at: int | None
    newest_at: int | None
    recent: int
    window_ms: int
    growth_per_minute: float
    now: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PurgeReport:
    """What ``purge()`` removed (or, with ``dry_run``, would remove).

    ``skipped`` maps record ids to why they stayed (``"not_found"``,
    ``"claimed"`` by a requeue in flight, ``"status"`` not selected).
    """

    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrimReport:
    """What retention removed: counts by reason, category, actor and status.

    Attributes:
      by_age: records removed for being older than ``max_age_ms``.
      by_count: the oldest records removed beyond ``max_count``.
      released_claims: abandoned requeue claims put back to ``dead``.
      tombstones_expired: tombstones dropped.
    """

    max_age_ms: int
    max_count: int
    by_age: int = 0
    by_count: int = 0
    released_claims: int = 0
    tombstones_expired: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    by_actor: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    removed_ids: list[str] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return self.by_age + self.by_count

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["removed"] = self.removed
        return data


def _entry(record: DeadLetterRecord) -> DeadLetterEntry:
    return DeadLetterEntry(
        record.record_id,
        record.encode(),
        record.last_failure_at,
        record.actor_name,
        record.queue_name,
        record.error_type,
        record.category,
    )


def _unreadable_here(stored: StoredDeadLetter) -> bool:
    """Whether a stored payload is corrupt (not merely of a newer format version)."""
    assert stored.payload is not None
    try:
        DeadLetterRecord.decode(stored.record_id, stored.payload)
    except CorruptRecord:
        return not DeadLetterRecord.newer_format(stored.payload)
    return False


def item_from(stored: StoredDeadLetter) -> Item:
    """Decode a stored record; an undecodable one becomes an :class:`UnreadableRecord`."""
    if stored.payload is None:
        return _unreadable(stored, "the record's data is missing (only its index entry is left)")
    try:
        return DeadLetterRecord.decode(stored.record_id, stored.payload, status=stored.status or "dead")
    except CorruptRecord as exc:
        return _unreadable(stored, str(exc))


def _unreadable(stored: StoredDeadLetter, problem: str) -> UnreadableRecord:
    return UnreadableRecord(
        stored.record_id,
        problem,
        stored.status or "dead",
        stored.failed_at,
        stored.actor,
        stored.queue,
        stored.error_type,
        stored.category,
    )


class DeadLetterStore:
    """Every final failure, with its context; list, requeue, purge, export, trim, redrive, import.

    The middleware writes here; operators use it from the API and the
    ``dramatiq-resilience dlq`` command; the scheduler runs :meth:`trim`,
    :meth:`redrive_due` and :meth:`import_from` periodically.  Every
    operation is safe to run from many processes at once.

    Parameters:
      backend: the state backend (records live under its namespace).
      max_age: milliseconds a record is kept by :meth:`trim` (default 30 days).
      max_count: records kept at most by :meth:`trim` (default 100 000).
      claim_timeout: milliseconds after which an abandoned requeue claim is
        released by :meth:`trim` (default 300 000).
      tombstone_ttl: milliseconds a removed id is remembered so that imports
        do not revive it (default 8 days).
      redrive: the :class:`RedrivePolicy` list :meth:`redrive_due` applies by default.
    """

    def __init__(
        self,
        backend: StateBackend,
        *,
        max_age: int = DEFAULT_MAX_AGE,
        max_count: int = DEFAULT_MAX_COUNT,
        claim_timeout: int = DEFAULT_CLAIM_TIMEOUT,
        tombstone_ttl: int = DEFAULT_TOMBSTONE_TTL,
        redrive: Iterable[RedrivePolicy] = (),
    ) -> None:
        if not isinstance(backend, StateBackend):
            raise ConfigurationError(
                f"must be a StateBackend (RedisBackend or StubBackend), got {backend!r}", option="backend"
            )
        self.backend = backend
        self.max_age = _check("max_age", milliseconds(), max_age)
        self.max_count = _check("max_count", positive_int, max_count)
        self.claim_timeout = _check("claim_timeout", milliseconds(), claim_timeout)
        self.tombstone_ttl = _check("tombstone_ttl", milliseconds(), tombstone_ttl)
        from .redrive import RedrivePolicy

        self.redrive = tuple(redrive)
        for policy in self.redrive:
            if not isinstance(policy, RedrivePolicy):
                raise ConfigurationError(f"must be a list of RedrivePolicy, got {policy!r}", option="redrive")

    def __repr__(self) -> str:
        return f"DeadLetterStore({self.backend!r})"

    def now(self) -> int:
        """The time written in records and redrives, in milliseconds since the epoch."""
        return wall_ms(self.backend)

    # -- writing ---------------------------------------------------------------------

    def add(self, record: DeadLetterRecord, *, replace: bool = True) -> bool:
        """Store ``record`` as dead; return whether it was written.

        With ``replace`` (the middleware's capture) a record with the same id
        is overwritten; without it (imports) an existing or removed id is
        left alone and ``False`` is returned.
        """
        return self.add_many([record], replace=replace)[0] != WRITE_SKIPPED

    def add_many(self, records: Sequence[DeadLetterRecord], *, replace: bool = False) -> builtins.list[int]:
        """Store several records in one step; one ``WRITE_*`` outcome each."""
        return self.backend.dead_letters_write([_entry(r) for r in records], replace=replace)

    def replace_unreadable(self, records: Sequence[DeadLetterRecord]) -> builtins.list[bool]:
        """Where the stored record of a ``records`` id cannot be read, store that (readable) copy.

        For imports: a broker's readable copy must not be dropped in favour
        of a corrupt record (or one whose data is missing).  The record keeps
        its status; one that a newer release can read (a newer format
        version) is kept, as is one rewritten since it was read (only
        readable records are written).  Returns, per record, whether it was
        stored.
        """
        stored = self.backend.dead_letters_get([r.record_id for r in records])
        chosen: builtins.list[int] = []
        items: builtins.list[tuple[DeadLetterEntry, str]] = []
        for n, (record, found) in enumerate(zip(records, stored, strict=True)):
            if found is None or not found.status:
                continue  # unknown or removed (tombstone): the write skipped it on purpose
            if found.payload is None:
                digest = ""
            elif _unreadable_here(found):
                digest = hashlib.sha1(found.payload, usedforsecurity=False).hexdigest()
            else:
                continue
            chosen.append(n)
            items.append((_entry(record), digest))
        replaced = [False] * len(records)
        for n, outcome in zip(chosen, self.backend.dead_letters_repair(items) if items else [], strict=True):
            replaced[n] = outcome == WRITE_REPLACED
        if any(replaced):
            logger.warning(
                "Replaced %d unreadable dead-letter records with readable copies: %s.",
                sum(replaced),
                ", ".join(repr(r.record_id) for r, done in zip(records, replaced, strict=True) if done),
            )
        return replaced

    # -- reading ---------------------------------------------------------------------

    def get(self, record_id: str) -> DeadLetterRecord | None:
        """The record ``record_id``, or ``None``.  Raises :class:`CorruptRecord` if unreadable."""
        [stored] = self.backend.dead_letters_get([record_id])
        if stored is None:
            return None
        item = item_from(stored)
        if isinstance(item, UnreadableRecord):
            raise item.error
        return item

    def get_item(self, record_id: str) -> Item | None:
        """Like :meth:`get`, but an unreadable record is returned as an :class:`UnreadableRecord`."""
        [stored] = self.backend.dead_letters_get([record_id])
        return None if stored is None else item_from(stored)

    def list(
        self,
        filter: DeadLetterFilter | Mapping[str, Any] | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> DeadLetterPage:
        """One page of records matching ``filter``, newest first by default.

        Pass the page's ``cursor`` back to get the next page; it stays valid
        while records come and go.  Unreadable records are listed as
        :class:`UnreadableRecord` with their ids.
        """
        limit = _check("limit", positive_int, limit)
        flt = DeadLetterFilter.of(filter)
        items: builtins.list[Item] = []
        position = decode_cursor(cursor)
        for entries, after in self._chunks(flt, self._facets(flt), limit, position, newest_first, True):
            items += [item_from(entry) for entry in entries]
            position = after
        return DeadLetterPage(items, encode_cursor(position))

    def iterate(
        self,
        filter: DeadLetterFilter | Mapping[str, Any] | None = None,
        *,
        newest_first: bool = False,
        batch: int = BATCH,
    ) -> Iterator[Item]:
        """Every record matching ``filter``, oldest first by default, fetched ``batch`` at a time."""
        for page in self._pages(DeadLetterFilter.of(filter), batch, newest_first, True):
            yield from (item_from(entry) for entry in page)

    def ids(
        self, filter: DeadLetterFilter | Mapping[str, Any] | None = None, *, batch: int = BATCH
    ) -> Iterator[builtins.list[str]]:
        """The ids of records matching ``filter``, oldest first, in lists of up to ``batch``."""
        for page in self._pages(DeadLetterFilter.of(filter), batch, False, False):
            yield [entry.record_id for entry in page]

    def _pages(
        self, flt: DeadLetterFilter, batch: int, newest_first: bool, with_payload: bool
    ) -> Iterator[builtins.list[StoredDeadLetter]]:
        facets = self._facets(flt)
        cursor: tuple[int, str] | None = None
        while True:
            found: builtins.list[StoredDeadLetter] = []
            for entries, after in self._chunks(flt, facets, batch, cursor, newest_first, with_payload):
                found += entries
                cursor = after
            if found:
                yield found
            if cursor is None:
                return

    def _facets(self, flt: DeadLetterFilter) -> dict[str, builtins.list[str]]:
        known: Sequence[str] = ()
        if flt.error_type is not None and any("." not in name for name in flt.error_type):
            known = list(self.backend.dead_letters_stats(window=1).by_facet.get("error_type", {}))
        return flt.facets(known)

    def _chunks(  # noqa: PLR0917 (private; positional keeps the callers short)
        self,
        flt: DeadLetterFilter,
        facets: Mapping[str, Sequence[str]],
        limit: int,
        cursor: tuple[int, str] | None,
        newest_first: bool,
        with_payload: bool,
    ) -> Iterator[tuple[builtins.list[StoredDeadLetter], tuple[int, str] | None]]:
        """Backend steps until ``limit`` entries are found, the budget is spent, or the end."""
        found = scanned = 0
        while True:
            chunk = self.backend.dead_letters_list(
                status=flt.status,
                facets=facets,
                since=flt.since,
                until=flt.until,
                descending=newest_first,
                limit=limit - found,
                cursor=cursor,
                with_payload=with_payload,
                budget=min(LIST_BUDGET, max(1_000, (limit - found) * 20)),
            )
            found += len(chunk.entries)
            scanned += chunk.scanned
            cursor = chunk.cursor
            yield chunk.entries, cursor
            if cursor is None or found >= limit or scanned >= LIST_BUDGET:
                return

    def stats(self, *, window: int = 600_000) -> DeadLetterStats:
        """Counts by status, category, actor, queue and error type; age bounds; growth.

        ``window`` is in milliseconds (default 10 minutes): ``recent`` counts
        failures in it and ``growth_per_minute`` is their rate.
        """
        window = _check("window", milliseconds(), window)
        counts = self.backend.dead_letters_stats(window=window)
        return DeadLetterStats(
            dead=counts.dead,
            claimed=counts.claimed,
            requeued=counts.requeued,
            total=counts.total,
            by_category=_sorted(counts.by_facet.get("category", {})),
            by_actor=_sorted(counts.by_facet.get("actor", {})),
            by_queue=_sorted(counts.by_facet.get("queue", {})),
            by_error_type=_sorted(counts.by_facet.get("error_type", {})),
            oldest_at=counts.oldest,
            newest_at=counts.newest,
            recent=counts.recent,
            window_ms=window,
            growth_per_minute=round(counts.recent * 60_000 / window, 3),
            now=counts.now,
        )

    # -- acting ----------------------------------------------------------------------

    def requeue(
        self,
        ids: Iterable[str] | None = None,
        *,
        broker: Broker | None,
        filter: DeadLetterFilter | Mapping[str, Any] | None = None,
        queue: str | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        allow_redacted: bool = False,
        limit: int | None = None,
        reason: str = "manual",
        progress: Progress | None = None,
    ) -> RequeueReport:
        """Enqueue dead records again, each exactly once even from several processes at once.

        Each record is claimed atomically before its message is enqueued
        (inside ``internal_enqueue("redrive")``, so enqueue-side protections
        let it through), marked ``requeued`` with the redrive in its history
        after, and released back to ``dead`` if the enqueue certainly failed.
        The message keeps its id, gets a fresh timestamp, and loses its
        retries.  When the store or the broker fails midway (after the
        retries of :mod:`.requeue`), records whose outcome is uncertain stay
        claimed and are reported ``unconfirmed``; ``trim()`` releases them
        after ``claim_timeout``, and only then can one be enqueued twice.

        Parameters:
          ids: record ids; or ``filter``: every dead record it matches,
            oldest first (``filter={}`` for all).  Give one of the two.
          broker: where to enqueue (Redis, RabbitMQ or Stub broker); ``None``
            is allowed for a dry run.
          queue: a queue to send them to instead of their own.
          rate: at most this many messages per second (default: no limit).
          dry_run: report what would be requeued; change nothing.
          allow_redacted: also requeue records whose arguments were redacted.
          limit: requeue at most this many.
          reason: recorded in the redrive history (``"manual"``).
          progress: ``progress(done, total)`` after each batch.

        Returns a :class:`RequeueReport` (``requeued``, ``skipped`` with
        reasons, ``failed``, ``unconfirmed``).
        """
        from .requeue import requeue

        return requeue(
            self,
            broker,
            ids=ids,
            filter=filter,
            queue=queue,
            rate=rate,
            dry_run=dry_run,
            allow_redacted=allow_redacted,
            limit=limit,
            reason=reason,
            progress=progress,
        )

    def purge(
        self,
        ids: Iterable[str] | None = None,
        *,
        filter: DeadLetterFilter | Mapping[str, Any] | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> PurgeReport:
        """Remove records by id (any status but claimed) or by ``filter`` (its status).

        Removed ids get a tombstone, so importing a broker's dead-letter
        queue does not bring them back.  Give ids or a filter, not both; use
        ``filter={}`` to mean every dead record.
        """
        if (ids is None) == (filter is None):
            raise ConfigurationError("give record ids or a filter (not both)", option="purge")
        report = PurgeReport(dry_run=dry_run)
        if ids is not None:
            batches: Iterator[builtins.list[str]] = chunked(list(dict.fromkeys(ids)), BATCH)
            statuses = ["dead", "requeued"]
        else:
            flt = DeadLetterFilter.of(filter)
            batches = self.ids(flt)
            statuses = ["dead", "requeued"] if flt.status == "any" else [flt.status]
        for batch in batches:
            if dry_run:
                for record_id, stored in zip(batch, self.backend.dead_letters_get(batch), strict=True):
                    if stored is None:
                        report.skipped[record_id] = "not_found"
                    elif stored.status == "claimed":
                        report.skipped[record_id] = "claimed"
                    else:
                        report.removed.append(record_id)
            else:
                removed = self.backend.dead_letters_delete(batch, statuses=statuses)
                gone = {entry.record_id for entry in removed}
                report.removed += [record_id for record_id in batch if record_id in gone]
                left = [record_id for record_id in batch if record_id not in gone]
                for record_id, stored in zip(left, self.backend.dead_letters_get(left), strict=True):
                    report.skipped[record_id] = (
                        "not_found"
                        if stored is None
                        else "claimed"
                        if stored.status == "claimed"
                        else "status"
                    )
            if progress is not None:
                progress(len(report.removed) + len(report.skipped), None)
        if not dry_run and report.removed:
            logger.info("Purged %d dead-letter records.", len(report.removed))
            events.emit("dead_letters_purged", count=len(report.removed), record_ids=list(report.removed))
        return report

    def export(
        self,
        out: IO[str],
        filter: DeadLetterFilter | Mapping[str, Any] | None = None,
        *,
        progress: Progress | None = None,
    ) -> int:
        """Write every record matching ``filter`` to ``out`` as JSON lines, oldest first.

        Unreadable records are written as ``{"record_id": ..., "readable":
        false, "problem": ...}``.  Returns the number of lines written.
        """
        written = 0
        for page in self._pages(DeadLetterFilter.of(filter), BATCH, False, True):
            for entry in page:
                out.write(json.dumps(item_from(entry).to_dict(), sort_keys=True) + "\n")
            written += len(page)
            if progress is not None:
                progress(written, None)
        return written

    def trim(self, *, max_age: int | None = None, max_count: int | None = None) -> TrimReport:
        """Apply retention: remove records older than ``max_age`` ms and beyond ``max_count``.

        Defaults are the store's.  Also releases abandoned requeue claims and
        drops expired tombstones.  What was removed is logged, emitted as a
        ``dead_letters_trimmed`` event and returned; nothing goes silently.
        """
        max_age = self.max_age if max_age is None else _check("max_age", milliseconds(), max_age)
        max_count = self.max_count if max_count is None else _check("max_count", positive_int, max_count)
        report = TrimReport(max_age_ms=max_age, max_count=max_count)
        categories: Counter[str] = Counter()
        actors: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        while True:
            step = self.backend.dead_letters_trim(
                max_age=max_age,
                max_count=max_count,
                claim_timeout=self.claim_timeout,
                tombstone_ttl=self.tombstone_ttl,
                max_tombstones=max(2 * max_count, MIN_TOMBSTONES),
                limit=BATCH,
            )
            report.by_age += len(step.by_age)
            report.by_count += len(step.by_count)
            report.released_claims += step.released
            report.tombstones_expired += step.tombstones_expired
            for entry in step.by_age + step.by_count:
                categories[entry.category or "unknown"] += 1
                actors[entry.actor or "unknown"] += 1
                statuses[entry.status or "unknown"] += 1
                report.removed_ids.append(entry.record_id)
            if not step.more:
                break
        report.by_category, report.by_actor, report.by_status = dict(categories), dict(actors), dict(statuses)
        if report.released_claims:
            logger.warning(
                "Released %d dead-letter requeue claims older than %d milliseconds: the requeue holding "
                "them stopped midway, so their messages may have been enqueued already.",
                report.released_claims,
                self.claim_timeout,
            )
        if report.removed:
            logger.info(
                "Dead-letter retention removed %d records (%d older than %d milliseconds, %d beyond the "
                "%d-record limit): by category %s, by status %s.",
                report.removed,
                report.by_age,
                max_age,
                report.by_count,
                max_count,
                report.by_category,
                report.by_status,
            )
        events.emit(
            "dead_letters_trimmed", **{k: v for k, v in report.to_dict().items() if k != "removed_ids"}
        )
        return report

    def redrive_due(
        self, broker: Broker, policies: Iterable[RedrivePolicy] | None = None, *, limit: int | None = None
    ) -> RedriveReport:
        """Requeue what the redrive policies say is due; see :mod:`.redrive`."""
        from .redrive import redrive_due

        return redrive_due(self, broker, self.redrive if policies is None else tuple(policies), limit=limit)

    def import_from(
        self,
        broker: Broker,
        *,
        queues: Iterable[str] | None = None,
        limit: int | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Move what sits in the broker's own dead-letter queues into the store; see :mod:`.importer`."""
        from .importer import import_dead_letters

        return import_dead_letters(self, broker, queues=queues, limit=limit, progress=progress)


def _check(name: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc), option=name) from None


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
