"""Health state: message outcomes counted cluster-wide in time buckets, worker liveness, the last report.

The health score needs inputs that every worker process contributes and that
a separate process (``dramatiq-resilience health``, ``serve``) reads.  Each
worker process counts outcomes in memory and sends them once per flush
interval, with a heartbeat, in one script (:meth:`HealthOps.health_record`):
no round trip per message.

* Counts live in one hash (``health:{health}:counts``) whose fields are
  ``<bucket start>\\x1f<queue>\\x1f<actor>\\x1f<kind>``, indexed by bucket
  start in a sorted set (``health:{health}:fields``), so that old buckets are
  deleted by score and a window is read with one range query.  A count lands
  in the bucket of the moment it is *sent* (at most one flush interval late).
* Worker processes are a sorted set (``health:{health}:processes``, process
  id scored by the time it was last seen) next to their info (a hash of JSON).
* The latest report of the health scan is a hash (``health:{health}:snapshot``:
  ``at``, ``status``, ``payload``), expiring by itself.

Every key shares the hash tag ``{health}``.  Every time is in milliseconds,
on the backend's clock.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HEALTH_KINDS",
    "HealthCounts",
    "HealthOps",
    "HealthSnapshot",
    "ProcessSeen",
    "field_name",
    "parse_field",
]

#: What a worker counts per queue and actor: successes, failed attempts that
#: count against health, failed attempts with an expected exception (the
#: actor's ``throws``), and messages that ended dead-lettered.
HEALTH_KINDS = ("success", "failure", "expected", "dead_lettered")

#: Separates the parts of a count's field name (it cannot occur in queue or actor names).
SEPARATOR = "\x1f"


def field_name(queue_name: str, actor_name: str, kind: str) -> str:
    """The field suffix of one count: ``queue \\x1f actor \\x1f kind``."""
    return SEPARATOR.join((queue_name, actor_name, kind))


def parse_field(name: str) -> tuple[int, str, str, str]:
    """``(bucket, queue, actor, kind)`` of a stored field name."""
    bucket, queue_name, actor_name, kind = name.split(SEPARATOR, 3)
    return int(bucket), queue_name, actor_name, kind


@dataclass(frozen=True)
class ProcessSeen:
    """A worker process that reported: its id, when it was last seen (ms), and what it said of itself."""

    process: str
    last_seen_ms: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        """Whether it said it shut down cleanly."""
        return bool(self.info.get("stopped"))


@dataclass(frozen=True)
class HealthCounts:
    """What :meth:`HealthOps.health_read` returns.

    Attributes:
      now_ms: the backend's time of the reading.
      counts: ``{(queue, actor): {kind: count}}`` over the window.
      processes: every process seen within ``forget_after_ms``, by id.
    """

    now_ms: int
    counts: dict[tuple[str, str], dict[str, int]]
    processes: tuple[ProcessSeen, ...] = ()


@dataclass(frozen=True)
class HealthSnapshot:
    """The latest published health report: when, its overall status, and its payload (JSON bytes)."""

    at_ms: int
    status: str
    payload: bytes

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload)
        return data


def sum_counts(rows: Sequence[tuple[str, int]]) -> dict[tuple[str, str], dict[str, int]]:
    """Add up ``(field name, count)`` rows into ``{(queue, actor): {kind: count}}``."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for name, value in rows:
        _, queue_name, actor_name, kind = parse_field(name)
        per_kind = counts.setdefault((queue_name, actor_name), {})
        per_kind[kind] = per_kind.get(kind, 0) + int(value)
    return counts


def decode_info(value: Any) -> dict[str, Any]:
    """A process's info as stored (JSON), or ``{}`` if missing or unreadable."""
    if value in (None, b"", ""):
        return {}
    try:
        info = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class HealthOps(abc.ABC):
    """Atomic operations of health scoring.  See the module docstring for the model."""

    @abc.abstractmethod
    def health_record(
        self,
        process: str,
        counts: Mapping[str, int],
        *,
        bucket_ms: int,
        retention_ms: int,
        forget_after_ms: int,
        info: Mapping[str, Any] | None = None,
    ) -> int:
        """Add a process's counts to the current bucket and mark the process seen now.

        ``counts`` maps :func:`field_name` results to positive increments.
        Buckets start at multiples of ``bucket_ms``; buckets older than
        ``retention_ms`` and processes unseen for ``forget_after_ms`` are
        deleted.  ``info`` (JSON-serializable) replaces what the process said
        of itself.  Returns the backend's time.
        """

    @abc.abstractmethod
    def health_read(self, *, window_ms: int, bucket_ms: int, forget_after_ms: int) -> HealthCounts:
        """Counts of the buckets overlapping the last ``window_ms``, and the processes seen.

        A bucket counts when it starts after ``now - window_ms - bucket_ms``:
        the window reaches back between ``window_ms`` and ``window_ms +
        bucket_ms``.
        """

    @abc.abstractmethod
    def health_publish(self, payload: bytes, *, status: str, ttl_ms: int) -> str | None:
        """Replace the published report (kept ``ttl_ms``); return the previous one's status, if any."""

    @abc.abstractmethod
    def health_snapshot(self) -> HealthSnapshot | None:
        """The published report, or ``None`` (never published, or expired)."""
