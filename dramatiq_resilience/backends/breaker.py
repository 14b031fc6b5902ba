"""Breaker operations of a state backend: the atomic steps of a circuit breaker.

Policy (when to trip, how long to stay open) is given by the caller as a
:class:`~dramatiq_resilience.breakers.BreakerSettings`; each operation applies
it in one atomic step on the backend's clock, so every process agrees on the
state of a breaker.

State of one breaker, all keys hash-tagged by the breaker's name:

* ``state``: the state (``closed``, ``open``, ``half_open``, ``forced_open``,
  ``forced_closed``), its ``epoch`` (incremented by every transition), the
  moment it half-opens, the current cooldown, failed probe rounds, the
  consecutive-failure streak and the time of the last success;
* ``window``: bucketed counters of calls, failures and slow calls over the
  last ``window`` milliseconds (see :func:`window_geometry`);
* ``probes``: the probe permits of the current half-open round, each leased
  until a deadline, so that a dead prober cannot wedge the breaker;
* ``history``: the latest transitions, newest first.

Every transition is published on :meth:`BreakerOps.breaker_channel` so that
other processes drop what they cached.  A separate registry lists every
breaker name, so that operators can list breakers from the backend alone.
"""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..breakers import BreakerSettings

__all__ = [
    "CLOSED",
    "FORCED_CLOSED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "HISTORY_LENGTH",
    "OPEN",
    "STATES",
    "BreakerDecision",
    "BreakerNotices",
    "BreakerOps",
    "BreakerStatus",
    "BreakerSubscription",
    "BreakerTransition",
    "ppm",
    "window_geometry",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FORCED_OPEN = "forced_open"
FORCED_CLOSED = "forced_closed"

#: Every state a breaker can be in.
STATES = (CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, FORCED_CLOSED)

#: How many transitions each breaker's history keeps.
HISTORY_LENGTH = 50

#: How many buckets (at least) a failure-rate window is cut into.
WINDOW_BUCKETS = 60


def ppm(rate: float | None) -> int:
    """A rate in parts per million, 0 for ``None`` (integer comparisons keep Lua and Python equal)."""
    return 0 if rate is None else round(rate * 1_000_000)


def window_geometry(window_ms: int) -> tuple[int, int]:
    """The bucket width in milliseconds and the bucket count of a ``window_ms`` window.

    The width is ``max(1, window_ms // 60)`` and the count ``window_ms // width``
    (60 or a few more).  A call is counted in the bucket of the moment it is
    recorded; the window holds the current bucket and the ones before it, so a
    call leaves the window between ``window_ms - width`` and ``window_ms``
    milliseconds after it was recorded (resilience4j's time-based window with
    60 buckets: one second per bucket for the default 60 000 ms window).
    """
    width = max(1, window_ms // WINDOW_BUCKETS)
    return width, window_ms // width


@dataclass(frozen=True)
class BreakerTransition:
    """One change of a breaker's state.

    Attributes:
      breaker: the breaker's name.
      from_state, to_state: one of :data:`STATES`.
      reason: ``consecutive_failures``, ``failure_rate``, ``slow_call_rate``,
        ``cooldown_elapsed``, ``probe_failed``, ``probe_slow`` (a probe that
        succeeded but was slow, with slow calls counted), ``probes_succeeded``,
        ``forced_open``, ``forced_closed`` or ``reset``.
      cooldown_ms: how long the breaker stays open (0 unless it opened).
      failures, calls: what tripped it (failures or slow calls among calls),
        or, closing, how many probes succeeded.
      epoch: the breaker's epoch after the transition.
      at_ms: when it happened, in backend milliseconds.
      half_open_at_ms: when an opened breaker half-opens (0 otherwise).
      origin: who made it (a process token, or ``api:...`` for operators).
    """

    breaker: str
    from_state: str
    to_state: str
    reason: str
    cooldown_ms: int
    failures: int
    calls: int
    epoch: int
    at_ms: int
    half_open_at_ms: int = 0
    origin: str = ""

    @classmethod
    def from_json(cls, text: str | bytes) -> BreakerTransition:
        data = json.loads(text)
        return cls(
            breaker=str(data["breaker"]),
            from_state=str(data["from_state"]),
            to_state=str(data["to_state"]),
            reason=str(data["reason"]),
            cooldown_ms=int(data["cooldown_ms"]),
            failures=int(data["failures"]),
            calls=int(data["calls"]),
            epoch=int(data["epoch"]),
            at_ms=int(data["at_ms"]),
            half_open_at_ms=int(data.get("half_open_at_ms") or 0),
            origin=str(data.get("origin") or ""),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def fields(self) -> dict[str, Any]:
        """The fields of the ``breaker_transition`` event."""
        return asdict(self)


@dataclass(frozen=True)
class BreakerDecision:
    """What :meth:`BreakerOps.breaker_check` or :meth:`BreakerOps.breaker_record` answered.

    Attributes:
      state: the breaker's state after the operation.
      epoch: its epoch.
      now_ms: the backend's time of the operation.
      retry_after_ms: when not closed, how long a message should wait:
        until the half-open moment when open, the base cooldown when forced
        open or when half-open with every probe permit taken.
      probe: whether the caller got a probe permit (check only).
      created: whether the breaker's state did not exist before (so the
        caller should register the name again, e.g. after Redis lost it).
      consecutive: the current consecutive-failure streak.
      calls, failures, slow: the window's counts (record only; 0 for check).
      applied: whether the recorded outcomes were applied (record only): a
        batch from an older epoch, or a probe whose permit expired, is dropped.
      transition: the transition this operation made, if any.
    """

    state: str
    epoch: int
    now_ms: int
    retry_after_ms: int = 0
    probe: bool = False
    created: bool = False
    consecutive: int = 0
    calls: int = 0
    failures: int = 0
    slow: int = 0
    applied: bool = False
    transition: BreakerTransition | None = None

    @property
    def allowed(self) -> bool:
        """Whether a message may run now (closed, or half-open with a probe permit)."""
        return self.state in (CLOSED, FORCED_CLOSED) or self.probe


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker as an operator sees it.

    Attributes:
      name, state, epoch: as stored.
      now_ms: the backend's time of the reading.
      retry_after_ms: milliseconds until an open breaker half-opens (0 otherwise).
      half_open_at_ms: when it half-opens (0 unless open).
      cooldown_ms: the current cooldown (doubles with each failed probe round).
      rounds: failed probe rounds since it last closed.
      calls, failures, slow: the window's counts now.
      consecutive: the current consecutive-failure streak.
      probes_in_flight: probe permits held (half-open only).
      probe_successes: successful probes this half-open round.
      opened_at_ms, changed_at_ms: when it last opened and last changed.
      reason: the reason of the last transition.
      trip_failures, trip_calls: what tripped it last.
      exists: whether the backend holds any state for it.
      settings: the settings registered for it (if known).
      actors: the actors registered as using it (if known).
    """

    name: str
    state: str
    epoch: int
    now_ms: int
    retry_after_ms: int = 0
    half_open_at_ms: int = 0
    cooldown_ms: int = 0
    rounds: int = 0
    calls: int = 0
    failures: int = 0
    slow: int = 0
    consecutive: int = 0
    probes_in_flight: int = 0
    probe_successes: int = 0
    opened_at_ms: int = 0
    changed_at_ms: int = 0
    reason: str = ""
    trip_failures: int = 0
    trip_calls: int = 0
    exists: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    actors: list[str] = field(default_factory=list)

    @property
    def failure_rate(self) -> float | None:
        """Failures / calls in the window, or ``None`` without calls."""
        return None if self.calls == 0 else self.failures / self.calls

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failure_rate"] = self.failure_rate
        return data


@dataclass(frozen=True)
class BreakerNotices:
    """What one :meth:`BreakerSubscription.poll` received.

    Attributes:
      transitions: transitions published since the last poll, oldest first.
      resubscribed: the subscription was (re)established by this poll, so
        notices published while it was down may have been missed: callers
        drop everything they cached.
      malformed: notices that could not be read (skipped), each described
        with what was wrong; callers drop everything they cached, since one
        may have been a transition.
    """

    transitions: list[BreakerTransition]
    resubscribed: bool = False
    malformed: list[str] = field(default_factory=list)


class BreakerSubscription(abc.ABC):
    """Receives every breaker transition published on a backend."""

    @abc.abstractmethod
    def poll(self, timeout_ms: int) -> BreakerNotices:
        """Wait up to ``timeout_ms`` milliseconds for notices.

        Raises ``BackendUnavailable`` when the connection is lost; the next
        poll reconnects (and says so with ``resubscribed``).  A notice that
        cannot be read is skipped and reported in ``malformed``, never raised.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving notices and release the connection."""


class BreakerOps(abc.ABC):
    """The breaker operations every state backend implements.

    ``origin`` identifies the caller (one token per process) in the
    transitions it makes, so that a process can tell its own notices from
    others'.  Durations are milliseconds; times are backend milliseconds.
    """

    @abc.abstractmethod
    def breaker_check(
        self, name: str, *, settings: BreakerSettings, member: str, lease_ms: int, origin: str = ""
    ) -> BreakerDecision:
        """May a message run through breaker ``name`` now?

        An open breaker whose cooldown has elapsed becomes half-open here (the
        returned ``transition``).  In half-open, the caller gets a probe
        permit (``probe=True``) if fewer than ``settings.probes`` permits are
        held or used this round; a permit is leased for ``lease_ms`` and is
        identified by ``member`` (a message id: asking again with the same
        member renews the same permit).
        """

    @abc.abstractmethod
    def breaker_record(
        self,
        name: str,
        *,
        settings: BreakerSettings,
        epoch: int,
        calls: int = 0,
        failures: int = 0,
        slow: int = 0,
        last_success_ms: int = 0,
        probe: str | None = None,
        probe_outcome: str = "",
        origin: str = "",
    ) -> BreakerDecision:
        """Record outcomes of calls admitted in ``epoch``, and trip the breaker if the settings say so.

        Either a batch of closed-state outcomes (``calls`` of which
        ``failures`` failed and ``slow`` were slow; ``last_success_ms`` the
        backend time of the batch's latest success, or 0), applied only if the
        breaker is still closed in ``epoch``; or the outcome of one probe
        (``probe`` = its member, ``probe_outcome`` one of ``success``,
        ``failure``, ``release``; ``slow`` > 0 if it was slow), applied only
        if its permit is still held.  When the settings count slow calls
        (``slow_call_ms`` set), a slow successful probe fails the round like a
        failed one (reason ``probe_slow``), as resilience4j's half-open state
        judges the slow-call rate too.  Failures are stamped with the
        backend's time; a success resets the consecutive streak of failures
        stamped before it.
        """

    @abc.abstractmethod
    def breaker_force(
        self, name: str, action: str, *, settings: BreakerSettings, origin: str = ""
    ) -> BreakerTransition:
        """Force breaker ``name`` ``"open"`` or ``"closed"``, or ``"reset"`` it to closed with empty counts.

        Forced states stay until another ``breaker_force``.  Always returns
        the transition made (also when the state does not change, so that
        every process drops its cache).
        """

    @abc.abstractmethod
    def breaker_status(self, name: str, *, settings: BreakerSettings) -> BreakerStatus:
        """Read breaker ``name`` (counts over ``settings.window``) without changing it."""

    @abc.abstractmethod
    def breaker_history(self, name: str, *, limit: int = HISTORY_LENGTH) -> list[BreakerTransition]:
        """The latest ``limit`` transitions of breaker ``name``, newest first."""

    @abc.abstractmethod
    def breaker_register(self, name: str, info: dict[str, Any]) -> None:
        """Add (or update) ``name`` in the registry of breakers, with ``info`` (settings, actors)."""

    @abc.abstractmethod
    def breaker_names(self) -> dict[str, dict[str, Any]]:
        """Every registered breaker name with its info."""

    @abc.abstractmethod
    def breaker_forget(self, name: str) -> bool:
        """Delete breaker ``name``'s state and registry entry; return whether it was known."""

    @abc.abstractmethod
    def breaker_subscribe(self) -> BreakerSubscription:
        """A subscription to every breaker transition (nothing connects until the first poll)."""

    def breaker_channel(self) -> str:
        """The pub/sub channel transitions are published on."""
        namespace: str = getattr(self, "namespace", "")
        return f"{namespace}:breaker:notices"
