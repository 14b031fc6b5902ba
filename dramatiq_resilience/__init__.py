"""dramatiq-resilience: Dramatiq middlewares for flaky, slow, rate-limited and duplicating dependencies.

Importing this package has no side effects: nothing connects, binds or
creates files until you build and use its objects.
"""

from __future__ import annotations

from .backends import DEFAULT_NAMESPACE, RedisBackend, StateBackend, StubBackend
from .backends.window import WindowUsage
from .clock import Clock, FakeClock, SystemClock
from .dead_letters import (
    DeadLetterFilter,
    DeadLetterPage,
    DeadLetterRecord,
    DeadLetterStats,
    DeadLetterStore,
    RedrivePolicy,
    UnreadableRecord,
)
from .deferral import defer
from .enqueue import enqueue_origin, internal_enqueue, is_producer_send
from .errors import (
    BackendError,
    BackendUnavailable,
    CircuitOpen,
    ConfigurationError,
    CorruptRecord,
    DeferralFailed,
    Deferred,
    DuplicateMessage,
    IdempotencyConflict,
    InvalidMessage,
    QueueOverloaded,
    Rejected,
    ResilienceError,
    TooManyDeferrals,
)
from .events import Event, emit, subscribe, unsubscribe
from .install import Stack, install, installed
from .limits import Concurrency, Limit
from .middleware.base import ResilienceMiddleware
from .middleware.dead_letters import DeadLetters
from .middleware.guard import RetryGuard
from .middleware.limiter import SlidingWindowLimiter

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMESPACE",
    "BackendError",
    "BackendUnavailable",
    "CircuitOpen",
    "Clock",
    "Concurrency",
    "ConfigurationError",
    "CorruptRecord",
    "DeadLetterFilter",
    "DeadLetterPage",
    "DeadLetterRecord",
    "DeadLetterStats",
    "DeadLetterStore",
    "DeadLetters",
    "DeferralFailed",
    "Deferred",
    "DuplicateMessage",
    "Event",
    "FakeClock",
    "IdempotencyConflict",
    "InvalidMessage",
    "Limit",
    "QueueOverloaded",
    "RedisBackend",
    "RedrivePolicy",
    "Rejected",
    "ResilienceError",
    "ResilienceMiddleware",
    "RetryGuard",
    "SlidingWindowLimiter",
    "Stack",
    "StateBackend",
    "StubBackend",
    "SystemClock",
    "TooManyDeferrals",
    "UnreadableRecord",
    "WindowUsage",
    "__version__",
    "defer",
    "emit",
    "enqueue_origin",
    "install",
    "installed",
    "internal_enqueue",
    "is_producer_send",
    "subscribe",
    "unsubscribe",
]
