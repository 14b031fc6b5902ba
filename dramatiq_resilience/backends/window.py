"""Window operations: sliding-window rate limits and concurrency leases.

The algorithm, shared by both backends (one contract suite runs them):

**Rate windows are bucketed.**  A limit of ``count`` per ``per`` ms keeps, for
each key, the number of starts in each bucket of ``width`` ms, where
``width = ceil(per / WINDOW_BUCKETS)`` (1 ms when ``per <= 100``).  A message
may start at ``now`` when the buckets overlapping the window ``(now - per,
now]`` hold fewer than ``count`` starts, the oldest partially covered bucket
counted whole.  So no window of ``per`` ms ever holds more than ``count``
starts (conservative), memory is bounded by ``WINDOW_BUCKETS + 1`` counters
per key whatever ``count`` is (the buckets from ``floor((now - per + 1) /
width)`` to ``floor(now / width)``), and a slot frees at most ``width - 1`` ms
after an exact log would free it (1% of the window).  A start at ``now`` is
counted until ``now``'s bucket leaves the window, at ``(bucket + 1) * width +
per - 1``.

**A window's layout is part of its identity.**  A window is stored per
limit, key *and* ``per`` (which sets the bucket width): processes that
disagree on a limit's ``per`` (a rolling deploy) keep separate windows, and
each still enforces its own definition, so together they admit at most the
sum of their counts, never an unbounded number.  Processes that disagree on
``count`` only share the window, each admitting while it holds fewer than its
own count: at most the larger count.  Each process announces its definitions
(:meth:`WindowOps.window_announce`) so that a disagreement is seen and logged.

**Refused messages queue on a grid.**  When a window is full, the refusal
returns the moment a slot frees, but only for the first waiter: each key
keeps a horizon ``q``, and the n-th waiter gets ``max(q, slot_free)`` while
``q`` moves on by ``per / count`` ms.  Waiters so come back spread at the
limit's own rate instead of all at once when the window turns, and most are
deferred once.  The horizon is advisory: admission only ever looks at the
window, so it cannot break the limit.

**Concurrency leases** live in a sorted set (token by expiry).  A refusal
returns ``min(earliest lease expiry, now + typical hold time)`` on the same
kind of grid, the hold time being a moving average of the hold times
reported by releases.

All limits of one message are checked and taken by one atomic step, all or
nothing: a refused message takes no budget anywhere.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_HOLD_ESTIMATE",
    "WINDOW_BUCKETS",
    "HeldLease",
    "LeaseSpec",
    "LimitDefinition",
    "RateSpec",
    "WindowDecision",
    "WindowOps",
    "WindowUsage",
    "bucket_width",
]

#: How many buckets a rate window is cut into: the precision (a slot frees at
#: most ``per / WINDOW_BUCKETS`` ms late) and the memory bound per key.
WINDOW_BUCKETS = 100

#: Milliseconds a concurrency refusal waits for a slot before any release has
#: told how long messages hold one.
DEFAULT_HOLD_ESTIMATE = 1_000

#: The group (Redis Cluster hash tag) of every key the limiter writes: one
#: script may touch any of them, which all-or-nothing acquisition needs.
WINDOW_GROUP = "limits"


def bucket_width(per_ms: int) -> int:
    """The bucket width in milliseconds of a window of ``per_ms``."""
    return max(1, math.ceil(per_ms / WINDOW_BUCKETS))


def escape_id(text: str) -> str:
    """A limit id or key safe to embed in a ``:``-separated storage key."""
    return text.replace("%", "%25").replace(":", "%3A")


def unescape_id(text: str) -> str:
    return text.replace("%3A", ":").replace("%25", "%")


@dataclass(frozen=True)
class RateSpec:
    """One rate limit to take for a message: ``count`` starts per ``per_ms`` for ``key``."""

    limit: str
    key: str
    count: int
    per_ms: int


@dataclass(frozen=True)
class LeaseSpec:
    """One concurrency slot to take: at most ``n`` leases of ``lease_ms`` for ``key``."""

    limit: str
    key: str
    n: int
    lease_ms: int


@dataclass(frozen=True)
class HeldLease:
    """A lease held by ``token`` (a message id), for renewal and release."""

    token: str
    spec: LeaseSpec


@dataclass(frozen=True)
class LimitDefinition:
    """How this process defines one limit, announced to the others (see :meth:`WindowOps.window_announce`).

    Attributes:
      kind: ``"rate"`` or ``"concurrency"``.
      limit: the limit's id (its name, or ``<actor>.rate_limits[i]``).
      text: the definition, e.g. ``"100 per 60000 ms"`` or ``"2 at once (lease 30000 ms)"``.
    """

    kind: str
    limit: str
    text: str


@dataclass(frozen=True)
class WindowDecision:
    """The outcome of :meth:`WindowOps.window_acquire`.

    Attributes:
      granted: every limit was taken.
      now_ms: the backend time of the decision, in milliseconds.
      retry_at_ms: when refused, the moment (backend time, ms) the message
        should come back; ``None`` when granted.
      blocked_by: when refused, the index of the limit that set
        ``retry_at_ms`` (rates first, then leases, in the order given).
      spacing_ms: when refused, the grid spacing of that limit in ms (how far
        apart its waiters are sent back): a natural jitter window.
    """

    granted: bool
    now_ms: int
    retry_at_ms: int | None = None
    blocked_by: int | None = None
    spacing_ms: int = 0


@dataclass(frozen=True)
class WindowUsage:
    """What one limit's key is using right now (see :meth:`WindowOps.window_inspect`).

    Attributes:
      kind: ``"rate"`` or ``"concurrency"``.
      limit: the limit's name (or ``<actor>.rate_limits[i]`` when unnamed).
      key: the key (``""`` for a limit without a key function).
      used: starts in the current window, or leases held.
      capacity: the limit's ``count`` (or ``n``).
      window_ms: ``per`` (rate) or the lease (concurrency), in ms.
      next_free_ms: when full, the moment a slot frees (ms); else ``None``.
      resets_at_ms: the moment everything used now is released (ms).
      waiting_until_ms: the horizon of deferred waiters, if in the future.
      now_ms: the backend time of the reading.
    """

    kind: str
    limit: str
    key: str
    used: int
    capacity: int
    window_ms: int
    next_free_ms: int | None
    resets_at_ms: int | None
    waiting_until_ms: int | None
    now_ms: int


class WindowOps(abc.ABC):
    """Atomic steps of :class:`~dramatiq_resilience.SlidingWindowLimiter`.

    Every duration is in milliseconds, every time is backend time in
    milliseconds since the epoch.
    """

    @abc.abstractmethod
    def window_acquire(
        self, token: str, rates: Sequence[RateSpec], leases: Sequence[LeaseSpec] = ()
    ) -> WindowDecision:
        """Take one start in every rate window and one slot of every lease pool, or nothing.

        ``token`` (the message id) names the leases.  A token that already
        holds a lease of a pool (a redelivered message) keeps it and takes
        no second slot.  When refused, nothing is taken; only the refusing
        limit's waiter horizon moves.
        """

    @abc.abstractmethod
    def window_release(self, token: str, leases: Sequence[LeaseSpec], held_ms: int | None = None) -> int:
        """Release ``token``'s leases; return how many it still held.

        ``held_ms`` (how long the message held them) feeds the hold-time
        average that spaces out waiters.
        """

    @abc.abstractmethod
    def window_renew(self, held: Sequence[HeldLease]) -> list[bool]:
        """Extend each held lease to ``now + lease_ms``; ``False`` for a lease no longer held."""

    @abc.abstractmethod
    def window_announce(self, definitions: Sequence[LimitDefinition], ttl_ms: int) -> list[list[str]]:
        """Record that a process uses each of ``definitions``, for ``ttl_ms``; say who disagrees.

        Returns, per definition, the texts of the other definitions of the
        same kind and limit that some process announced and whose ``ttl_ms``
        has not run out, sorted (``[]`` when every process agrees).
        """

    @abc.abstractmethod
    def window_inspect(self, limit: str | None = None, key: str | None = None) -> list[WindowUsage]:
        """Current use of every limit key with state (filtered by limit name and key), sorted.

        One row per window: a limit whose processes disagree on ``per`` has one per definition.
        """
