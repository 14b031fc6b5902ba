"""SlidingWindowLimiter: exact, keyed, shared rate and concurrency limits that defer, never fail."""

from __future__ import annotations

import threading
import time
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import q_name

from .. import events
from ..backends.base import StateBackend
from ..backends.window import LeaseSpec, RateSpec, WindowUsage
from ..errors import BackendError, InvalidMessage
from ..limits import Concurrency, Limit
from ..options import Option, non_negative_int, optional, validate_actor_options
from .base import DEFAULT_BACKEND_RETRY_DELAY, ResilienceMiddleware, scratch
from .limiter_announce import Announcer
from .limiter_leases import LeaseRenewer
from .limiter_plan import KeyFunctionFailed, Plan, Registry, concurrency_list, limit_list, plan_for

__all__ = ["MAX_JITTER", "SlidingWindowLimiter"]

#: The largest jitter in milliseconds added to a rate-limit deferral.  The
#: jitter is drawn from the refusing limit's own grid spacing (``per / count``
#: ms, or hold time / n for concurrency), capped here.
MAX_JITTER = 1_000

_SCRATCH = "limiter"


class SlidingWindowLimiter(ResilienceMiddleware):
    """Middleware that enforces exact sliding-window rate limits and concurrency limits.

    A message starts only when every one of its limits has room; all are
    checked and taken by one atomic backend step, all or nothing.  A message
    over a limit is deferred (retries untouched) to the moment a slot frees,
    plus a small jitter, with reason ``"rate_limited"``.  Concurrency leases
    are renewed while the message runs and released when it ends (or is
    skipped by a later middleware); a holder that dies loses its lease when
    the lease expires.

    Each process announces how it defines its limits (on its first
    decision, then once a minute; see ``limiter_announce``).  When processes
    disagree on a limit (a rolling deploy), each keeps enforcing its own
    definition, in its own window when their windows differ, and the
    disagreement is logged once and announced as ``rate_limit_disagreement``.

    Position: before ``Retries``, after ``AgeLimit`` (``install()`` puts it
    there), so that expired messages take no budget.

    Parameters:
      backend: the state backend.
      limits: rate limits for actors that set no ``rate_limits`` (default none).
      concurrency: concurrency limits for actors that set no ``rate_concurrency``
        (default none).
      max_deferrals: how many times a message may be deferred for
        ``rate_limited`` before it is dead-lettered with ``TooManyDeferrals``;
        ``None`` (default) for no cap.  Option ``rate_max_deferrals``.
      on_backend_error: ``"allow"`` (default) runs messages unlimited while the
        backend is unreachable; ``"defer"`` puts them back for
        ``backend_retry_delay`` milliseconds (default 5 000).

    Actor options: ``rate_limits`` (a :class:`Limit`, a rate string such as
    ``"100/minute"``, or a list), ``rate_concurrency`` (a
    :class:`Concurrency`, an int, or a list), ``rate_max_deferrals``.
    """

    option_specs = (
        Option("rate_limits", "limits", limit_list, per_message=False),
        Option("rate_concurrency", "concurrency", concurrency_list, per_message=False),
        Option("rate_max_deferrals", "max_deferrals", optional(non_negative_int)),
    )

    def __init__(
        self,
        *,
        backend: StateBackend,
        limits: Limit | str | list[Limit | str] | tuple[Limit | str, ...] = (),
        concurrency: Concurrency | int | list[Concurrency | int] | tuple[Concurrency | int, ...] = (),
        max_deferrals: int | None = None,
        on_backend_error: str = "allow",
        backend_retry_delay: int = DEFAULT_BACKEND_RETRY_DELAY,
    ) -> None:
        super().__init__(
            backend=backend, on_backend_error=on_backend_error, backend_retry_delay=backend_retry_delay
        )
        self.limits: Any = limits
        self.concurrency: Any = concurrency
        self.max_deferrals = max_deferrals
        self.check_defaults()
        self._named: Registry = {}
        self._plans: dict[str, Plan] = {}
        self._plans_lock = threading.Lock()
        self.renewer = LeaseRenewer(backend, self.outage, self.logger)
        self.announcer = Announcer(backend, self.logger)

    # -- declaration --------------------------------------------------------------

    def validate_actor(self, broker: Broker, actor: Any) -> None:
        """Register the actor's named limits; a name declared twice differently is a ConfigurationError."""
        with self._plans_lock:
            self._plans[actor.actor_name] = self._build_plan(actor.actor_name, actor.options)
            self.announcer.forget(actor.actor_name)

    def _build_plan(self, actor_name: str, actor_options: dict[str, Any]) -> Plan:
        # The actor is not registered on the broker yet while it is declared.
        limits = actor_options.get("rate_limits", self.limits)
        pools = actor_options.get("rate_concurrency", self.concurrency)
        return plan_for(actor_name, limits, pools, self._named)

    def _plan(self, broker: Broker, actor_name: str) -> Plan:
        plan = self._plans.get(actor_name)
        if plan is None:  # an actor declared before this middleware was added
            with self._plans_lock:
                actor = broker.get_actor(actor_name)
                validate_actor_options(self.option_specs, actor.options, actor_name=actor_name)
                plan = self._plans[actor_name] = self._build_plan(actor_name, actor.options)
        return plan

    # -- processing -----------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        plan = self._plan(broker, message.actor_name)
        if not plan.rates and not plan.pools:
            return
        try:
            rates, pools = plan.specs(broker.get_actor(message.actor_name).fn, message.args, message.kwargs)
        except KeyFunctionFailed as exc:
            self.reject(
                message,
                InvalidMessage(
                    f"Actor {message.actor_name!r}, option {exc.option!r}: {exc.problem}",
                    actor_name=message.actor_name,
                    message_id=message.message_id,
                    option=exc.option,
                    problem=exc.problem,
                ),
            )
        try:
            decision = self.backend.window_acquire(message.message_id, rates, pools)
        except BackendError as exc:
            self.backend_failed(broker, message, exc)
            return
        self.outage.succeeded()
        if self.announcer.due(message.actor_name, decision.now_ms):
            self.announcer.announce(message.actor_name, plan, decision.now_ms)
        specs: list[RateSpec | LeaseSpec] = [*rates, *pools]
        if decision.granted:
            if pools:
                scratch(message, _SCRATCH).update(pools=pools, started=time.monotonic())
                self.renewer.hold(message.message_id, pools)
            events.emit(
                "rate_limit_admitted",
                actor_name=message.actor_name,
                queue_name=q_name(message.queue_name),
                message_id=message.message_id,
                keys={spec.limit: spec.key for spec in specs},
                now_ms=decision.now_ms,
            )
            return

        assert decision.retry_at_ms is not None and decision.blocked_by is not None
        blocked = specs[decision.blocked_by]
        delay = max(0, decision.retry_at_ms - decision.now_ms)
        events.emit(
            "rate_limit_exceeded",
            actor_name=message.actor_name,
            queue_name=q_name(message.queue_name),
            message_id=message.message_id,
            limit=blocked.limit,
            key=blocked.key,
            kind="concurrency" if isinstance(blocked, LeaseSpec) else "rate",
            retry_at_ms=decision.retry_at_ms,
            delay_ms=delay,
        )
        self.defer(
            broker,
            message,
            delay_ms=delay,
            reason="rate_limited",
            max_deferrals=self.option(broker, message, "rate_max_deferrals"),
            jitter_ms=self.rng.randint(0, min(decision.spacing_ms, MAX_JITTER)),
        )

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._release(message, held=True)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self._release(message, held=False)

    def _release(self, message: Any, *, held: bool) -> None:
        """Give back the leases this delivery took, if any; ``held``: it ran (feed the hold average)."""
        state = scratch(message, _SCRATCH)
        pools: list[LeaseSpec] | None = state.pop("pools", None)
        if not pools:
            return
        self.renewer.drop(message.message_id)
        held_ms = int((time.monotonic() - state.pop("started")) * 1000) if held else None
        try:
            self.backend.window_release(message.message_id, pools, held_ms)
        except BackendError as exc:
            self.outage.failed(exc, action="let leases expire by themselves")
        else:
            self.outage.succeeded()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.renewer.stop()

    # -- inspection -------------------------------------------------------------------

    def inspect(self, limit: str | None = None, key: str | None = None) -> list[WindowUsage]:
        """Current use of every limit key with state, optionally one limit's or one key's.

        Limit names are the ``name=`` given, or ``<actor>.rate_limits[<i>]`` and
        ``<actor>.rate_concurrency[<i>]`` for unnamed limits.
        """
        return self.backend.window_inspect(limit, key)
