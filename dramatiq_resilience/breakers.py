"""Circuit breakers: settings, named-breaker configuration, and the operator API.

A breaker is identified by its name: every actor naming it shares its state,
kept in the state backend (see :mod:`dramatiq_resilience.backends.breaker`).
Its *settings* (thresholds, window, cooldowns, probes) belong to the name, not
to one actor, because every process must apply the same rule to the same
state.  :class:`BreakerConfig` resolves them; :class:`Breakers` operates
breakers from any process (the CLI uses it), without a middleware.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import events
from .backends.base import StateBackend
from .backends.breaker import (
    CLOSED,
    FORCED_CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    HISTORY_LENGTH,
    OPEN,
    BreakerStatus,
    BreakerTransition,
)
from .errors import ConfigurationError
from .options import Checker, fraction, milliseconds, optional, positive_int

__all__ = [
    "DEFAULT_COOLDOWN",
    "DEFAULT_COOLDOWN_MAX",
    "DEFAULT_WINDOW",
    "SETTING_OPTIONS",
    "BreakerConfig",
    "BreakerSettings",
    "Breakers",
    "announce_transition",
]

logger = logging.getLogger("dramatiq_resilience.breakers")

#: Milliseconds of the sliding window the failure rate is measured over.
DEFAULT_WINDOW = 60_000

#: Milliseconds a breaker stays open after it trips.
DEFAULT_COOLDOWN = 30_000

#: The longest cooldown in milliseconds (the cooldown doubles after each failed probe round).
DEFAULT_COOLDOWN_MAX = 600_000

#: Each setting's actor option name and checker.
SETTING_OPTIONS: dict[str, tuple[str, Checker]] = {
    "failure_rate": ("breaker_failure_rate", optional(fraction)),
    "min_calls": ("breaker_min_calls", positive_int),
    "window": ("breaker_window", milliseconds()),
    "consecutive_failures": ("breaker_consecutive_failures", optional(positive_int)),
    "slow_call_ms": ("breaker_slow_call_ms", optional(milliseconds())),
    "slow_call_rate": ("breaker_slow_call_rate", optional(fraction)),
    "cooldown": ("breaker_cooldown", milliseconds()),
    "cooldown_max": ("breaker_cooldown_max", milliseconds()),
    "probes": ("breaker_probes", positive_int),
    "successes": ("breaker_successes", optional(positive_int)),
}


@dataclass(frozen=True)
class BreakerSettings:
    """The rule of one breaker: when it opens, for how long, how it probes.

    Parameters:
      failure_rate: open when, in the window, at least ``min_calls`` calls
        were made and this fraction of them failed (default 0.5; ``None`` off).
      min_calls: calls the window needs before the rates count (default 10).
      window: the sliding window in milliseconds (default 60 000).
      consecutive_failures: open after this many failures in a row (default
        5; ``None`` off).
      slow_call_ms: a call taking this many milliseconds or more is slow
        (default ``None``: slow calls are not counted).
      slow_call_rate: open when this fraction of the window's calls were slow
        (with ``slow_call_ms``; default ``None``).
      cooldown: milliseconds an opened breaker waits before it half-opens
        (default 30 000).
      cooldown_max: the cooldown doubles after each failed probe round, up to
        this many milliseconds (default 600 000).
      probes: how many messages may run while half-open, cluster-wide (default 1).
      successes: successful probes that close it (default ``None``: ``probes``).
    """

    failure_rate: float | None = 0.5
    min_calls: int = 10
    window: int = DEFAULT_WINDOW
    consecutive_failures: int | None = 5
    slow_call_ms: int | None = None
    slow_call_rate: float | None = None
    cooldown: int = DEFAULT_COOLDOWN
    cooldown_max: int = DEFAULT_COOLDOWN_MAX
    probes: int = 1
    successes: int | None = None

    @property
    def required_successes(self) -> int:
        """Successful probes that close the breaker."""
        return self.probes if self.successes is None else self.successes

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, base: BreakerSettings | None = None
    ) -> BreakerSettings:
        """Settings from ``values`` (setting names, or ``breaker_*`` option names) over ``base``.

        Raises:
          ConfigurationError: naming the unknown or bad setting.
        """
        base = base or cls()
        checked: dict[str, Any] = {}
        by_option = {option: name for name, (option, _) in SETTING_OPTIONS.items()}
        for key, value in values.items():
            name = by_option.get(key, key)
            if name not in SETTING_OPTIONS:
                known = ", ".join(SETTING_OPTIONS)
                raise ConfigurationError(f"unknown breaker setting {key!r}; known: {known}", option=key)
            option, check = SETTING_OPTIONS[name]
            try:
                checked[name] = check(value)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(str(exc), option=option) from None
        return dataclasses.replace(base, **checked)

    def problems(self) -> list[tuple[str, str]]:
        """Inconsistent combinations, as (option, problem) pairs."""
        found = []
        if self.successes is not None and self.successes > self.probes:
            found.append(
                (
                    "breaker_successes",
                    f"must be at most breaker_probes ({self.probes}), got {self.successes}",
                )
            )
        if self.cooldown_max < self.cooldown:
            found.append(
                (
                    "breaker_cooldown_max",
                    f"must be at least breaker_cooldown ({self.cooldown} ms), got {self.cooldown_max}",
                )
            )
        if (self.slow_call_ms is None) != (self.slow_call_rate is None):
            found.append(
                (
                    "breaker_slow_call_rate",
                    "breaker_slow_call_ms and breaker_slow_call_rate must be set together "
                    f"(got {self.slow_call_ms!r} and {self.slow_call_rate!r})",
                )
            )
        return found

    def check(self, *, actor_name: str | None = None, breaker: str | None = None) -> BreakerSettings:
        """Return self, or raise ``ConfigurationError`` for the first inconsistency."""
        for option, problem in self.problems():
            where = f"breaker {breaker!r}: " if breaker else ""
            raise ConfigurationError(f"{where}{problem}", actor_name=actor_name, option=option)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BreakerConfig:
    """Resolves the settings of each named breaker and refuses conflicting ones.

    A breaker's settings are the middleware's defaults, overridden by
    ``breakers={name: {...}}`` given to the middleware, overridden by the
    ``breaker_*`` options of the actors naming it.  An option set by two
    sources (two actors, or an actor and ``breakers=``) must have the same
    value: otherwise declaring the second actor raises ``ConfigurationError``
    naming both.

    Parameters:
      defaults: the middleware's default settings.
      configured: ``{name: settings mapping or BreakerSettings}``.
    """

    def __init__(
        self, defaults: BreakerSettings, configured: Mapping[str, Mapping[str, Any] | BreakerSettings] | None
    ) -> None:
        self.defaults = defaults.check()
        self.configured: dict[str, dict[str, Any]] = {}
        for name, given in (configured or {}).items():
            check_name(name, option="breakers")
            values = given.to_dict() if isinstance(given, BreakerSettings) else given
            if not isinstance(values, Mapping):
                raise ConfigurationError(
                    f"breaker {name!r}: must be a mapping of settings, got {values!r}", option="breakers"
                )
            settings = BreakerSettings.from_mapping(values, base=defaults).check(breaker=name)
            self.configured[name] = {
                key: getattr(settings, key) for key in SETTING_OPTIONS if key in _names(values)
            }
        # name -> actor name -> the settings that actor sets explicitly
        self.declared: dict[str, dict[str, dict[str, Any]]] = {}
        self._resolved: dict[str, BreakerSettings] = {}

    def declare(self, name: str, actor_name: str, explicit: Mapping[str, Any]) -> BreakerSettings:
        """Record that ``actor_name`` uses breaker ``name`` with ``explicit`` settings (checked values)."""
        for key, value in explicit.items():
            option = SETTING_OPTIONS[key][0]
            if key in self.configured.get(name, {}) and self.configured[name][key] != value:
                raise ConfigurationError(
                    f"breaker {name!r} is configured with {option}={self.configured[name][key]!r} by "
                    f"CircuitBreaker(breakers=...), but this actor sets {value!r}",
                    actor_name=actor_name,
                    option=option,
                )
            for other, settings in self.declared.get(name, {}).items():
                if other != actor_name and key in settings and settings[key] != value:
                    raise ConfigurationError(
                        f"breaker {name!r} is shared with actor {other!r}, which sets {option}="
                        f"{settings[key]!r}; actors sharing a breaker must agree, got {value!r}",
                        actor_name=actor_name,
                        option=option,
                    )
        merged = self._merge(name, extra={actor_name: dict(explicit)})
        merged.check(actor_name=actor_name, breaker=name)
        self.declared.setdefault(name, {})[actor_name] = dict(explicit)
        self._resolved.pop(name, None)
        return merged

    def _merge(self, name: str, extra: Mapping[str, Mapping[str, Any]] | None = None) -> BreakerSettings:
        values: dict[str, Any] = dict(self.configured.get(name, {}))
        for settings in {**self.declared.get(name, {}), **(extra or {})}.values():
            values.update(settings)
        return dataclasses.replace(self.defaults, **values)

    def settings(self, name: str) -> BreakerSettings:
        """The settings of breaker ``name`` (the defaults if nothing configures it)."""
        resolved = self._resolved.get(name)
        if resolved is None:
            resolved = self._resolved[name] = self._merge(name)
        return resolved

    def actors(self, name: str) -> list[str]:
        """The actors declared as using breaker ``name``."""
        return sorted(self.declared.get(name, {}))


def _names(values: Mapping[str, Any]) -> set[str]:
    by_option = {option: name for name, (option, _) in SETTING_OPTIONS.items()}
    return {by_option.get(key, key) for key in values}


def check_name(value: Any, *, option: str = "breaker", actor_name: str | None = None) -> str:
    """A breaker name: a non-empty string without braces (they would break hash tags)."""
    if not isinstance(value, str) or not value or "{" in value or "}" in value:
        raise ConfigurationError(
            f"a breaker name must be a non-empty string without braces, got {value!r}",
            option=option,
            actor_name=actor_name,
        )
    return value


def announce_transition(transition: BreakerTransition, log: logging.Logger | None = None) -> None:
    """Log a transition made by this process and emit its ``breaker_transition`` event."""
    log = log or logger
    t = transition
    if t.to_state == OPEN and t.reason == "probe_slow":
        log.warning("Circuit %r reopened for %d ms: a probe was slow.", t.breaker, t.cooldown_ms)
    elif t.to_state == OPEN and t.from_state == HALF_OPEN:
        log.warning("Circuit %r reopened for %d ms: a probe failed.", t.breaker, t.cooldown_ms)
    elif t.to_state == OPEN and t.reason == "slow_call_rate":
        log.warning(
            "Circuit %r opened for %d ms after %d slow calls in %d calls.",
            t.breaker,
            t.cooldown_ms,
            t.failures,
            t.calls,
        )
    elif t.to_state == OPEN:
        log.warning(
            "Circuit %r opened for %d ms after %d failures in %d calls.",
            t.breaker,
            t.cooldown_ms,
            t.failures,
            t.calls,
        )
    elif t.to_state == HALF_OPEN:
        log.info("Circuit %r half-opened: probes may run.", t.breaker)
    elif t.to_state == CLOSED and t.reason == "probes_succeeded":
        log.info("Circuit %r closed after %d successful probe(s).", t.breaker, t.calls)
    elif t.to_state == CLOSED:
        log.warning("Circuit %r was reset to closed by an operator (it was %s).", t.breaker, t.from_state)
    elif t.to_state == FORCED_OPEN:
        log.warning("Circuit %r was forced open by an operator (it was %s).", t.breaker, t.from_state)
    elif t.to_state == FORCED_CLOSED:
        log.warning("Circuit %r was forced closed by an operator (it was %s).", t.breaker, t.from_state)
    events.emit("breaker_transition", **t.fields())


class Breakers:
    """Operate breakers stored in a backend: list, inspect, force open or closed, reset.

    Usable from any process, without a middleware (the ``dramatiq-resilience
    breakers`` command uses it).  Forced states and resets are published, so
    every worker process drops its cached state at once.

    Parameters:
      backend: the state backend the workers use.
      defaults: settings for breakers the registry does not describe.
    """

    def __init__(self, backend: StateBackend, *, defaults: BreakerSettings | None = None) -> None:
        self.backend = backend
        self.defaults = defaults or BreakerSettings()
        self.origin = f"api:{uuid.uuid4().hex[:12]}"

    def names(self) -> dict[str, dict[str, Any]]:
        """Every registered breaker with its registered info (settings, actors)."""
        return self.backend.breaker_names()

    def _settings(self, info: Mapping[str, Any] | None) -> BreakerSettings:
        values = dict((info or {}).get("settings") or {})
        known = {k: v for k, v in values.items() if k in SETTING_OPTIONS}
        try:
            return BreakerSettings.from_mapping(known, base=self.defaults)
        except ConfigurationError:
            return self.defaults

    def status(self, name: str) -> BreakerStatus:
        """The state and counts of breaker ``name``."""
        info = self.names().get(name)
        status = self.backend.breaker_status(name, settings=self._settings(info))
        if info:
            status = dataclasses.replace(
                status, settings=dict(info.get("settings") or {}), actors=list(info.get("actors") or [])
            )
        return status

    def list(self) -> list[BreakerStatus]:
        """The status of every registered breaker, by name."""
        registry = self.names()
        statuses = []
        for name in sorted(registry):
            info = registry[name]
            status = self.backend.breaker_status(name, settings=self._settings(info))
            statuses.append(
                dataclasses.replace(
                    status, settings=dict(info.get("settings") or {}), actors=list(info.get("actors") or [])
                )
            )
        return statuses

    def history(self, name: str, limit: int = HISTORY_LENGTH) -> builtins.list[BreakerTransition]:
        """The latest transitions of breaker ``name``, newest first."""
        return self.backend.breaker_history(name, limit=limit)

    def _force(self, name: str, action: str) -> BreakerTransition:
        check_name(name)
        registry = self.names()
        if name not in registry:
            self.backend.breaker_register(name, {"settings": {}, "actors": []})
        transition = self.backend.breaker_force(
            name, action, settings=self._settings(registry.get(name)), origin=self.origin
        )
        announce_transition(transition)
        return transition

    def force_open(self, name: str) -> BreakerTransition:
        """Open breaker ``name`` until it is closed or reset: every message is deferred (or failed)."""
        return self._force(name, "open")

    def force_closed(self, name: str) -> BreakerTransition:
        """Hold breaker ``name`` closed until it is reset: every message runs, failures never trip it."""
        return self._force(name, "closed")

    def reset(self, name: str) -> BreakerTransition:
        """Close breaker ``name`` with empty counts and the base cooldown (ends a forced state)."""
        return self._force(name, "reset")

    def forget(self, name: str) -> bool:
        """Delete breaker ``name``'s state and registry entry (it comes back when a worker uses it)."""
        return self.backend.breaker_forget(name)
