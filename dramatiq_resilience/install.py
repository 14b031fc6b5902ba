"""install(): add the resilience stack to a broker, each piece in its place.

Dramatiq runs ``before_*`` hooks in middleware-list order and ``after_*``
hooks in reverse.  Positions, relative to Dramatiq's default middleware
(``AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines,
Retries``):

==================  ==========================================================
``RetryGuard``      first: its before-hook must see every message, and its
                    after-hook must run after ``Retries``
``Scheduling``      second, for the same reasons: it tracks every delivery and
                    must see whether ``Retries`` re-enqueued a failed cron run
``Metrics``,        next (the hooks before theirs never raise): they see every
``HealthScorer``    delivery, and decide its outcome when the worker acks or
                    rejects it, after every after-hook
pieces that check   before ``Retries``, in the order the registry lists them
before processing   (backpressure, breaker, deduplication, limits), after
                    ``AgeLimit`` so that expired messages take nothing
pieces that must    before ``Retries``: their ``after_process_message`` runs
see final failure   after ``Retries`` has marked the message failed
==================  ==========================================================

Each later piece registers itself in :data:`PIECES`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware, Retries

from .backends.base import StateBackend
from .errors import ConfigurationError
from .middleware.backpressure import Backpressure
from .middleware.breaker import CircuitBreaker
from .middleware.dead_letters import DeadLetters
from .middleware.dedup import Deduplication
from .middleware.guard import RetryGuard
from .middleware.limiter import SlidingWindowLimiter
from .observability.health import HealthScorer
from .observability.metrics_middleware import Metrics
from .observability.sentry import SentryReporter
from .scheduling.middleware import Scheduling

__all__ = ["PIECES", "Piece", "Stack", "install", "installed"]


@dataclass(frozen=True)
class Piece:
    """One switchable part of the stack.

    Parameters:
      name: the ``install()`` keyword that switches it.
      kind: the middleware class.
      build: makes the middleware from the backend and keyword arguments.
      default: whether ``install()`` enables it when not told.
      before_retries: place it before ``Retries`` (else append it).
      first: place it first in the list.
    """

    name: str
    kind: type[Middleware]
    build: Callable[..., Middleware]
    default: bool = True
    before_retries: bool = True
    first: bool = False


#: The registry of pieces, in middleware order.
PIECES: list[Piece] = [
    Piece("guard", RetryGuard, lambda backend, **kwargs: RetryGuard(**kwargs), first=True),
    # Right after the guard: sees every delivery, and its after-hooks run after Retries.
    Piece(
        "scheduling", Scheduling, lambda backend, **kwargs: Scheduling(backend=backend, **kwargs), first=True
    ),
    # Then (before-hooks that never raise run before them): their before-hooks see every
    # delivery, and they decide outcomes when the worker acks or rejects, after every after-hook.
    Piece("metrics", Metrics, lambda backend, **kwargs: Metrics(**kwargs), first=True),
    Piece(
        "health", HealthScorer, lambda backend, **kwargs: HealthScorer(backend=backend, **kwargs), first=True
    ),
    # Off unless configured (it needs thresholds).  Before the breaker and dedup: a
    # refused send takes no unique-enqueue reservation, and a held-back delayed
    # enqueue is deferred before the breaker takes a probe permit.
    Piece(
        "backpressure",
        Backpressure,
        lambda backend, **kwargs: Backpressure(backend=backend, **kwargs),
        default=False,
    ),
    Piece("breaker", CircuitBreaker, lambda backend, **kwargs: CircuitBreaker(backend=backend, **kwargs)),
    Piece("dedup", Deduplication, lambda backend, **kwargs: Deduplication(backend=backend, **kwargs)),
    Piece(
        "limiter",
        SlidingWindowLimiter,
        lambda backend, **kwargs: SlidingWindowLimiter(backend=backend, **kwargs),
    ),
    # Reports final failures (announced by DeadLetters in after_nack, or seen in its own after_nack).
    Piece("sentry", SentryReporter, lambda backend, **kwargs: SentryReporter(**kwargs)),
    # Captures in after_nack, after every after_process_message hook has decided
    # message.failed; before Retries so it sees the retry count before Retries changes it.
    Piece("dead_letters", DeadLetters, lambda backend, **kwargs: DeadLetters(backend=backend, **kwargs)),
]


@dataclass
class Stack:
    """What ``install()`` put on a broker: each enabled piece's middleware by name."""

    broker: Broker
    backend: StateBackend
    middleware: dict[str, Middleware] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["middleware"][name]
        except KeyError:
            raise AttributeError(f"the {name!r} piece is not installed") from None


_stacks: weakref.WeakKeyDictionary[Broker, Stack] = weakref.WeakKeyDictionary()


def installed(broker: Broker) -> Stack | None:
    """The stack ``install()`` put on ``broker``, or ``None``."""
    return _stacks.get(broker)


def _place(broker: Broker, middleware: Middleware, piece: Piece) -> None:
    if piece.first:
        broker.middleware.insert(0, middleware)
        broker.actor_options |= middleware.actor_options
        for actor in broker.actors.values():
            middleware.after_declare_actor(broker, actor)
        return
    if piece.before_retries and any(isinstance(m, Retries) for m in broker.middleware):
        broker.add_middleware(middleware, before=Retries)
    else:
        broker.add_middleware(middleware)


def install(broker: Broker, *, backend: StateBackend, **switches: Any) -> Stack:
    """Add the resilience stack to ``broker``, each piece in its place.

    Call it before actors are declared (their options are validated at
    declaration).  Idempotent: a piece whose middleware type is already on the
    broker is not added again.

    Parameters:
      broker: the Dramatiq broker.
      backend: the state backend every piece shares.
      **switches: one per piece (see :data:`PIECES`): ``True`` for the
        defaults, ``False`` to leave it out, a dict of keyword arguments for
        its constructor, or a ready middleware instance.

    Returns:
      the :class:`Stack`, whose attributes are the installed middleware.
    """
    if not isinstance(backend, StateBackend):
        raise ConfigurationError(
            f"must be a StateBackend (RedisBackend or StubBackend), got {backend!r}", option="backend"
        )
    known = {piece.name for piece in PIECES}
    unknown = sorted(set(switches) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown piece(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}",
            option="install",
        )

    stack = _stacks.get(broker) or Stack(broker=broker, backend=backend)
    # Insert "first" pieces last-to-first so that registry order is kept.
    ordered = [p for p in PIECES if not p.first] + [p for p in reversed(PIECES) if p.first]
    for piece in ordered:
        switch = switches.get(piece.name, piece.default)
        if switch is False or switch is None:
            continue
        existing = next((m for m in broker.middleware if isinstance(m, piece.kind)), None)
        if existing is not None:
            stack.middleware[piece.name] = existing
            continue
        if isinstance(switch, Middleware):
            middleware = switch
        elif switch is True:
            middleware = piece.build(backend)
        elif isinstance(switch, dict):
            middleware = piece.build(backend, **switch)
        else:
            raise ConfigurationError(
                f"must be True, False, a dict of keyword arguments or a middleware, got {switch!r}",
                option=piece.name,
            )
        _place(broker, middleware, piece)
        stack.middleware[piece.name] = middleware

    _stacks[broker] = stack
    return stack
