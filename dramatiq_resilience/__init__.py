"""dramatiq-resilience: Dramatiq middlewares for flaky, slow, rate-limited and duplicating dependencies.

Importing this package has no side effects: nothing connects, binds or
creates files until you build and use its objects.
"""

from __future__ import annotations

from .backends import DEFAULT_NAMESPACE, RedisBackend, StateBackend, StubBackend
from .backends.breaker import BreakerStatus, BreakerTransition
from .breakers import Breakers, BreakerSettings
from .clock import Clock, FakeClock, SystemClock
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
from .middleware.base import ResilienceMiddleware
from .middleware.breaker import CircuitBreaker
from .middleware.guard import RetryGuard

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMESPACE",
    "BackendError",
    "BackendUnavailable",
    "BreakerSettings",
    "BreakerStatus",
    "BreakerTransition",
    "Breakers",
    "CircuitBreaker",
    "CircuitOpen",
    "Clock",
    "ConfigurationError",
    "CorruptRecord",
    "DeferralFailed",
    "Deferred",
    "DuplicateMessage",
    "Event",
    "FakeClock",
    "IdempotencyConflict",
    "InvalidMessage",
    "QueueOverloaded",
    "RedisBackend",
    "Rejected",
    "ResilienceError",
    "ResilienceMiddleware",
    "RetryGuard",
    "Stack",
    "StateBackend",
    "StubBackend",
    "SystemClock",
    "TooManyDeferrals",
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
