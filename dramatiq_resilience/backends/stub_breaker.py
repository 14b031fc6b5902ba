"""Breaker operations of the in-memory backend: the Lua scripts' logic, in Python.

Each operation runs inside ``self.atomic()``, so it is one atomic step like
its script (``backends/lua/breaker_*.lua``); the contract suite
(``tests/contract/test_breaker.py``) holds both to the same results.
"""

from __future__ import annotations

import queue
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable
from .breaker import (
    CLOSED,
    FORCED_CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    HISTORY_LENGTH,
    OPEN,
    BreakerDecision,
    BreakerNotices,
    BreakerOps,
    BreakerStatus,
    BreakerSubscription,
    BreakerTransition,
    ppm,
    window_geometry,
)
from .stub_base import StubBase

if TYPE_CHECKING:
    from ..breakers import BreakerSettings

__all__ = ["StubBreakerOps"]

#: How many failures a streak keeps when the consecutive rule is off.
STREAK_CAP = 100


class _StubSubscription(BreakerSubscription):
    def __init__(self, backend: StubBreakerOps) -> None:
        self.backend = backend
        self.queue: queue.SimpleQueue[BreakerTransition] = queue.SimpleQueue()
        self.subscribed = False

    def poll(self, timeout_ms: int) -> BreakerNotices:
        if self.backend.unavailable:
            self.subscribed = False
            raise BackendUnavailable("StubBackend is marked unavailable")
        resubscribed = not self.subscribed
        self.subscribed = True
        transitions = []
        try:
            transitions.append(self.queue.get(timeout=max(0, timeout_ms) / 1000))
            while True:
                transitions.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return BreakerNotices(transitions, resubscribed=resubscribed)

    def close(self) -> None:
        self.backend._unsubscribe(self)


@dataclass
class _Step:
    """One atomic step on one breaker: its time, its record, and the notices to publish afterwards."""

    name: str
    now: int
    record: dict[str, Any]
    created: bool
    origin: str
    notices: list[BreakerTransition] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.record["state"]
        return state


def _fresh(now: int, settings: BreakerSettings) -> dict[str, Any]:
    return {
        "state": CLOSED,
        "epoch": 0,
        "half_open_at": 0,
        "cooldown": settings.cooldown,
        "rounds": 0,
        "opened_at": 0,
        "changed_at": now,
        "reason": "created",
        "trip_failures": 0,
        "trip_calls": 0,
        "probe_successes": 0,
        "streak": [],
        "last_success": 0,
    }


class StubBreakerOps(StubBase, BreakerOps):
    """The breaker operations on :attr:`StubBase.data` ``["breaker"]``."""

    # -- plumbing -------------------------------------------------------------------

    def _breaker(self, name: str, now: int, settings: BreakerSettings) -> tuple[dict[str, Any], bool]:
        breakers = self.data.setdefault("breaker", {})
        record = breakers.get(name)
        if record is None:
            record = breakers[name] = {
                "state": _fresh(now, settings),
                "window": None,
                "probes": {},
                "history": [],
            }
            return record, True
        return record, False

    @contextmanager
    def _step(self, name: str, settings: BreakerSettings, origin: str) -> Iterator[_Step]:
        """Hold the lock for one step on breaker ``name``; publish its transitions after releasing it."""
        with self.atomic() as now:
            record, created = self._breaker(name, now, settings)
            step = _Step(name, now, record, created, origin)
            yield step
        for notice in step.notices:
            self._publish(notice)

    def _subscriptions(self) -> list[weakref.ref[_StubSubscription]]:
        with self.lock:
            subs: list[weakref.ref[_StubSubscription]] = vars(self).setdefault("_breaker_subs", [])
            return subs

    def _unsubscribe(self, subscription: _StubSubscription) -> None:
        with self.lock:
            subs = self._subscriptions()
            subs[:] = [ref for ref in subs if ref() not in (None, subscription)]

    def _publish(self, transition: BreakerTransition) -> None:
        for ref in list(self._subscriptions()):
            subscription = ref()
            if subscription is not None:
                subscription.queue.put(transition)

    # -- the window ---------------------------------------------------------------------

    @staticmethod
    def _window(record: dict[str, Any], now: int, settings: BreakerSettings, write: bool) -> dict[str, Any]:
        """The window's totals at ``now``; with ``write``, drop the buckets that left it."""
        width, count = window_geometry(settings.window)
        index = now // width
        window = record["window"]
        if window is None or window["w"] != width or index - window["head"] >= count:
            fresh = {"w": width, "head": index, "calls": 0, "failures": 0, "slow": 0, "buckets": {}}
            if write:
                record["window"] = fresh
            return fresh
        totals = dict(window)
        if index > window["head"]:
            leaving = [
                i for i in range(window["head"] - count + 1, index - count + 1) if i in window["buckets"]
            ]
            for i in leaving:
                calls, failures, slow = window["buckets"][i]
                totals["calls"] -= calls
                totals["failures"] -= failures
                totals["slow"] -= slow
            totals["head"] = index
            if write:
                totals["buckets"] = {i: v for i, v in window["buckets"].items() if i not in leaving}
                record["window"] = totals
        return totals

    # -- transitions ----------------------------------------------------------------

    def _transition(
        self, step: _Step, to: str, reason: str, *, failures: int = 0, calls: int = 0
    ) -> BreakerTransition:
        record, now = step.record, step.now
        state = record["state"]
        previous = state["state"]
        state.update(state=to, epoch=state["epoch"] + 1, changed_at=now, reason=reason)
        state.update(probe_successes=0, streak=[])
        record["probes"] = {}
        record["window"] = None
        cooldown = 0
        if to == OPEN:
            cooldown = state["cooldown"]
            state.update(opened_at=now, half_open_at=now + cooldown, trip_failures=failures, trip_calls=calls)
        transition = BreakerTransition(
            breaker=step.name,
            from_state=previous,
            to_state=to,
            reason=reason,
            cooldown_ms=cooldown,
            failures=failures,
            calls=calls,
            epoch=state["epoch"],
            at_ms=now,
            half_open_at_ms=state["half_open_at"] if to == OPEN else 0,
            origin=step.origin,
        )
        record["history"].insert(0, transition)
        del record["history"][HISTORY_LENGTH:]
        step.notices.append(transition)
        return transition

    @staticmethod
    def _retry_after(state: dict[str, Any], now: int, settings: BreakerSettings) -> int:
        if state["state"] == OPEN:
            return max(0, int(state["half_open_at"] - now))
        if state["state"] in (FORCED_OPEN, HALF_OPEN):
            return settings.cooldown
        return 0

    # -- operations -----------------------------------------------------------------

    def breaker_check(
        self, name: str, *, settings: BreakerSettings, member: str, lease_ms: int, origin: str = ""
    ) -> BreakerDecision:
        with self._step(name, settings, origin) as step:
            state, now = step.state, step.now
            transition = None
            if state["state"] == OPEN and now >= state["half_open_at"]:
                transition = self._transition(step, HALF_OPEN, "cooldown_elapsed")
            probe = False
            if state["state"] == HALF_OPEN:
                permits = step.record["probes"]
                for held in [m for m, expiry in permits.items() if expiry <= now]:
                    del permits[held]
                if member in permits or len(permits) + state["probe_successes"] < settings.probes:
                    permits[member] = now + lease_ms
                    probe = True
            return BreakerDecision(
                state=state["state"],
                epoch=state["epoch"],
                now_ms=now,
                retry_after_ms=0 if probe else self._retry_after(state, now, settings),
                probe=probe,
                created=step.created,
                consecutive=len(state["streak"]),
                transition=transition,
            )

    def _settle_probe(
        self, step: _Step, settings: BreakerSettings, probe: str, outcome: str, slow: bool
    ) -> BreakerTransition | None:
        """A probe's outcome, if its permit is still held (see breaker_record.lua)."""
        state = step.state
        if state["state"] != HALF_OPEN or step.record["probes"].pop(probe, None) is None:
            return None
        reason = "probe_failed"
        if outcome == "success" and slow and _counts_slow(settings):
            outcome, reason = "failure", "probe_slow"
        if outcome == "success":
            state["probe_successes"] += 1
            if state["probe_successes"] >= settings.required_successes:
                state.update(rounds=0, cooldown=settings.cooldown)
                return self._transition(step, CLOSED, "probes_succeeded", calls=state["probe_successes"])
        elif outcome == "failure":
            rounds = state["rounds"] + 1
            state.update(rounds=rounds, cooldown=min(settings.cooldown * 2**rounds, settings.cooldown_max))
            return self._transition(step, OPEN, reason, failures=1, calls=state["probe_successes"] + 1)
        return None

    def _count(
        self,
        step: _Step,
        settings: BreakerSettings,
        *,
        calls: int,
        failures: int,
        slow: int,
        last_success_ms: int,
    ) -> tuple[dict[str, Any], BreakerTransition | None]:
        """Add a batch to the window and the streak; trip a closed breaker (see breaker_record.lua)."""
        state, now = step.state, step.now
        self._window(step.record, now, settings, write=True)
        window = step.record["window"]
        bucket = window["buckets"].setdefault(window["head"], [0, 0, 0])
        for index, (key, value) in enumerate((("calls", calls), ("failures", failures), ("slow", slow))):
            bucket[index] += value
            window[key] += value
        # The streak: failures stamped after the latest success.
        last = min(last_success_ms, now)
        if last > state["last_success"]:
            state["last_success"] = last
            state["streak"] = [t for t in state["streak"] if t > last]
        state["streak"].extend([now] * failures)
        del state["streak"][: -(settings.consecutive_failures or STREAK_CAP)]
        if state["state"] != CLOSED:
            return window, None
        reason, tripped_failures, tripped_calls = _trip_reason(settings, len(state["streak"]), window)
        if not reason:
            return window, None
        state.update(rounds=0, cooldown=settings.cooldown)
        return window, self._transition(step, OPEN, reason, failures=tripped_failures, calls=tripped_calls)

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
        with self._step(name, settings, origin) as step:
            state = step.state
            totals: dict[str, Any] = {"calls": 0, "failures": 0, "slow": 0}
            transition = None
            applied = False
            if probe:
                applied = state["state"] == HALF_OPEN and probe in step.record["probes"]
                transition = self._settle_probe(step, settings, probe, probe_outcome, slow > 0)
            elif state["state"] in (CLOSED, FORCED_CLOSED) and state["epoch"] == epoch:
                applied = True
                totals, transition = self._count(
                    step, settings, calls=calls, failures=failures, slow=slow, last_success_ms=last_success_ms
                )
            return BreakerDecision(
                state=state["state"],
                epoch=state["epoch"],
                now_ms=step.now,
                retry_after_ms=self._retry_after(state, step.now, settings),
                created=step.created,
                consecutive=len(state["streak"]),
                calls=0 if transition else totals["calls"],
                failures=0 if transition else totals["failures"],
                slow=0 if transition else totals["slow"],
                applied=applied,
                transition=transition,
            )

    def breaker_force(
        self, name: str, action: str, *, settings: BreakerSettings, origin: str = ""
    ) -> BreakerTransition:
        targets = {"open": (FORCED_OPEN, "forced_open"), "closed": (FORCED_CLOSED, "forced_closed")}
        targets["reset"] = (CLOSED, "reset")
        if action not in targets:
            raise ValueError(f"action must be 'open', 'closed' or 'reset', got {action!r}")
        to, reason = targets[action]
        with self._step(name, settings, origin) as step:
            if action == "reset":
                step.state.update(rounds=0, cooldown=settings.cooldown, last_success=0)
            return self._transition(step, to, reason)

    def breaker_status(self, name: str, *, settings: BreakerSettings) -> BreakerStatus:
        with self.atomic() as now:
            record = self.data.get("breaker", {}).get(name)
            if record is None:
                return BreakerStatus(name=name, state=CLOSED, epoch=0, now_ms=now, exists=False)
            state = record["state"]
            totals = self._window(record, now, settings, write=False)
            opened = state["state"] == OPEN
            return BreakerStatus(
                name=name,
                state=state["state"],
                epoch=state["epoch"],
                now_ms=now,
                retry_after_ms=max(0, state["half_open_at"] - now) if opened else 0,
                half_open_at_ms=state["half_open_at"] if opened else 0,
                cooldown_ms=state["cooldown"],
                rounds=state["rounds"],
                calls=totals["calls"],
                failures=totals["failures"],
                slow=totals["slow"],
                consecutive=len(state["streak"]),
                probes_in_flight=sum(1 for expiry in record["probes"].values() if expiry > now),
                probe_successes=state["probe_successes"],
                opened_at_ms=state["opened_at"],
                changed_at_ms=state["changed_at"],
                reason=state["reason"],
                trip_failures=state["trip_failures"],
                trip_calls=state["trip_calls"],
            )

    def breaker_history(self, name: str, *, limit: int = HISTORY_LENGTH) -> list[BreakerTransition]:
        with self.atomic():
            record = self.data.get("breaker", {}).get(name)
            return [] if record is None else list(record["history"][:limit])

    def breaker_register(self, name: str, info: dict[str, Any]) -> None:
        with self.atomic():
            self.data.setdefault("breaker_registry", {})[name] = dict(info)

    def breaker_names(self) -> dict[str, dict[str, Any]]:
        with self.atomic():
            return {name: dict(info) for name, info in self.data.get("breaker_registry", {}).items()}

    def breaker_forget(self, name: str) -> bool:
        with self.atomic():
            known = self.data.get("breaker_registry", {}).pop(name, None) is not None
            existed = self.data.get("breaker", {}).pop(name, None) is not None
            return known or existed

    def breaker_subscribe(self) -> BreakerSubscription:
        subscription = _StubSubscription(self)
        with self.lock:
            self._subscriptions().append(weakref.ref(subscription))
        return subscription


def _counts_slow(settings: BreakerSettings) -> bool:
    """Whether slow calls count (``slow_call_ms`` and a rate set), as ARGV[9] > 0 tells the scripts."""
    return settings.slow_call_ms is not None and ppm(settings.slow_call_rate) > 0


def _trip_reason(settings: BreakerSettings, streak: int, window: dict[str, Any]) -> tuple[str, int, int]:
    """Why a closed breaker opens now ("" if it does not), with the failures and calls that tripped it.

    Rates compare in parts per million, as the Lua script does, so that a
    rate of 0.3 trips on 3 failures in 10 calls despite floating point.
    """
    if settings.consecutive_failures is not None and streak >= settings.consecutive_failures:
        return "consecutive_failures", streak, streak
    calls = window["calls"]
    if calls > 0 and calls >= settings.min_calls:
        if (
            settings.failure_rate is not None
            and window["failures"] * 1_000_000 >= ppm(settings.failure_rate) * calls
        ):
            return "failure_rate", window["failures"], calls
        if (
            settings.slow_call_rate is not None
            and window["slow"] * 1_000_000 >= ppm(settings.slow_call_rate) * calls
        ):
            return "slow_call_rate", window["slow"], calls
    return "", 0, 0
