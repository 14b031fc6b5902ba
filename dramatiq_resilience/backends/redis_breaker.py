"""Breaker operations of the Redis backend: one Lua script per operation.

Every ``breaker_*.lua`` script is registered with ``_prelude.lua`` and
``_breaker.lua`` (the shared rules) in front of it.  Transitions are published
on :meth:`~dramatiq_resilience.backends.breaker.BreakerOps.breaker_channel`
from inside the script that makes them.
"""

from __future__ import annotations

import contextlib
import json
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis
from redis.client import PubSub
from redis.commands.core import Script

from .breaker import (
    HISTORY_LENGTH,
    BreakerDecision,
    BreakerNotices,
    BreakerOps,
    BreakerStatus,
    BreakerSubscription,
    BreakerTransition,
    ppm,
)
from .redis_base import RedisBase

if TYPE_CHECKING:
    from ..breakers import BreakerSettings

__all__ = ["RedisBreakerOps", "settings_args"]

_sources_lock = threading.Lock()
_sources: dict[str, str] = {}


def _breaker_source(name: str) -> str:
    """``_prelude.lua`` + ``_breaker.lua`` + ``<name>.lua``, read once per process."""
    with _sources_lock:
        if name not in _sources:
            folder = resources.files("dramatiq_resilience.backends.lua")
            parts = ("_prelude.lua", "_breaker.lua", f"{name}.lua")
            _sources[name] = "\n".join((folder / part).read_text(encoding="utf-8") for part in parts)
        return _sources[name]


def settings_args(settings: BreakerSettings) -> list[int]:
    """ARGV[5..14] of every breaker script (see ``_breaker.lua``)."""
    return [
        ppm(settings.failure_rate),
        settings.min_calls,
        settings.window,
        settings.consecutive_failures or 0,
        ppm(settings.slow_call_rate) if settings.slow_call_ms is not None else 0,
        settings.cooldown,
        settings.cooldown_max,
        settings.probes,
        settings.required_successes,
        HISTORY_LENGTH,
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _transition(value: Any) -> BreakerTransition | None:
    text = _text(value)
    return BreakerTransition.from_json(text) if text else None


def _malformed(data: Any, exc: Exception) -> str:
    """What was wrong with an unreadable notice, for the log (its text clipped to 200 characters)."""
    text = repr(data)
    clipped = text if len(text) <= 200 else text[:197] + "..."
    problem = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
    return f"{clipped} ({problem})"


class _RedisSubscription(BreakerSubscription):
    """A pub/sub connection on the notice channel, re-established after errors.

    redis-py reconnects and resubscribes a ``PubSub`` by itself; a connect
    callback tells us when it did, because notices published while the
    connection was down are lost and the caller must drop its cache.
    """

    def __init__(self, ops: RedisBreakerOps) -> None:
        self.ops = ops
        self.pubsub: PubSub | None = None
        self.reconnected = False

    def _on_connect(self, connection: Any) -> None:
        self.reconnected = True

    def poll(self, timeout_ms: int) -> BreakerNotices:
        transitions: list[BreakerTransition] = []
        malformed: list[str] = []
        try:
            with self.ops.errors():
                resubscribed = False
                if self.pubsub is None:
                    self.pubsub = self.ops.client.pubsub(ignore_subscribe_messages=True)
                    self.pubsub.subscribe(self.ops.breaker_channel())
                    connection = self.pubsub.connection
                    if connection is not None:
                        connection.register_connect_callback(self._on_connect)
                    self.reconnected = False
                    resubscribed = True
                message = self.pubsub.get_message(timeout=max(0, timeout_ms) / 1000)
                while message is not None:
                    if message.get("type") == "message":
                        try:
                            transitions.append(BreakerTransition.from_json(message["data"]))
                        except (ValueError, KeyError, TypeError, AttributeError) as exc:
                            malformed.append(_malformed(message.get("data"), exc))
                    message = self.pubsub.get_message(timeout=0)
                if self.reconnected:
                    self.reconnected = False
                    resubscribed = True
        except Exception:
            self.close()
            raise
        return BreakerNotices(transitions, resubscribed=resubscribed, malformed=malformed)

    def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.exceptions.RedisError):
                pubsub.close()


class RedisBreakerOps(RedisBase, BreakerOps):
    """The breaker operations as Lua scripts (``backends/lua/breaker_*.lua``)."""

    def _breaker_keys(self, name: str) -> list[str]:
        return [self.key("breaker", name, part) for part in ("state", "window", "probes", "history")]

    def _breaker_registry(self) -> str:
        # Breaker keys always have a suffix after the tag, so this cannot collide with one.
        return self.key("breaker", "registry")

    def _breaker_script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            with self._scripts_lock:
                script = self._scripts.get(name)
                if script is None:
                    script = self._scripts[name] = self.client.register_script(_breaker_source(name))
        return script

    def _run_breaker(self, script: str, name: str, settings: BreakerSettings, origin: str, *args: Any) -> Any:
        runner = self._breaker_script(script)
        argv = [self.now_arg(), name, self.breaker_channel(), origin, *settings_args(settings), *args]
        with self.errors():
            return runner(keys=self._breaker_keys(name), args=argv)

    def breaker_check(
        self, name: str, *, settings: BreakerSettings, member: str, lease_ms: int, origin: str = ""
    ) -> BreakerDecision:
        reply = self._run_breaker("breaker_check", name, settings, origin, member, int(lease_ms))
        state, epoch, now, wait, probe, created, consecutive, notice = reply
        return BreakerDecision(
            state=_text(state),
            epoch=int(epoch),
            now_ms=int(now),
            retry_after_ms=int(wait),
            probe=bool(probe),
            created=bool(created),
            consecutive=int(consecutive),
            transition=_transition(notice),
        )

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
        reply = self._run_breaker(
            "breaker_record",
            name,
            settings,
            origin,
            int(epoch),
            int(calls),
            int(failures),
            int(slow),
            int(last_success_ms),
            probe or "",
            probe_outcome,
        )
        (state, new_epoch, now, wait, created, consecutive, window_calls, window_failures, window_slow,
         applied, notice) = reply  # fmt: skip
        return BreakerDecision(
            state=_text(state),
            epoch=int(new_epoch),
            now_ms=int(now),
            retry_after_ms=int(wait),
            created=bool(created),
            consecutive=int(consecutive),
            calls=int(window_calls),
            failures=int(window_failures),
            slow=int(window_slow),
            applied=bool(applied),
            transition=_transition(notice),
        )

    def breaker_force(
        self, name: str, action: str, *, settings: BreakerSettings, origin: str = ""
    ) -> BreakerTransition:
        if action not in ("open", "closed", "reset"):
            raise ValueError(f"action must be 'open', 'closed' or 'reset', got {action!r}")
        transition = _transition(self._run_breaker("breaker_force", name, settings, origin, action))
        assert transition is not None
        return transition

    def breaker_status(self, name: str, *, settings: BreakerSettings) -> BreakerStatus:
        reply = self._run_breaker("breaker_status", name, settings, "")
        (exists, state, epoch, now, wait, half_open_at, cooldown, rounds, calls, failures, slow,
         consecutive, in_flight, successes, opened_at, changed_at, reason, trip_failures,
         trip_calls) = reply  # fmt: skip
        return BreakerStatus(
            name=name,
            state=_text(state),
            epoch=int(epoch),
            now_ms=int(now),
            retry_after_ms=int(wait),
            half_open_at_ms=int(half_open_at),
            cooldown_ms=int(cooldown),
            rounds=int(rounds),
            calls=int(calls),
            failures=int(failures),
            slow=int(slow),
            consecutive=int(consecutive),
            probes_in_flight=int(in_flight),
            probe_successes=int(successes),
            opened_at_ms=int(opened_at),
            changed_at_ms=int(changed_at),
            reason=_text(reason),
            trip_failures=int(trip_failures),
            trip_calls=int(trip_calls),
            exists=bool(exists),
        )

    def breaker_history(self, name: str, *, limit: int = HISTORY_LENGTH) -> list[BreakerTransition]:
        with self.errors():
            items = self.client.lrange(self._breaker_keys(name)[3], 0, max(0, limit - 1))
        return [BreakerTransition.from_json(item) for item in items]

    def breaker_register(self, name: str, info: dict[str, Any]) -> None:
        with self.errors():
            self.client.hset(self._breaker_registry(), name, json.dumps(info, sort_keys=True))

    def breaker_names(self) -> dict[str, dict[str, Any]]:
        with self.errors():
            raw = self.client.hgetall(self._breaker_registry())
        names: dict[str, dict[str, Any]] = {}
        for key, value in raw.items():
            try:
                info = json.loads(value)
            except ValueError:
                info = {}
            names[_text(key)] = info if isinstance(info, dict) else {}
        return names

    def breaker_forget(self, name: str) -> bool:
        with self.errors():
            deleted = int(self.client.delete(*self._breaker_keys(name)))
            removed = int(self.client.hdel(self._breaker_registry(), name))
        return bool(deleted or removed)

    def breaker_subscribe(self) -> BreakerSubscription:
        return _RedisSubscription(self)
