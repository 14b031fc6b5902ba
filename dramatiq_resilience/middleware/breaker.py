"""CircuitBreaker: stop running actors whose dependency fails; defer their messages instead."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import q_name
from dramatiq.logging import get_logger

from .. import events
from ..backends.base import StateBackend
from ..backends.breaker import BreakerStatus, BreakerTransition
from ..breaker_local import LocalBreakers
from ..breakers import (
    SETTING_OPTIONS,
    BreakerConfig,
    Breakers,
    BreakerSettings,
    announce_transition,
    check_name,
)
from ..clock import Clock
from ..errors import BackendError, CircuitOpen
from ..options import Option, choice, exception_types, milliseconds, non_negative_int, optional, positive_int
from .base import DEFAULT_BACKEND_RETRY_DELAY, ResilienceMiddleware, scratch
from .breaker_calls import Call, outcome_of

__all__ = [
    "DEFAULT_CACHE_MS",
    "DEFAULT_FLUSH_EVERY",
    "DEFAULT_FLUSH_MS",
    "PROBE_LEASE_GRACE",
    "CircuitBreaker",
]

#: Milliseconds a process trusts a closed breaker without asking the backend.
DEFAULT_CACHE_MS = 1_000

#: Outcomes a process batches before it sends them.
DEFAULT_FLUSH_EVERY = 100

#: Milliseconds an outcome may wait in a batch.
DEFAULT_FLUSH_MS = 1_000

#: Milliseconds added to the actor's time limit to lease a probe permit.
PROBE_LEASE_GRACE = 5_000

StateListener = Callable[[BreakerTransition, bool], None]

#: The actor option a message may override, resolved once per actor otherwise.
_UNRESOLVED = object()


def _breaker_option(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    return check_name(value)


def _setting(name: str) -> Option:
    option, check = SETTING_OPTIONS[name]
    return Option(option, f"_default_{name}", check, per_message=False)


class CircuitBreaker(ResilienceMiddleware):
    """Middleware that stops running actors whose dependency fails, and defers their messages.

    A breaker is named (by default after the actor); actors naming the same
    breaker share it, in every process on every host.  Closed, messages run.
    It opens when, in a sliding window, at least ``min_calls`` calls were made
    and ``failure_rate`` of them failed (or ``slow_call_rate`` were slow), or
    after ``consecutive_failures`` failures in a row.  Open, messages are
    deferred to the moment it half-opens (retries untouched), or dead-lettered
    with ``CircuitOpen`` if ``on_open="fail"``.  Half-open, exactly ``probes``
    messages run cluster-wide; ``successes`` successes close it, a failure
    reopens it with the cooldown doubled (up to ``cooldown_max``).

    Position: before ``Retries`` (``install()`` puts it there), after
    ``AgeLimit``.

    Parameters (actor option names in brackets; settings marked * belong to
    the breaker, not the actor, and are not per-message):
      backend: the state backend.
      breaker: [``breaker``] the breaker's name; ``True`` (default) names it
        after the actor, ``False`` disables it.
      failure_rate: * [``breaker_failure_rate``] default 0.5; ``None`` off.
      min_calls: * [``breaker_min_calls``] default 10.
      window: * [``breaker_window``] milliseconds, default 60 000.
      consecutive_failures: * [``breaker_consecutive_failures``] default 5; ``None`` off.
      slow_call_ms: * [``breaker_slow_call_ms``] milliseconds; default ``None`` (off).
      slow_call_rate: * [``breaker_slow_call_rate``] default ``None`` (off).
      cooldown: * [``breaker_cooldown``] milliseconds, default 30 000.
      cooldown_max: * [``breaker_cooldown_max``] milliseconds, default 600 000.
      probes: * [``breaker_probes``] default 1.
      successes: * [``breaker_successes``] default ``None`` (= probes).
      ignore: [``breaker_ignore``] exception types that never count (default none).
      record: [``breaker_record``] if set, only these exception types count
        as failures, others as successes (default ``None``).  Without it,
        the actor's ``throws`` do not count.
      on_open: [``breaker_on_open``] ``"defer"`` (default) or ``"fail"``.
      max_deferrals: [``breaker_max_deferrals``] dead-letter a message
        deferred this often by breakers (default ``None``: no cap).
      probe_lease: [``breaker_probe_lease``] milliseconds a probe permit is
        held (default ``None``: the actor's time limit plus 5 000).
      breakers: ``{name: {setting: value}}``: settings of named breakers.
      cache_ms: milliseconds a closed state is trusted in process (default
        1 000; 0 asks the backend for every message).
      flush_every, flush_ms: outcomes are sent in batches of this many, or
        after this many milliseconds (defaults 100 and 1 000).
      on_state_change: listeners called ``listener(transition, local)``.
      on_backend_error, backend_retry_delay: see ``ResilienceMiddleware``
        (default ``"allow"``: run messages while the backend is down).
      clock: local time for durations and the cache (tests).
    """

    option_specs = (
        Option("breaker", "breaker", _breaker_option),
        *(_setting(name) for name in SETTING_OPTIONS),
        Option("breaker_ignore", "ignore", exception_types, per_message=False),
        Option("breaker_record", "record", optional(exception_types), per_message=False),
        Option("breaker_on_open", "on_open", choice("defer", "fail")),
        Option("breaker_max_deferrals", "max_deferrals", optional(positive_int)),
        Option("breaker_probe_lease", "probe_lease", optional(milliseconds())),
    )

    def __init__(
        self,
        *,
        backend: StateBackend,
        breaker: bool | str = True,
        failure_rate: float | None = 0.5,
        min_calls: int = 10,
        window: int = 60_000,
        consecutive_failures: int | None = 5,
        slow_call_ms: int | None = None,
        slow_call_rate: float | None = None,
        cooldown: int = 30_000,
        cooldown_max: int = 600_000,
        probes: int = 1,
        successes: int | None = None,
        ignore: Iterable[type[BaseException]] | type[BaseException] = (),
        record: Iterable[type[BaseException]] | type[BaseException] | None = None,
        on_open: str = "defer",
        max_deferrals: int | None = None,
        probe_lease: int | None = None,
        breakers: Mapping[str, Mapping[str, Any] | BreakerSettings] | None = None,
        cache_ms: int = DEFAULT_CACHE_MS,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        flush_ms: int = DEFAULT_FLUSH_MS,
        on_state_change: Iterable[StateListener] = (),
        on_backend_error: str = "allow",
        backend_retry_delay: int = DEFAULT_BACKEND_RETRY_DELAY,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            backend=backend, on_backend_error=on_backend_error, backend_retry_delay=backend_retry_delay
        )
        self.logger = get_logger(__name__, type(self))
        self.breaker, self.ignore, self.record, self.on_open = breaker, ignore, record, on_open
        self.max_deferrals, self.probe_lease = max_deferrals, probe_lease
        given = {
            "failure_rate": failure_rate,
            "min_calls": min_calls,
            "window": window,
            "consecutive_failures": consecutive_failures,
            "slow_call_ms": slow_call_ms,
            "slow_call_rate": slow_call_rate,
            "cooldown": cooldown,
            "cooldown_max": cooldown_max,
            "probes": probes,
            "successes": successes,
        }
        for name, value in given.items():
            setattr(self, f"_default_{name}", value)
        self.check_defaults()
        defaults = BreakerSettings(**{name: getattr(self, f"_default_{name}") for name in SETTING_OPTIONS})
        self.config = BreakerConfig(defaults, breakers)
        self.admin = Breakers(backend, defaults=defaults)
        self.local = LocalBreakers(
            backend,
            clock=clock,
            cache_ms=self._check_default("cache_ms", non_negative_int, cache_ms),
            flush_every=self._check_default("flush_every", positive_int, flush_every),
            flush_ms=self._check_default("flush_ms", milliseconds(), flush_ms),
            describe=self._describe,
            on_transition=self._transitioned,
            outage=self.outage,
        )
        self.listeners: list[StateListener] = list(on_state_change)
        self._actor_breakers: dict[str, object] = {}

    # -- configuration ----------------------------------------------------------------

    def _name_of(self, value: bool | str, actor_name: str) -> str | None:
        if value is False:
            return None
        return check_name(actor_name, actor_name=actor_name) if value is True else str(value)

    def validate_actor(self, broker: Broker, actor: Any) -> None:
        self._actor_breakers.pop(actor.actor_name, None)  # a re-declared actor may name another breaker
        name = self._name_of(actor.options.get("breaker", self.breaker), actor.actor_name)
        if name is None:
            return
        explicit = {
            key: actor.options[option]
            for key, (option, _) in SETTING_OPTIONS.items()
            if option in actor.options
        }
        self.config.declare(name, actor.actor_name, explicit)

    def settings(self, name: str) -> BreakerSettings:
        """The settings breaker ``name`` runs with."""
        return self.config.settings(name)

    def _describe(self, name: str) -> dict[str, Any]:
        return {"settings": self.config.settings(name).to_dict(), "actors": self.config.actors(name)}

    def on_state_change(self, listener: StateListener) -> StateListener:
        """Call ``listener(transition, local)`` on every transition this process learns of.

        ``local`` is true in the process that made the transition (exactly one
        process per transition made by workers), false for notices of
        transitions made elsewhere (another worker, an operator).
        """
        self.listeners.append(listener)
        return listener

    def _transitioned(self, transition: BreakerTransition, local: bool) -> None:
        if local:
            announce_transition(transition, self.logger)
        else:
            events.emit("breaker_notice", **transition.fields())
        for listener in self.listeners:
            try:
                listener(transition, local)
            except Exception:
                self.logger.exception("Breaker listener %r failed on %r.", listener, transition)

    # -- the hooks --------------------------------------------------------------------

    def _probe_lease(self, broker: Broker, message: Any) -> int:
        """Milliseconds a probe permit is leased: ``breaker_probe_lease``, else the time limit + 5 000.

        A bad ``breaker_probe_lease`` or ``time_limit`` rejects the message.
        """
        lease: int | None = self.option(broker, message, "breaker_probe_lease")
        if lease is not None:
            return lease
        return self.time_limit(broker, message) + PROBE_LEASE_GRACE

    def _breaker_of(self, broker: Broker, message: Any) -> str | None:
        """The breaker a message goes through: its own ``breaker`` option, else its actor's (cached)."""
        if "breaker" in message.options:
            return self._name_of(self.option(broker, message, "breaker"), message.actor_name)
        name = self._actor_breakers.get(message.actor_name, _UNRESOLVED)
        if name is _UNRESOLVED:
            value = self.actor_option(broker, message.actor_name, "breaker")
            name = self._actor_breakers[message.actor_name] = self._name_of(value, message.actor_name)
        return name  # type: ignore[return-value]

    def before_process_message(self, broker: Broker, message: Any) -> None:
        name = self._breaker_of(broker, message)
        if name is None:
            return
        settings = self.config.settings(name)
        lease: int | None = None
        if "time_limit" in message.options or "breaker_probe_lease" in message.options:
            # Checked whatever the cache says, so that a bad value is refused every time.
            lease = self._probe_lease(broker, message)
        admission = self.local.cached(name)
        if admission is None:
            self.local.start()
            if lease is None:
                lease = self._probe_lease(broker, message)
            try:
                admission = self.local.check(name, settings, member=message.message_id, lease_ms=lease)
            except BackendError as exc:
                self.backend_failed(broker, message, exc)
                return
            self.outage.succeeded()
        if admission.allowed:
            started = self.local.clock.now_ms()
            call = Call(name, settings, admission.epoch, admission.probe, started, admission.checked_at_ms)
            scratch(message, "breaker")["call"] = call
            if admission.probe:
                self._emit("breaker_probe", message, name)
            return
        on_open = self.option(broker, message, "breaker_on_open")
        self._emit(
            "breaker_blocked", message, name, state=admission.state, retry_after_ms=admission.retry_after_ms
        )
        if on_open == "fail":
            self.reject(
                message,
                CircuitOpen(
                    f"Circuit {name!r} is {admission.state.replace('_', ' ')}; message "
                    f"{message.message_id!r} of actor {message.actor_name!r} is failed instead of "
                    "deferred (breaker_on_open='fail').",
                    actor_name=message.actor_name,
                    message_id=message.message_id,
                    breaker=name,
                    retry_after_ms=admission.retry_after_ms,
                ),
            )
        self.defer(
            broker,
            message,
            delay_ms=admission.retry_after_ms,
            reason="circuit_open",
            max_deferrals=self.option(broker, message, "breaker_max_deferrals"),
        )

    def _outcome(self, broker: Broker, message: Any, exception: BaseException | None) -> str:
        if exception is None:
            return "success"
        actor = broker.get_actor(message.actor_name)
        return outcome_of(
            exception,
            ignore=self.actor_option(broker, actor.actor_name, "breaker_ignore"),
            record=self.actor_option(broker, actor.actor_name, "breaker_record"),
            throws=message.options.get("throws") or actor.options.get("throws"),
        )

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        call: Call | None = scratch(message, "breaker").pop("call", None)
        if call is None:
            return
        outcome = self._outcome(broker, message, exception)
        now = self.local.clock.now_ms()
        duration = now - call.started
        slow_ms = call.settings.slow_call_ms
        slow = outcome != "ignored" and slow_ms is not None and duration >= slow_ms
        if events.listening("breaker_call"):
            self._emit(
                "breaker_call",
                message,
                call.name,
                outcome=outcome,
                slow=slow,
                duration_ms=duration,
                probe=call.probe,
            )
        try:
            self.local.record(
                call.name,
                call.settings,
                epoch=call.epoch,
                outcome=outcome,
                slow=slow,
                probe=message.message_id if call.probe else None,
                now=now,
            )
        except BackendError as exc:
            self.outage.failed(exc, action="run messages without counting their outcomes")

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        call: Call | None = scratch(message, "breaker").pop("call", None)
        if call is not None and call.probe:
            try:
                self.local.release(call.name, call.settings, epoch=call.epoch, probe=message.message_id)
            except BackendError as exc:
                self.outage.failed(exc, action="let the probe permit expire")

    def _emit(self, event: str, message: Any, name: str, **fields: Any) -> None:
        events.emit(
            event,
            breaker=name,
            actor_name=message.actor_name,
            queue_name=q_name(message.queue_name),
            message_id=message.message_id,
            **fields,
        )

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.local.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.local.stop()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.flush()

    # -- operations -------------------------------------------------------------------

    def flush(self) -> None:
        """Send every batched outcome now (backend errors are logged, not raised)."""
        try:
            self.local.flush()
        except BackendError as exc:
            self.outage.failed(exc, action="drop its batched outcomes")

    def status(self, name: str) -> BreakerStatus:
        """The state and counts of breaker ``name`` (see :class:`Breakers`)."""
        return self.admin.status(name)

    def force_open(self, name: str) -> BreakerTransition:
        """Hold breaker ``name`` open until it is reset or forced closed."""
        transition = self.admin.force_open(name)
        self.local.forget_cache(name)
        return transition

    def force_closed(self, name: str) -> BreakerTransition:
        """Hold breaker ``name`` closed until it is reset."""
        transition = self.admin.force_closed(name)
        self.local.forget_cache(name)
        return transition

    def reset(self, name: str) -> BreakerTransition:
        """Close breaker ``name`` with empty counts."""
        transition = self.admin.reset(name)
        self.local.forget_cache(name)
        return transition
