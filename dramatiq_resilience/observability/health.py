"""HealthScorer: one 0-100 score per actor, per queue and overall, from cluster-wide inputs."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import q_name

from .. import events
from ..backends.base import StateBackend
from ..backends.health import field_name
from ..errors import BackendError
from ..middleware.base import ResilienceMiddleware
from ..options import milliseconds
from .health_inputs import DEFAULT_BUCKET, DEFAULT_FLUSH_MS, FORGET_AFTER, gather
from .health_policy import HealthPolicy
from .health_report import HealthReport
from .health_scan import register_health_scan  # noqa: F401 - registers the health scan
from .health_score import score
from .outcomes import FAILED, REJECTED, RETRIED, SUCCESS, OutcomeTracker, expected

__all__ = ["DEFAULT_CACHE_MS", "HealthScorer", "scorer_of"]

#: Milliseconds a report is reused by scrapes of ``/metrics`` and ``/health``.
DEFAULT_CACHE_MS = 1_000


def scorer_of(broker: Broker) -> HealthScorer | None:
    """The ``HealthScorer`` on ``broker``, if any."""
    return next((m for m in broker.middleware if isinstance(m, HealthScorer)), None)


class HealthScorer(OutcomeTracker, ResilienceMiddleware):
    """Middleware that scores health 0-100 per actor, per queue and overall (see :mod:`.health_policy`).

    In each worker process it counts outcomes per queue and actor in memory
    and sends them to the backend once every ``flush_ms`` with a heartbeat (one
    round trip per interval, none per message), so any process can score the
    whole cluster: :meth:`evaluate` reads breaker states, those counts, the
    dead-letter store, queue depths and worker liveness.  It registers the
    ``health`` scan, which evaluates every 15 s (``Scheduling(scan_every=
    {"health": ms})``), publishes the report (queue depths included, for readers without a broker) and emits
    ``health_evaluated``, and ``health_changed`` when the overall status changes.

    Position: with ``Metrics``, before every middleware whose before-hook may
    raise (``install()`` puts it there).

    Parameters:
      backend: the state backend.
      policy: a :class:`HealthPolicy` or a dict of its settings (weights,
        thresholds, bands, ``window`` in ms).
      flush_ms: milliseconds between two flushes of this process's counts (default 5 000).
      bucket_ms: milliseconds of one bucket of counts (default 10 000).
      cache_ms: milliseconds a report is reused by :meth:`report` (default 1 000).
    """

    scratch_owner = "health"

    def __init__(
        self,
        *,
        backend: StateBackend,
        policy: HealthPolicy | Mapping[str, Any] | None = None,
        flush_ms: int = DEFAULT_FLUSH_MS,
        bucket_ms: int = DEFAULT_BUCKET,
        cache_ms: int = DEFAULT_CACHE_MS,
    ) -> None:
        ResilienceMiddleware.__init__(self, backend=backend, on_backend_error="allow")
        OutcomeTracker.__init__(self)
        self.policy = HealthPolicy.from_mapping(policy)
        self.flush_ms = self._check_default("flush_ms", milliseconds(minimum=100), flush_ms)
        self.bucket_ms = self._check_default("bucket_ms", milliseconds(minimum=1_000), bucket_ms)
        self.cache_ms = self._check_default("cache_ms", milliseconds(minimum=0), cache_ms)
        self.broker: Broker | None = None
        self.process = ""
        self.queues: list[str] = []
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._info_sent = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cached: tuple[float, HealthReport] | None = None

    # -- counting -----------------------------------------------------------------------

    def before_declare_actor(self, broker: Broker, actor: Any) -> None:
        self.broker = broker
        super().before_declare_actor(broker, actor)

    def delivered(self, broker: Broker, message: Any, outcome: str, exception: BaseException | None) -> None:
        queue_name = q_name(message.queue_name)
        kinds = []
        if outcome == SUCCESS:
            kinds.append("success")
        elif outcome in (RETRIED, FAILED):
            kinds.append("expected" if expected(broker, message, exception) else "failure")
        if outcome in (FAILED, REJECTED):
            kinds.append("dead_lettered")
        if not kinds:
            return
        with self._counts_lock:
            for kind in kinds:
                name = field_name(queue_name, message.actor_name, kind)
                self._counts[name] = self._counts.get(name, 0) + 1

    def flush(self, *, stopped: bool = False) -> bool:
        """Send this process's counts and a heartbeat now; ``False`` if the backend failed (counts kept)."""
        with self._flush_lock:
            with self._counts_lock:
                counts, self._counts = self._counts, {}
            if not self.process:
                self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
            info = None
            if stopped or not self._info_sent:
                info = {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "queues": self.queues,
                    "flush_ms": self.flush_ms,
                    "stopped": stopped,
                }
            try:
                self.backend.health_record(
                    self.process,
                    counts,
                    bucket_ms=self.bucket_ms,
                    retention_ms=self.policy.window + 2 * self.bucket_ms,
                    forget_after_ms=FORGET_AFTER,
                    info=info,
                )
            except BackendError as exc:
                with self._counts_lock:
                    for name, count in counts.items():
                        self._counts[name] = self._counts.get(name, 0) + count
                self.outage.failed(exc, action="keep its counts for the next flush")
                return False
            self._info_sent = True
            self.outage.succeeded()
            return True

    # -- life cycle ------------------------------------------------------------------------

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.broker = broker
        whitelist = getattr(worker, "consumer_whitelist", None)
        self.queues = sorted({q_name(name) for name in (whitelist or broker.get_declared_queues())})
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._info_sent = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dramatiq-resilience-health", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush(stopped=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_ms / 1000):
            self.flush()

    # -- scoring ------------------------------------------------------------------------------

    def evaluate(self, broker: Broker | None = None) -> HealthReport:
        """Score the cluster now (``broker``: where queue depths and actors come from)."""
        from ..dead_letters.store import DeadLetterStore
        from ..install import installed

        broker = broker or self.broker
        stack = installed(broker) if broker is not None else None
        piece = stack.middleware.get("dead_letters") if stack is not None else None
        store = getattr(piece, "store", None) or DeadLetterStore(self.backend)
        inputs = gather(self.backend, self.policy, broker=broker, store=store, bucket_ms=self.bucket_ms)
        report = score(inputs, self.policy)
        self._cached = (time.monotonic(), report)
        return report

    def report(self, broker: Broker | None = None) -> HealthReport:
        """The latest report if younger than ``cache_ms``, else a new one (for scrapes)."""
        cached = self._cached
        if cached is not None and (time.monotonic() - cached[0]) * 1000 < self.cache_ms:
            return cached[1]
        return self.evaluate(broker)

    def publish(self, report: HealthReport) -> str | None:
        """Publish ``report`` for readers without a broker; announce a change of the overall status.

        Returns the status it replaced (``None`` if there was none).
        """
        from .health_scan import scan_interval

        payload = json.dumps(report.to_dict(), sort_keys=True).encode()
        ttl = 3 * scan_interval(self.broker)
        previous = self.backend.health_publish(payload, status=report.status, ttl_ms=ttl)
        events.emit("health_evaluated", score=report.score, status=report.status, previous_status=previous)
        if previous is not None and previous != report.status:
            reasons = "; ".join(p.detail for p in report.overall.penalties) or "nothing wrong"
            log = self.logger.info if report.status == "healthy" else self.logger.warning
            log("Health went from %s to %s (score %.1f): %s.", previous, report.status, report.score, reasons)
            events.emit(
                "health_changed",
                from_status=previous,
                to_status=report.status,
                score=report.score,
                penalties=[p.to_dict() for p in report.overall.penalties],
            )
        return previous
