"""Metrics: Prometheus series for every delivery and every resilience decision, exact across processes."""

from __future__ import annotations

import os
import threading
from typing import Any

from dramatiq.broker import Broker
from dramatiq.logging import get_logger

from .. import events
from .listeners import EVENT_METRICS, start_counting, stop_counting
from .metrics import metric
from .outcomes import OutcomeTracker
from .runs import current_run, in_dramatiq_worker, prepare_run
from .sinks import FileSink, MemorySink, Sink

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MULTIPROC_ENV", "Metrics"]

#: Where the metrics endpoint binds by default: this host only.
DEFAULT_HOST = "127.0.0.1"

#: The metrics endpoint's default port.
DEFAULT_PORT = 9192

#: prometheus_client's multiprocess directory variable, honoured when set.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

MESSAGES = metric("messages")
DURATION = metric("message_duration_seconds")
IN_PROGRESS = metric("messages_in_progress")


class Metrics(OutcomeTracker):
    """Middleware that counts every delivery's outcome and every resilience decision for Prometheus.

    Each process counts what it does: the outcome of each delivery (see
    :mod:`~dramatiq_resilience.observability.outcomes`), its processing time,
    and every resilience event (deferrals, refusals, transitions, dead
    letters, cron runs, scans, backend errors...).  Where the counts go is
    decided when the process starts using it:

    * in a process of the ``dramatiq`` command: files of the run's directory
      (:mod:`~dramatiq_resilience.observability.runs`), merged by whoever
      serves ``/metrics``, so ``--processes N`` counts exactly;
    * elsewhere (tests, an in-process worker, a producer): prometheus_client
      metrics in process memory (:attr:`registry`).

    Nothing is created when the middleware is built: no file, no port, no
    thread.  Cluster-wide gauges (breaker states, queue depths, health) are
    read when ``/metrics`` is scraped, not counted here.

    Position: before every middleware whose before-hook may raise (``install()``
    puts it right after ``RetryGuard`` and ``Scheduling``, which never raise), so
    that its before-hook sees every delivery.  By hand:
    ``broker.middleware.insert(0, dr.Metrics())`` before actors are declared.

    Parameters:
      directory: the multiprocess directory to write to (default: the run's
        directory under ``dramatiq``; ``$PROMETHEUS_MULTIPROC_DIR`` if set).
      registry: the ``prometheus_client.CollectorRegistry`` of in-process
        mode (default: a private one).
      expose: serve ``/metrics`` and ``/health`` from a fork of the
        ``dramatiq`` main process (default ``False``; ``dramatiq-resilience
        serve`` does the same from outside).
      host: where the fork binds (default ``127.0.0.1``).
      port: the fork's port (default 9192).
    """

    scratch_owner = "metrics"

    def __init__(
        self,
        *,
        directory: str | None = None,
        registry: Any = None,
        expose: bool = False,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
    ) -> None:
        super().__init__()
        self.logger = get_logger(__name__, type(self))
        self.directory = directory
        self._registry = registry
        self.expose = bool(expose)
        self.host = host
        self.port = int(port)
        self._lock = threading.Lock()
        self._sink: Sink | None = None
        self._counting = False

    # -- where counts go ---------------------------------------------------------------

    def multiprocess_directory(self) -> str | None:
        """The directory this process writes (or would write) to; ``None`` in in-process mode."""
        if self.directory:
            return self.directory
        if not in_dramatiq_worker():
            return None
        configured = os.environ.get(MULTIPROC_ENV)
        if configured:
            return configured
        run = current_run()
        return None if run is None else run.directory

    @property
    def sink(self) -> Sink:
        """Where this process counts (decided, and listeners subscribed, on first use)."""
        sink = self._sink
        if sink is None:
            sink = self.start()
        return sink

    @property
    def registry(self) -> Any:
        """The in-process ``CollectorRegistry`` (``None`` when counting into files)."""
        sink = self.sink
        return sink.registry if isinstance(sink, MemorySink) else None

    @property
    def started_registry(self) -> Any:
        """The in-process registry if this process already counts in memory (nothing is started)."""
        sink = self._sink
        return sink.registry if isinstance(sink, MemorySink) else None

    def start(self) -> Sink:
        """Decide where counts go and subscribe to events (idempotent; hooks call it)."""
        with self._lock:
            sink = self._sink
            if sink is None:
                sink = self._sink = self._new_sink()
            if not self._counting:
                start_counting(self)
                self._counting = True
            return sink

    def _new_sink(self) -> Sink:
        directory = self.multiprocess_directory()
        if directory is None:
            return MemorySink(self._registry)
        run = current_run() if not self.directory and MULTIPROC_ENV not in os.environ else None
        if run is not None:
            prepare_run(run)
        self.logger.debug("Counting metrics in %r.", directory)
        return FileSink(directory)

    def count_event(self, event: events.Event) -> None:
        """Count one resilience event (see :data:`~.listeners.EVENT_METRICS`)."""
        sink = self._sink
        counting = EVENT_METRICS.get(event.name)
        if sink is None or counting is None:
            return
        counting(sink, event.fields)
        if event.name == "message_deferred":
            self.note_deferral(event)

    def stop(self) -> None:
        """Unsubscribe and release this process's files (the in-process registry keeps its counts)."""
        with self._lock:
            if self._counting:
                stop_counting(self)
                self._counting = False
            if isinstance(self._sink, FileSink):
                self._sink.close()
                self._sink = None

    # -- life cycle -----------------------------------------------------------------------

    def after_process_boot(self, broker: Broker) -> None:
        self.start()

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.start()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.stop()

    def before_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        if self._sink is None:  # a producer: count the decisions made at enqueue time
            self.start()

    @property
    def forks(self) -> list[Any]:
        if not self.expose:
            return []
        from .fork import serve_metrics_fork

        return [serve_metrics_fork]

    # -- per delivery ------------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if self._sink is None:
            self.start()
        super().before_process_message(broker, message)

    def started(self, queue_name: str, actor_name: str) -> None:
        self.sink.inc(IN_PROGRESS, (queue_name, actor_name))

    def finished(self, queue_name: str, actor_name: str, seconds: float | None) -> None:
        sink = self.sink
        sink.inc(IN_PROGRESS, (queue_name, actor_name), -1.0)
        if seconds is not None:
            sink.observe(DURATION, (queue_name, actor_name), seconds)

    def delivered(self, broker: Broker, message: Any, outcome: str, exception: BaseException | None) -> None:
        from dramatiq.common import q_name

        self.sink.inc(MESSAGES, (q_name(message.queue_name), message.actor_name, outcome))
