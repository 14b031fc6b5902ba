"""Dead-letter storage operations: the atomic steps under ``DeadLetterStore``.

The backend stores opaque encoded records (bytes) with a small index entry
each: status, failure time and four facets (actor, queue, error type,
category).  Policy (encoding, filters, retention defaults, requeue) lives in
:mod:`dramatiq_resilience.dead_letters`.

Layout in Redis (every key shares the hash tag ``{dlq}``, so every script
runs on one Redis Cluster slot):

========================================  ======================================
``<ns>:dead_letters:{dlq}:rec``           hash: record id -> encoded record
``<ns>:dead_letters:{dlq}:idx``           hash: record id -> index entry
``<ns>:dead_letters:{dlq}:all``           zset: every record by failure time
``<ns>:dead_letters:{dlq}:dead``          zset: dead records by failure time
``<ns>:dead_letters:{dlq}:requeued``      zset: requeued records by failure time
``<ns>:dead_letters:{dlq}:claimed``       zset: records being requeued by claim time
``<ns>:dead_letters:{dlq}:tomb``          zset: removed record ids by removal time
``<ns>:dead_letters:{dlq}:n:<facet>``     hash: facet value -> dead records
``<ns>:dead_letters:{dlq}:by:<facet>:<v>`` zset: records with that value, by failure time
========================================  ======================================

A record's status is ``dead`` (listed by default), ``claimed`` (a requeue
holds it: it is enqueueing the message now) or ``requeued`` (kept with its
redrive history until retention removes it).  The index keeps the token of
the requeue operation that claimed or finished a record, so that both steps
can be retried safely.  Removed ids leave a tombstone
so that importing a broker's dead-letter queue does not bring back a record
that was purged, trimmed or requeued.

Times are milliseconds since the epoch; durations are milliseconds.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FACETS",
    "WRITE_NEW",
    "WRITE_REPLACED",
    "WRITE_SKIPPED",
    "DeadLetterCounts",
    "DeadLetterEntry",
    "DeadLetterOps",
    "ListChunk",
    "StoredDeadLetter",
    "TrimChunk",
]

#: The indexed fields of a record, in index order.
FACETS = ("actor", "queue", "error_type", "category")

#: ``dead_letters_write`` outcomes per entry.
WRITE_SKIPPED = 0
WRITE_NEW = 1
WRITE_REPLACED = 2


@dataclass(frozen=True)
class DeadLetterEntry:
    """A record to write: its id, encoded bytes, failure time (ms) and facets."""

    record_id: str
    payload: bytes
    failed_at: int
    actor: str
    queue: str
    error_type: str
    category: str

    def facets(self) -> tuple[str, str, str, str]:
        return (self.actor, self.queue, self.error_type, self.category)


@dataclass(frozen=True)
class StoredDeadLetter:
    """A stored record as the backend returns it.

    ``payload`` is ``None`` when it was not asked for, or when only the index
    entry survives.  ``status`` is ``"dead"``, ``"claimed"`` or
    ``"requeued"`` (``""`` when the index entry is missing).
    """

    record_id: str
    status: str
    failed_at: int
    actor: str = ""
    queue: str = ""
    error_type: str = ""
    category: str = ""
    payload: bytes | None = None


@dataclass(frozen=True)
class ListChunk:
    """One step of a listing: matching entries, and where the next step starts.

    ``cursor`` is ``(failed_at, record_id)`` of the last entry examined, or
    ``None`` when the listing is complete.  ``scanned`` counts the index
    entries examined (filters may have rejected some).
    """

    entries: list[StoredDeadLetter]
    cursor: tuple[int, str] | None
    scanned: int


@dataclass(frozen=True)
class TrimChunk:
    """What one retention step did.

    Attributes:
      released: stale claims put back to ``dead`` (their requeue died midway).
      by_age, by_count: the records removed for being older than the age
        limit, and beyond the count limit (oldest first).
      tombstones_expired: tombstones dropped.
      more: whether another step has work left.
    """

    released: int
    by_age: list[StoredDeadLetter]
    by_count: list[StoredDeadLetter]
    tombstones_expired: int
    more: bool


@dataclass(frozen=True)
class DeadLetterCounts:
    """Counts for ``stats``: dead records by facet, totals by status, time bounds.

    ``oldest`` and ``newest`` are the failure times of the oldest and newest
    dead records (``None`` when there are none); ``recent`` counts records of
    any status that failed at or after ``now - window``.
    """

    now: int
    dead: int
    claimed: int
    requeued: int
    total: int
    tombstones: int
    oldest: int | None
    newest: int | None
    recent: int
    by_facet: dict[str, dict[str, int]] = field(default_factory=dict)


class DeadLetterOps(abc.ABC):
    """The dead-letter store's atomic operations (see the module docstring)."""

    @abc.abstractmethod
    def dead_letters_write(self, entries: Sequence[DeadLetterEntry], *, replace: bool) -> list[int]:
        """Store ``entries`` as ``dead`` records; one outcome per entry.

        With ``replace`` an existing record of the same id is overwritten
        (``WRITE_REPLACED``) and a tombstone is ignored: the middleware
        capturing a new final failure.  Without it, an id that exists or has
        a tombstone is left alone (``WRITE_SKIPPED``): imports never
        duplicate a captured record nor revive a removed one (an unreadable
        record is then replaced with :meth:`dead_letters_repair`).
        """

    @abc.abstractmethod
    def dead_letters_get(self, record_ids: Sequence[str]) -> list[StoredDeadLetter | None]:
        """The stored records (with payloads) of ``record_ids``; ``None`` for unknown ids."""

    @abc.abstractmethod
    def dead_letters_list(
        self,
        *,
        status: str,
        facets: Mapping[str, Sequence[str]],
        since: int | None,
        until: int | None,
        descending: bool,
        limit: int,
        cursor: tuple[int, str] | None,
        with_payload: bool,
        budget: int,
    ) -> ListChunk:
        """Up to ``limit`` records in failure-time order (ties by id), after ``cursor``.

        ``status`` is ``"dead"``, ``"requeued"`` or ``"any"``.  ``facets``
        maps a facet name (:data:`FACETS`) to the values it may take (an
        empty list matches nothing).  ``since`` is inclusive, ``until``
        exclusive (ms).  At most ``budget`` index entries are examined; the
        chunk may then hold fewer than ``limit`` entries and a cursor.
        """

    @abc.abstractmethod
    def dead_letters_claim(self, record_ids: Sequence[str], token: str) -> list[StoredDeadLetter]:
        """Atomically move the ``dead`` records among ``record_ids`` to ``claimed`` by ``token``.

        Returns the claimed ones, with payloads, in the given order.  A
        record claimed by another token, requeued or unknown is not returned:
        of two concurrent requeues of one record, exactly one claims it.
        Records already claimed by ``token`` are returned again (with their
        first claim time), so a call whose reply was lost can be retried.
        """

    @abc.abstractmethod
    def dead_letters_release(self, record_ids: Sequence[str], token: str) -> int:
        """Put records claimed by ``token`` back to ``dead`` (their enqueue failed); return how many."""

    @abc.abstractmethod
    def dead_letters_finish(self, items: Sequence[tuple[str, bytes]], token: str) -> list[str]:
        """Mark records claimed by ``token`` ``requeued``, storing their updated payloads.

        Returns the ids finished by ``token``, by this call or an earlier one
        (idempotent: a call whose reply was lost can be retried, and the
        payload is written once); an id missing from the result lost its
        claim (released as stale, or removed) while it was being requeued.
        """

    @abc.abstractmethod
    def dead_letters_repair(self, items: Sequence[tuple[DeadLetterEntry, str]]) -> list[int]:
        """Replace unreadable records with readable copies; one outcome per item.

        Each item is a copy and the SHA-1 (hex) of the stored payload that the
        caller read and could not decode (``""`` if the payload was missing).
        The record is replaced (``WRITE_REPLACED``: new payload, failure time
        and facets, same status) only if its payload is still that one; else
        it is left alone (``WRITE_SKIPPED``): it was rewritten since (by a
        writer of readable records) or removed.
        """

    @abc.abstractmethod
    def dead_letters_delete(
        self, record_ids: Sequence[str], *, statuses: Sequence[str]
    ) -> list[StoredDeadLetter]:
        """Remove the records among ``record_ids`` whose status is in ``statuses``; leave tombstones.

        Claimed records are never removed here.  Returns the removed index
        entries (without payloads).
        """

    @abc.abstractmethod
    def dead_letters_trim(
        self,
        *,
        max_age: int,
        max_count: int,
        claim_timeout: int,
        tombstone_ttl: int,
        max_tombstones: int,
        limit: int,
    ) -> TrimChunk:
        """One retention step, doing at most ``limit`` removals of each kind.

        Releases claims older than ``claim_timeout`` ms; removes records that
        failed more than ``max_age`` ms ago, then the oldest records beyond
        ``max_count``; drops tombstones older than ``tombstone_ttl`` ms and
        the oldest beyond ``max_tombstones``.
        """

    @abc.abstractmethod
    def dead_letters_stats(self, *, window: int) -> DeadLetterCounts:
        """Counts by status and by facet (dead records), time bounds, failures in the last ``window`` ms."""
