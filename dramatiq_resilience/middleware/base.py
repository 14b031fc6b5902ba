"""What every dramatiq-resilience middleware shares."""

from __future__ import annotations

import math
import random
from typing import Any, ClassVar, NoReturn

from dramatiq.broker import Broker
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware, TimeLimit

from ..backends.base import StateBackend
from ..deferral import announce_rejection, defer
from ..errors import BackendError, ConfigurationError, InvalidMessage, Rejected
from ..options import Option, choice, lookup, milliseconds, validate_actor_options
from ..outage import OutageLog

__all__ = ["DEFAULT_BACKEND_RETRY_DELAY", "DEFAULT_TIME_LIMIT", "ResilienceMiddleware", "scratch"]

#: Milliseconds a message waits when ``on_backend_error="defer"`` and the
#: backend is unreachable.
DEFAULT_BACKEND_RETRY_DELAY = 5_000

#: Dramatiq's ``TimeLimit`` default in milliseconds, used when the broker has none.
DEFAULT_TIME_LIMIT = 600_000

_on_backend_error = choice("allow", "defer")


def scratch(message: Any, owner: str) -> dict[str, Any]:
    """Per-delivery state of ``owner`` (a middleware name) on a message being processed.

    What a middleware takes in ``before_process_message`` (a probe slot, a
    claim, a lease) and must settle in ``after_process_message`` or release
    in ``after_skip_message`` lives here, on the ``MessageProxy`` of this
    delivery.  Not in ``message.options``: those are re-enqueued by retries.
    """
    store: dict[str, dict[str, Any]] = vars(message).setdefault("_dramatiq_resilience", {})
    return store.setdefault(owner, {})


class ResilienceMiddleware(Middleware):
    """Base class: option specs, validation, lookup, rejection and backend-error policy.

    Subclasses list their actor options in :attr:`option_specs`; each option's
    default is the middleware attribute named by ``Option.attr``.  Options are
    validated when the middleware is built (defaults) and when an actor is
    declared (actor options); bad values raise ``ConfigurationError`` naming
    the actor, the option and the problem.

    Parameters:
      backend: the state backend.
      on_backend_error: ``"allow"`` runs the message when the backend is
        unreachable, ``"defer"`` puts it back for ``backend_retry_delay``
        milliseconds.  Each outage is logged once and counted.
      backend_retry_delay: milliseconds (default 5 000).
    """

    #: The actor options this middleware reads.
    option_specs: ClassVar[tuple[Option, ...]] = ()

    def __init__(
        self,
        *,
        backend: StateBackend,
        on_backend_error: str,
        backend_retry_delay: int = DEFAULT_BACKEND_RETRY_DELAY,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        if not isinstance(backend, StateBackend):
            raise ConfigurationError(
                f"must be a StateBackend (RedisBackend or StubBackend), got {backend!r}", option="backend"
            )
        self.backend = backend
        self.on_backend_error = self._check_default("on_backend_error", _on_backend_error, on_backend_error)
        self.backend_retry_delay = self._check_default(
            "backend_retry_delay", milliseconds(), backend_retry_delay
        )
        self.outage = OutageLog(type(self).__name__, self.logger)
        self.rng = random.Random()
        self._specs = {spec.name: spec for spec in self.option_specs}

    # -- options ----------------------------------------------------------------

    @staticmethod
    def _check_default(name: str, check: Any, value: Any) -> Any:
        try:
            return check(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(str(exc), option=name) from None

    def check_defaults(self) -> None:
        """Validate and normalize the constructor defaults of every option.

        Subclasses call this at the end of ``__init__``.
        """
        for spec in self.option_specs:
            value = getattr(self, spec.attr)
            try:
                setattr(self, spec.attr, spec.check(value))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{exc} (the default {spec.attr}=)", option=spec.name) from None

    @property
    def actor_options(self) -> set[str]:
        return set(self._specs)

    def before_declare_actor(self, broker: Broker, actor: Any) -> None:
        validate_actor_options(self.option_specs, actor.options, actor_name=actor.actor_name)
        self.validate_actor(broker, actor)

    def validate_actor(self, broker: Broker, actor: Any) -> None:
        """Cross-option checks at declaration; raise ``ConfigurationError``.  Override."""

    def option(self, broker: Broker, message: Any, name: str) -> Any:
        """Resolve option ``name`` for ``message``: message > actor > default.

        A bad per-message value rejects the message (dead-letters it with
        :class:`InvalidMessage`): it would fail the same way on every retry.
        """
        try:
            return self.resolve_option(broker, message, name)
        except ConfigurationError as exc:
            self.reject(
                message,
                InvalidMessage(
                    str(exc),
                    actor_name=message.actor_name,
                    message_id=message.message_id,
                    option=name,
                    problem=exc.problem,
                ),
            )

    def resolve_option(self, broker: Broker, message: Any, name: str) -> Any:
        """Resolve option ``name`` like :meth:`option`, raising ``ConfigurationError`` instead of rejecting.

        For hooks where a message cannot be rejected: ``before_enqueue`` (the
        error reaches the producer), after-hooks.
        """
        spec = self._specs[name]
        actor = broker.get_actor(message.actor_name)
        return lookup(
            spec,
            message_options=message.options,
            actor_options=actor.options,
            default=getattr(self, spec.attr),
            actor_name=actor.actor_name,
        )

    def time_limit(self, broker: Broker, message: Any) -> int:
        """The time limit Dramatiq gives ``message``, in milliseconds.

        Its ``time_limit`` option, else its actor's, else the ``TimeLimit``
        middleware's (600 000 without one); ``None`` counts as unset.  A value
        that is not a positive number rejects the message
        (:class:`InvalidMessage`): Dramatiq's ``TimeLimit`` would swallow the
        error and run it without a limit, and every retry would carry it.
        """
        actor = broker.get_actor(message.actor_name)
        for options in (message.options, actor.options):
            value = options.get("time_limit")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                text = repr(value)
                shown = text if len(text) <= 60 else text[:57] + "..."
                problem = f"must be a positive number of milliseconds, got {shown}"
                self.reject(
                    message,
                    InvalidMessage(
                        f"Actor {message.actor_name!r}, option 'time_limit': {problem}",
                        actor_name=message.actor_name,
                        message_id=message.message_id,
                        option="time_limit",
                        problem=problem,
                    ),
                )
            return math.ceil(value)
        limiter = next((m for m in broker.middleware if isinstance(m, TimeLimit)), None)
        return math.ceil(limiter.time_limit) if limiter is not None else DEFAULT_TIME_LIMIT

    def actor_option(self, broker: Broker, actor_name: str, name: str) -> Any:
        """Resolve option ``name`` for an actor (actor > default), without a message."""
        spec = self._specs[name]
        actor = broker.get_actor(actor_name)
        return lookup(
            spec, message_options=None, actor_options=actor.options, default=getattr(self, spec.attr)
        )

    # -- decisions ----------------------------------------------------------------

    def reject(self, message: Any, error: Rejected) -> NoReturn:
        """Dead-letter ``message`` without running it, with ``error`` as the reason."""
        message.fail()
        self.logger.warning("Rejecting message %r: %s", message.message_id, error)
        announce_rejection(message, error)
        raise error

    def defer(
        self,
        broker: Broker,
        message: Any,
        *,
        delay_ms: int,
        reason: str,
        max_deferrals: int | None = None,
        jitter_ms: int | None = None,
    ) -> NoReturn:
        """Defer ``message``; see :func:`dramatiq_resilience.deferral.defer`."""
        defer(
            broker,
            message,
            delay_ms=delay_ms,
            reason=reason,
            max_deferrals=max_deferrals,
            jitter_ms=jitter_ms,
            rng=self.rng,
        )

    def backend_failed(self, broker: Broker, message: Any, error: BackendError) -> None:
        """Apply ``on_backend_error`` to ``message`` after the backend failed.

        Returns when the policy is ``"allow"`` (run the message); defers it
        (raising) when the policy is ``"defer"``.
        """
        action = "run messages" if self.on_backend_error == "allow" else "defer messages"
        self.outage.failed(error, action=action)
        if self.on_backend_error == "defer":
            self.defer(broker, message, delay_ms=self.backend_retry_delay, reason="backend_unavailable")
