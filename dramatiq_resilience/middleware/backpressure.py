"""Backpressure: warn, slow or refuse producers when a queue is past its depth thresholds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import q_name
from dramatiq.logging import get_logger

from ..backends.base import StateBackend
from ..backends.stub import StubBackend
from ..breaker_local import MonotonicClock
from ..clock import Clock, SystemClock
from ..depth_cache import DepthCache
from ..enqueue import enqueue_origin
from ..errors import ConfigurationError
from ..options import Option, boolean, choice, milliseconds, non_negative_int
from ..queue_depth import DepthReader, QueueDepth, depth_reader
from ..thresholds import CRITICAL, EMERGENCY, QueueStatus, Thresholds, ThresholdTable, queue_statuses
from .backpressure_policy import Policies, slowdown
from .backpressure_refusals import BreakerGate, announce, refuse_overloaded
from .backpressure_watch import LevelWatch
from .base import ResilienceMiddleware

__all__ = [
    "DEFAULT_CACHE_MS",
    "DEFAULT_LOG_INTERVAL",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MAX_WAIT",
    "NOT_BEFORE",
    "Backpressure",
]

#: Milliseconds a queue-depth reading is trusted in process.
DEFAULT_CACHE_MS = 1_000

#: Milliseconds a send waits, at most, while its queue is critical (``on_critical="wait"``).
DEFAULT_MAX_WAIT = 1_000

#: Milliseconds a message is held back, at most, while its queue is critical (``on_critical="delay"``).
DEFAULT_MAX_DELAY = 30_000

#: Milliseconds between log reminders while a queue stays above normal.
DEFAULT_LOG_INTERVAL = 60_000

#: The message option a delayed enqueue writes: run no earlier than this (ms since the epoch).
NOT_BEFORE = "backpressure_not_before"


class Backpressure(ResilienceMiddleware):
    """Middleware that warns, slows or refuses producers' sends when a queue is past its depth thresholds.

    A producer's ``send`` to a queue at or past its ``warning`` threshold
    passes (the level change is logged and announced); past ``critical`` it
    is slowed; past ``emergency`` it raises :class:`QueueOverloaded`.
    Retries, deferrals, delayed-message moves, scheduler sends, redrives and
    the sends of other middlewares' after-hooks (pipelines, callbacks) are
    never slowed nor refused.  Depths are read from the broker and cached
    per process.  Position: before ``Deduplication`` (``install()`` puts it
    before the breaker), so that a refused send takes no reservation.

    Parameters:
      thresholds: canonical queue name to :class:`Thresholds` (or a dict of
        ``warning``/``critical``/``emergency``; ``None`` leaves a queue unchecked).
      default: the thresholds of every other queue (default ``None``: unchecked).
      cache_ms: milliseconds a depth reading is trusted in process (default
        1 000; 0 reads the broker on every send).
      on_critical: ``"wait"`` (default): ``send`` waits, proportionally to how far
        the depth is past critical, up to ``max_wait``; ``"delay"``: ``send``
        returns at once and the message runs no earlier than ``max_delay``
        times that proportion from now.  Actor option ``backpressure_on_critical``.
      max_wait: milliseconds (default 1 000).  Actor option ``backpressure_max_wait``.
      max_delay: milliseconds (default 30 000).  Actor option ``backpressure_max_delay``.
      exempt: never slow nor refuse (default ``False``).  Actor option ``backpressure_exempt``.
      refuse_open_breaker: ``send`` raises :class:`CircuitOpenOnSend` while the
        actor's circuit breaker is open (default ``False``).  Actor option
        ``backpressure_refuse_open_breaker``.
      log_interval: milliseconds between log reminders while a queue stays
        above normal (default 60 000).
      backend: accepted so that ``install()`` builds every piece alike; unused
        (depths come from the broker, breaker states from the breaker's backend).
      clock: tests only: the time of cache lifetimes and of delayed enqueues.
      sleep: tests only: replaces ``time.sleep`` (seconds) for the critical wait.
      reader: tests only: where depths come from (default: the broker's).
    """

    option_specs = (
        Option("backpressure_exempt", "exempt", boolean),
        Option("backpressure_on_critical", "on_critical", choice("wait", "delay")),
        Option("backpressure_max_wait", "max_wait", milliseconds(minimum=0)),
        Option("backpressure_max_delay", "max_delay", milliseconds(minimum=0)),
        Option("backpressure_refuse_open_breaker", "refuse_open_breaker", boolean),
    )

    def __init__(
        self,
        *,
        thresholds: Mapping[str, Thresholds | Mapping[str, Any] | None] | None = None,
        default: Thresholds | Mapping[str, Any] | None = None,
        cache_ms: int = DEFAULT_CACHE_MS,
        on_critical: str = "wait",
        max_wait: int = DEFAULT_MAX_WAIT,
        max_delay: int = DEFAULT_MAX_DELAY,
        exempt: bool = False,
        refuse_open_breaker: bool = False,
        log_interval: int = DEFAULT_LOG_INTERVAL,
        backend: StateBackend | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
        reader: DepthReader | None = None,
    ) -> None:
        super().__init__(backend=backend if backend is not None else StubBackend(), on_backend_error="allow")
        self.logger = get_logger(__name__, type(self))
        self.table = ThresholdTable(thresholds, default)
        self.exempt, self.on_critical, self.refuse_open_breaker = exempt, on_critical, refuse_open_breaker
        self.max_wait, self.max_delay = max_wait, max_delay
        self.check_defaults()
        if thresholds is None and default is None and not self.refuse_open_breaker:
            raise ConfigurationError(
                "Backpressure needs thresholds: thresholds={queue_name: Thresholds(...)} and/or "
                "default=Thresholds(...) (or refuse_open_breaker=True)",
                option="thresholds",
            )
        self.cache_ms = self._check_default("cache_ms", non_negative_int, cache_ms)
        self.log_interval = self._check_default("log_interval", milliseconds(), log_interval)
        self.clock: Clock = clock or MonotonicClock()
        self.wall: Clock = clock or SystemClock()
        self._sleep = sleep or time.sleep
        self._reader = reader
        self._cache: DepthCache | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._broker: Broker | None = None
        self.policies = Policies(self.option_specs, self)
        self.watch = LevelWatch(self.table, self.logger, clock=self.clock, log_interval=self.log_interval)
        self.gate = BreakerGate(
            clock=self.clock, cache_ms=self.cache_ms, outage=self.outage, logger=self.logger
        )

    # -- configuration ----------------------------------------------------------------

    def thresholds_for(self, queue_name: str) -> Thresholds | None:
        """The thresholds of ``queue_name`` (``.DQ`` stripped), or ``None`` when it is unchecked."""
        return self.table.get(q_name(queue_name))

    def validate_actor(self, broker: Broker, actor: Any) -> None:
        self._broker = self._broker or broker
        self.policies.forget(actor.actor_name)

    # -- depths -----------------------------------------------------------------------

    def depths(self, broker: Broker | None = None) -> DepthCache:
        """This process's depth cache (built on first use from the broker's reader)."""
        cache = self._cache
        if cache is None:
            with self._lock:
                if self._cache is None:
                    broker = broker or self._broker
                    if broker is None and self._reader is None:
                        raise ConfigurationError(
                            "Backpressure does not know its broker yet: pass broker=", option="broker"
                        )
                    self._broker = self._broker or broker
                    self._warn_if_after_dedup(broker)
                    self._cache = DepthCache(
                        self._reader or depth_reader(broker),  # type: ignore[arg-type]
                        cache_ms=self.cache_ms,
                        clock=self.clock,
                        on_read=self.watch.seen,
                        on_error=self.watch.failed,
                    )
                cache = self._cache
        return cache

    def _warn_if_after_dedup(self, broker: Broker | None) -> None:
        names = [type(m).__name__ for m in getattr(broker, "middleware", ())]
        mine = type(self).__name__
        if "Deduplication" in names and mine in names and names.index("Deduplication") < names.index(mine):
            self.logger.warning(
                "Backpressure is placed after Deduplication: a refused unique send keeps its "
                "reservation until it times out. Add Backpressure before Deduplication (install() does)."
            )

    def depth(self, queue_name: str) -> QueueDepth | None:
        """The cached depth of ``queue_name`` (read if older than ``cache_ms``); ``None`` if unreadable."""
        return self.depths().get(q_name(queue_name))

    def level(self, queue_name: str) -> str | None:
        """The level a send to ``queue_name`` meets now; ``None`` if it is unchecked or unreadable.

        From the cached reading plus the messages this process enqueued to it since.
        """
        thresholds = self.thresholds_for(queue_name)
        depth = self.depths().estimate(q_name(queue_name)) if thresholds is not None else None
        return None if thresholds is None or depth is None else thresholds.level(depth)

    def status(
        self, queue_names: Iterable[str] | None = None, *, broker: Broker | None = None
    ) -> list[QueueStatus]:
        """Read each queue's depth now and report it with its level and thresholds.

        ``queue_names`` defaults to the queues named in ``thresholds`` and
        every queue the broker knows.  A failed read is reported in each
        status's ``error``, not raised.
        """
        cache = self.depths(broker)
        return queue_statuses(cache.read, cache.reader.queues, self.table, queue_names)

    # -- the enqueue side ---------------------------------------------------------------

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        if getattr(self._local, "finishing", False):
            return  # sent by an after-hook of a finished message (pipelines, callbacks): never refused
        if enqueue_origin(message) != "send":
            return
        policy = self.policies.of_message(broker, message)
        if policy.exempt:
            return
        queue_name = q_name(message.queue_name)
        if policy.refuse_open_breaker:
            self.gate.check(broker, message, queue_name)
        thresholds = self.table.get(queue_name)
        if thresholds is None:
            return
        depth = self.depths(broker).estimate(queue_name)
        if depth is None:
            return
        level = thresholds.level(depth)
        if level == EMERGENCY:
            refuse_overloaded(message, queue_name, depth, thresholds.emergency)  # type: ignore[arg-type]
        elif level == CRITICAL:
            wait, held = slowdown(policy, thresholds, depth)
            self._slow(message, queue_name, depth, thresholds, wait=wait, held=held)

    def after_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        cache = self._cache
        # A delayed message moved to its queue leaves the delay queue: the depth is unchanged.
        if cache is not None and enqueue_origin(message) != "delayed_move":
            cache.note_enqueued(q_name(message.queue_name))

    def _slow(
        self, message: Any, queue_name: str, depth: int, thresholds: Thresholds, *, wait: int, held: int
    ) -> None:
        if not wait and not held:
            return
        if held:
            message.options[NOT_BEFORE] = self.wall.now_ms() + held
        announce(
            "backpressure_slowed",
            message,
            queue_name,
            mode="wait" if wait else "delay",
            depth=depth,
            threshold=thresholds.critical,
            wait_ms=wait,
            delay_ms=held,
        )
        if wait:
            self._sleep(wait / 1000)

    # -- the worker side ----------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        self._local.finishing = False
        not_before = message.options.get(NOT_BEFORE)
        if isinstance(not_before, int) and not isinstance(not_before, bool):
            remaining = not_before - self.wall.now_ms()
            if remaining > 0:  # a delayed enqueue that arrived early: hold it back, retries untouched
                self.defer(broker, message, delay_ms=remaining, reason="backpressure")

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        # Pipelines and Callbacks send from their after-hooks, which run after this
        # one; refusing those sends would lose the next step.
        self._local.finishing = True

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self._local.finishing = True

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the depth reader's own connections (RabbitMQ)."""
        if self._cache is not None:
            self._cache.reader.close()
