"""dramatiq-resilience: Dramatiq middlewares for flaky, slow, rate-limited and duplicating dependencies.

Importing this package has no side effects: nothing connects, binds or
creates files until you build and use its objects.
"""

from __future__ import annotations

from .backends import DEFAULT_NAMESPACE, RedisBackend, StateBackend, StubBackend
from .backends.dedup import DedupRecord
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
    DuplicateSkipped,
    IdempotencyConflict,
    InvalidMessage,
    LeaseLost,
    QueueOverloaded,
    Rejected,
    ResilienceError,
    TooManyDeferrals,
    UniqueEnqueueUnavailable,
)
from .events import Event, emit, subscribe, unsubscribe
from .install import Stack, install, installed
from .middleware.base import ResilienceMiddleware
from .middleware.dedup import Deduplication
from .middleware.dedup_claims import Claim, current_claim
from .middleware.dedup_enqueue import send_unique, send_unique_with_options
from .middleware.guard import RetryGuard

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMESPACE",
    "BackendError",
    "BackendUnavailable",
    "CircuitOpen",
    "Claim",
    "Clock",
    "ConfigurationError",
    "CorruptRecord",
    "DedupRecord",
    "Deduplication",
    "DeferralFailed",
    "Deferred",
    "DuplicateMessage",
    "DuplicateSkipped",
    "Event",
    "FakeClock",
    "IdempotencyConflict",
    "InvalidMessage",
    "LeaseLost",
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
    "UniqueEnqueueUnavailable",
    "__version__",
    "current_claim",
    "defer",
    "emit",
    "enqueue_origin",
    "install",
    "installed",
    "internal_enqueue",
    "is_producer_send",
    "send_unique",
    "send_unique_with_options",
    "subscribe",
    "unsubscribe",
]
