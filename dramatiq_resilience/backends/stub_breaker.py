"""Breaker operations of the in-memory backend: the Lua scripts' logic, in Python.

Each operation runs inside ``self.atomic()``, so it is one atomic step like
its script (``backends/lua/breaker_*.lua``); the contract suite
(``tests/contract/test_breaker.py``) holds both to the same results.
"""

from __future__ import annotations

import queue
import weakref
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
        self,
        name: str,
        record: dict[str, Any],
        to: str,
        reason: str,
        now: int,
        *,
        failures: int = 0,
        calls: int = 0,
        origin: str,
        notices: list[BreakerTransition],
    ) -> BreakerTransition:
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
            breaker=name,
            from_state=previous,
            to_state=to,
            reason=reason,
            cooldown_ms=cooldown,
            failures=failures,
            calls=calls,
            epoch=state["epoch"],
            at_ms=now,
            half_open_at_ms=state["half_open_at"] if to == OPEN else 0,
            origin=origin,
        )
        record["history"].insert(0, transition)
        del record["history"][HISTORY_LENGTH:]
        notices.append(transition)
        return transition

    @staticmethod
    def _retry_after(state: dict[str, Any], now: int, settings: BreakerSettings) -> int:
        if state["state"] == OPEN:
            return int(state["half_open_at"] - now)
        if state["state"] in (FORCED_OPEN, HALF_OPEN):
            return settings.cooldown
        return 0

    # -- operations -----------------------------------------------------------------

    def breaker_check(
        self, name: str, *, settings: BreakerSettings, member: str, lease_ms: int, origin: str = ""
    ) -> BreakerDecision:
        notices: list[BreakerTransition] = []
        with self.atomic() as now:
            record, created = self._breaker(name, now, settings)
            state = record["state"]
            transition = None
            if state["state"] == OPEN and now >= state["half_open_at"]:
                transition = self._transition(
                    name, record, HALF_OPEN, "cooldown_elapsed", now, origin=origin, notices=notices
                )
            probe = False
            if state["state"] == HALF_OPEN:
                permits = record["probes"]
                for held in [m for m, expiry in permits.items() if expiry <= now]:
                    del permits[held]
                if member in permits or len(permits) + state["probe_successes"] < settings.probes:
                    permits[member] = now + lease_ms
                    probe = True
            decision = BreakerDecision(
                state=state["state"],
                epoch=state["epoch"],
                now_ms=now,
                retry_after_ms=0 if probe else self._retry_after(state, now, settings),
                probe=probe,
                created=created,
                consecutive=len(state["streak"]),
                transition=transition,
            )
        for notice in notices:
            self._publish(notice)
        return decision

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
        notices: list[BreakerTransition] = []
        with self.atomic() as now:
            record, created = self._breaker(name, now, settings)
            state = record["state"]
            transition = None
            applied = False
            totals = {"calls": 0, "failures": 0, "slow": 0}
            if probe:
                if state["state"] == HALF_OPEN and record["probes"].pop(probe, None) is not None:
                    applied = True
                    if probe_outcome == "success":
                        state["probe_successes"] += 1
                        if state["probe_successes"] >= settings.required_successes:
                            successes = state["probe_successes"]
                            state.update(rounds=0, cooldown=settings.cooldown)
                            transition = self._transition(
                                name,
                                record,
                                CLOSED,
                                "probes_succeeded",
                                now,
                                calls=successes,
                                origin=origin,
                                notices=notices,
                            )
                    elif probe_outcome == "failure":
                        rounds = state["rounds"] + 1
                        cooldown = min(settings.cooldown * 2**rounds, settings.cooldown_max)
                        state.update(rounds=rounds, cooldown=cooldown)
                        transition = self._transition(
                            name,
                            record,
                            OPEN,
                            "probe_failed",
                            now,
                            failures=1,
                            calls=state["probe_successes"] + 1,
                            origin=origin,
                            notices=notices,
                        )
            elif state["state"] in (CLOSED, FORCED_CLOSED) and state["epoch"] == epoch:
                applied = True
                totals = self._window(record, now, settings, write=True)
                window = record["window"]
                bucket = window["buckets"].setdefault(window["head"], [0, 0, 0])
                bucket[0] += calls
                bucket[1] += failures
                bucket[2] += slow
                window["calls"] += calls
                window["failures"] += failures
                window["slow"] += slow
                totals = window
                # The streak: failures stamped after the latest success.
                last = min(last_success_ms, now)
                if last > state["last_success"]:
                    state["last_success"] = last
                    state["streak"] = [t for t in state["streak"] if t > last]
                state["streak"].extend([now] * failures)
                cap = settings.consecutive_failures or STREAK_CAP
                del state["streak"][:-cap]
                if state["state"] == CLOSED:
                    reason, tripped_failures, tripped_calls = _trip_reason(
                        settings, len(state["streak"]), window
                    )
                    if reason:
                        state.update(rounds=0, cooldown=settings.cooldown)
                        transition = self._transition(
                            name,
                            record,
                            OPEN,
                            reason,
                            now,
                            failures=tripped_failures,
                            calls=tripped_calls,
                            origin=origin,
                            notices=notices,
                        )
            decision = BreakerDecision(
                state=state["state"],
                epoch=state["epoch"],
                now_ms=now,
                retry_after_ms=self._retry_after(state, now, settings),
                created=created,
                consecutive=len(state["streak"]),
                calls=0 if transition else totals["calls"],
                failures=0 if transition else totals["failures"],
                slow=0 if transition else totals["slow"],
                applied=applied,
                transition=transition,
            )
        for notice in notices:
            self._publish(notice)
        return decision

    def breaker_force(
        self, name: str, action: str, *, settings: BreakerSettings, origin: str = ""
    ) -> BreakerTransition:
        targets = {"open": (FORCED_OPEN, "forced_open"), "closed": (FORCED_CLOSED, "forced_closed")}
        targets["reset"] = (CLOSED, "reset")
        if action not in targets:
            raise ValueError(f"action must be 'open', 'closed' or 'reset', got {action!r}")
        to, reason = targets[action]
        notices: list[BreakerTransition] = []
        with self.atomic() as now:
            record, _ = self._breaker(name, now, settings)
            if action == "reset":
                record["state"].update(rounds=0, cooldown=settings.cooldown, last_success=0)
            transition = self._transition(name, record, to, reason, now, origin=origin, notices=notices)
        for notice in notices:
            self._publish(notice)
        return transition

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
