"""dramatiq-resilience: Dramatiq middlewares for flaky, slow, rate-limited and duplicating dependencies.

Importing this package has no side effects: nothing connects, binds or
creates files until you build and use its objects.
"""

from __future__ import annotations

from .backends import DEFAULT_NAMESPACE, RedisBackend, StateBackend, StubBackend
from .backends.breaker import BreakerStatus, BreakerTransition
from .backends.dedup import DedupRecord
from .backends.window import WindowUsage
from .breakers import Breakers, BreakerSettings
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
    CircuitOpenOnSend,
    ConfigurationError,
    CorruptDedupRecord,
    CorruptRecord,
    DeferralFailed,
    Deferred,
    DepthUnavailable,
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
    UnknownJob,
)
from .events import Event, emit, subscribe, unsubscribe
from .install import Stack, install, installed
from .limits import Concurrency, Limit
from .middleware.backpressure import Backpressure
from .middleware.base import ResilienceMiddleware
from .middleware.breaker import CircuitBreaker
from .middleware.dead_letters import DeadLetters
from .middleware.dedup import Deduplication
from .middleware.dedup_claims import Claim, current_claim
from .middleware.dedup_enqueue import send_unique, send_unique_with_options
from .middleware.guard import RetryGuard
from .middleware.limiter import SlidingWindowLimiter
from .observability import (
    HealthPolicy,
    HealthReport,
    HealthScorer,
    Metrics,
    ObservabilityServer,
    SentryReporter,
)
from .queue_depth import QueueDepth, read_queue_depths
from .scheduling import (
    CronJob,
    CronJobs,
    Scan,
    ScanContext,
    Scheduler,
    Scheduling,
    cron,
    register_scan,
    schedule,
)
from .thresholds import QueueStatus, Thresholds

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMESPACE",
    "BackendError",
    "BackendUnavailable",
    "Backpressure",
    "BreakerSettings",
    "BreakerStatus",
    "BreakerTransition",
    "Breakers",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitOpenOnSend",
    "Claim",
    "Clock",
    "Concurrency",
    "ConfigurationError",
    "CorruptDedupRecord",
    "CorruptRecord",
    "CronJob",
    "CronJobs",
    "DeadLetterFilter",
    "DeadLetterPage",
    "DeadLetterRecord",
    "DeadLetterStats",
    "DeadLetterStore",
    "DeadLetters",
    "DedupRecord",
    "Deduplication",
    "DeferralFailed",
    "Deferred",
    "DepthUnavailable",
    "DuplicateMessage",
    "DuplicateSkipped",
    "Event",
    "FakeClock",
    "HealthPolicy",
    "HealthReport",
    "HealthScorer",
    "IdempotencyConflict",
    "InvalidMessage",
    "LeaseLost",
    "Limit",
    "Metrics",
    "ObservabilityServer",
    "QueueDepth",
    "QueueOverloaded",
    "QueueStatus",
    "RedisBackend",
    "RedrivePolicy",
    "Rejected",
    "ResilienceError",
    "ResilienceMiddleware",
    "RetryGuard",
    "Scan",
    "ScanContext",
    "Scheduler",
    "Scheduling",
    "SentryReporter",
    "SlidingWindowLimiter",
    "Stack",
    "StateBackend",
    "StubBackend",
    "SystemClock",
    "Thresholds",
    "TooManyDeferrals",
    "UniqueEnqueueUnavailable",
    "UnknownJob",
    "UnreadableRecord",
    "WindowUsage",
    "__version__",
    "cron",
    "current_claim",
    "defer",
    "emit",
    "enqueue_origin",
    "install",
    "installed",
    "internal_enqueue",
    "is_producer_send",
    "read_queue_depths",
    "register_scan",
    "schedule",
    "send_unique",
    "send_unique_with_options",
    "subscribe",
    "unsubscribe",
]
