"""One process's view of its breakers: a bounded cache, batched outcomes, and a notice listener.

A healthy (closed) breaker costs no Redis round trip per message:

* **Cache.**  A closed state is trusted for ``cache_ms`` milliseconds; an open
  state until its half-open moment; a half-open state never (probe permits
  are always taken in the backend).  ``cache_ms=0`` turns the cache off.
* **Batches.**  Outcomes of closed-state calls are counted in process and
  sent as one ``breaker_record`` every ``flush_every`` outcomes or
  ``flush_ms`` milliseconds, and at once on a failure or a slow call (either
  may trip the breaker) or on a success while a failure streak is known.
  Each batch carries its epoch (dropped by the backend if the breaker has
  moved on) and the time of its latest success, converted to backend time,
  so that a success sent late never erases the failures recorded after it.
  A flush answers the breaker's new state, which refreshes the cache.
* **Notices.**  Every transition is published by the backend; a listener
  thread (started lazily in the worker process, stopped at shutdown) drops
  the cached state of a breaker when another process changed it, and sends
  batches that waited too long.  When its connection was lost it drops every
  cached state, since notices may have been missed, and reconnects by itself.
  Its connection is tracked by an outage log of its own: pub/sub working says
  nothing about scripts working, and the other way round.  A malformed notice
  is logged and skipped (every cached state is dropped: it may have been a
  transition), any other error is logged and survived, and :meth:`start`
  restarts a listener thread that died anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backends.base import StateBackend
from .backends.breaker import (
    CLOSED,
    FORCED_CLOSED,
    FORCED_OPEN,
    OPEN,
    BreakerDecision,
    BreakerSubscription,
    BreakerTransition,
    ppm,
)
from .breakers import BreakerSettings
from .clock import Clock
from .errors import BackendError
from .outage import OutageLog

__all__ = ["Admission", "LocalBreakers", "MonotonicClock"]

#: Milliseconds the listener waits after losing the backend before it reconnects.
RECONNECT_DELAY = 500

#: Milliseconds the listener waits for notices before it looks at old batches
#: (waiting costs no Redis command: it is a select() on the pub/sub socket).
LISTEN_TICK = 100

logger = logging.getLogger(__name__)


class MonotonicClock:
    """Milliseconds of ``time.monotonic()``: for local durations and cache lifetimes."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


@dataclass(frozen=True)
class Admission:
    """May a message run?  What :meth:`LocalBreakers.admit` answers.

    Attributes:
      allowed: run it (closed, or a probe permit was taken).
      state, epoch: the breaker's state and epoch it was admitted (or refused) in.
      retry_after_ms: when refused, milliseconds to wait.
      probe: the message holds a probe permit.
      checked_at_ms: the backend time of the check, or ``None`` when the cache answered.
    """

    allowed: bool
    state: str
    epoch: int
    retry_after_ms: int = 0
    probe: bool = False
    checked_at_ms: int | None = None


@dataclass
class _Entry:
    state: str
    epoch: int
    expires: int  # local ms
    retry_after_ms: int = 0  # forced open: how long to wait


@dataclass
class _Batch:
    epoch: int
    settings: BreakerSettings
    first: int  # local ms of the first outcome
    calls: int = 0
    failures: int = 0
    slow: int = 0
    last_success: int = 0  # local ms, 0 = none


@dataclass
class _Process:
    """Everything that must not survive a fork."""

    pid: int = field(default_factory=os.getpid)
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[str, _Entry] = field(default_factory=dict)
    batches: dict[str, _Batch] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)
    registered: set[str] = field(default_factory=set)
    origin: str = field(default_factory=lambda: f"{os.getpid()}:{uuid.uuid4().hex[:12]}")
    offset: int = 0  # backend ms minus local ms
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # the current thread's; one per thread
    ready: threading.Event = field(default_factory=threading.Event)
    known: dict[str, BreakerDecision] = field(default_factory=dict)
    listener_errors: int = 0  # unexpected listener errors in a row (logged once per streak)


class LocalBreakers:
    """The breakers of one process: see the module docstring.

    Parameters:
      backend: the state backend.
      clock: local time for durations and cache lifetimes (default: monotonic).
      cache_ms: milliseconds a closed state is trusted (0: ask every time).
      flush_every: send a batch after this many outcomes.
      flush_ms: send a batch at most this many milliseconds after its first outcome.
      describe: ``describe(name)`` gives the registry info of a breaker.
      on_transition: called with ``(transition, local)`` for transitions this
        process made (``local=True``) and for notices of others' (``False``).
      outage: where backend errors of scripts (checks, records, flushes) are
        logged; shared with the middleware.  Only a script's success ends it.
      listener_outage: where errors of the notice subscription are logged
        (default: a log of its own, component ``"CircuitBreaker notice listener"``).
    """

    def __init__(
        self,
        backend: StateBackend,
        *,
        clock: Clock | None = None,
        cache_ms: int = 1_000,
        flush_every: int = 100,
        flush_ms: int = 1_000,
        describe: Callable[[str], dict[str, Any]] = lambda name: {},
        on_transition: Callable[[BreakerTransition, bool], None] = lambda transition, local: None,
        outage: OutageLog | None = None,
        listener_outage: OutageLog | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock or MonotonicClock()
        self.cache_ms = cache_ms
        self.flush_every = flush_every
        self.flush_ms = flush_ms
        self.describe = describe
        self.on_transition = on_transition
        self.outage = outage or OutageLog("CircuitBreaker", logger)
        self.listener_outage = listener_outage or OutageLog("CircuitBreaker notice listener", logger)
        self._process = _Process()

    @property
    def _local(self) -> _Process:
        """This process's state; a forked child starts afresh (locks and threads do not survive fork)."""
        process = self._process
        if process.pid != os.getpid():
            process = self._process = _Process()
        return process

    @property
    def origin(self) -> str:
        return self._local.origin

    # -- admission --------------------------------------------------------------------

    def cached(self, name: str) -> Admission | None:
        """The cache's answer for ``name``, or ``None`` when the backend must be asked."""
        entry = self._local.entries.get(name)
        if entry is None:
            return None
        now = self.clock.now_ms()
        if now >= entry.expires:
            return None
        if entry.state in (CLOSED, FORCED_CLOSED):
            return Admission(True, entry.state, entry.epoch)
        if entry.state == OPEN:
            return Admission(False, OPEN, entry.epoch, retry_after_ms=entry.expires - now)
        return Admission(False, entry.state, entry.epoch, retry_after_ms=entry.retry_after_ms)

    def check(self, name: str, settings: BreakerSettings, *, member: str, lease_ms: int) -> Admission:
        """Ask the backend whether a message may run; take a probe permit in half-open.

        Raises:
          BackendError: the backend failed.
        """
        local = self._local
        self._register(name)
        before = self.clock.now_ms()
        decision = self.backend.breaker_check(
            name, settings=settings, member=member, lease_ms=lease_ms, origin=local.origin
        )
        local.offset = decision.now_ms - (before + self.clock.now_ms()) // 2
        self._learn(name, decision)
        return Admission(
            decision.allowed,
            decision.state,
            decision.epoch,
            retry_after_ms=decision.retry_after_ms,
            probe=decision.probe,
            checked_at_ms=decision.now_ms,
        )

    # -- outcomes ---------------------------------------------------------------------

    def record(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        epoch: int,
        outcome: str,
        slow: bool = False,
        probe: str | None = None,
        now: int | None = None,
    ) -> None:
        """Record one call's ``outcome`` (``success``, ``failure`` or ``ignored``), at local ``now``.

        A probe's outcome goes to the backend at once (an ignored probe
        releases its permit; a slow one fails the probe when the breaker
        counts slow calls); other outcomes are batched.

        Raises:
          BackendError: the backend failed (the batch is dropped).
        """
        if probe is not None:
            decision = self.backend.breaker_record(
                name,
                settings=settings,
                epoch=epoch,
                slow=int(slow),
                probe=probe,
                probe_outcome="release" if outcome == "ignored" else outcome,
                origin=self._local.origin,
            )
            self._learn(name, decision)
            return
        if outcome == "ignored":
            return
        local = self._local
        now = self.clock.now_ms() if now is None else now
        with local.lock:
            batch = local.batches.get(name)
            if batch is not None and epoch < batch.epoch:
                return  # admitted before a transition the batch already knows: the backend would drop it
            if batch is None or batch.epoch < epoch:
                # A batch of an older epoch would be dropped by the backend anyway.
                batch = local.batches[name] = _Batch(epoch=epoch, settings=settings, first=now)
            batch.calls += 1
            batch.slow += slow
            if outcome == "failure":
                batch.failures += 1
            else:
                batch.last_success = now
            due = (
                outcome == "failure"
                or local.streaks.get(name, 0) > 0
                or batch.calls >= self.flush_every
                or now - batch.first >= self.flush_ms
                or self._could_trip(local.known.get(name), batch)
            )
            if not due:
                return
            del local.batches[name]
        self._send(name, batch)

    @staticmethod
    def _could_trip(known: BreakerDecision | None, batch: _Batch) -> bool:
        """Whether the window (as last seen) plus this batch may reach a rate threshold."""
        settings = batch.settings
        calls = batch.calls + (known.calls if known else 0)
        if calls < settings.min_calls:
            return False
        failures = batch.failures + (known.failures if known else 0)
        slow = batch.slow + (known.slow if known else 0)
        rate, slow_rate = ppm(settings.failure_rate), ppm(settings.slow_call_rate)
        return (rate > 0 and failures * 1_000_000 >= rate * calls) or (
            slow_rate > 0 and settings.slow_call_ms is not None and slow * 1_000_000 >= slow_rate * calls
        )

    def release(self, name: str, settings: BreakerSettings, *, epoch: int, probe: str) -> None:
        """Give back a probe permit taken for a message that did not run."""
        self.record(name, settings, epoch=epoch, outcome="ignored", probe=probe)

    def _send(self, name: str, batch: _Batch) -> None:
        local = self._local
        last_success = batch.last_success + local.offset if batch.last_success else 0
        decision = self.backend.breaker_record(
            name,
            settings=batch.settings,
            epoch=batch.epoch,
            calls=batch.calls,
            failures=batch.failures,
            slow=batch.slow,
            last_success_ms=last_success,
            origin=local.origin,
        )
        self._learn(name, decision)

    def flush(self, *, older_than_ms: int = 0) -> int:
        """Send every batch (or only those whose first outcome is ``older_than_ms`` old); return how many.

        Raises:
          BackendError: the backend failed (the remaining batches are kept).
        """
        local = self._local
        now = self.clock.now_ms()
        with local.lock:
            due = [name for name, batch in local.batches.items() if now - batch.first >= older_than_ms]
            batches = [(name, local.batches.pop(name)) for name in due]
        for index, (name, batch) in enumerate(batches):
            try:
                self._register(name)
                self._send(name, batch)
            except BackendError:
                with local.lock:
                    for unsent_name, unsent in batches[index:]:
                        local.batches.setdefault(unsent_name, unsent)
                raise
        return len(batches)

    # -- what the backend said --------------------------------------------------------

    def _learn(self, name: str, decision: BreakerDecision) -> None:
        """Cache what the backend answered, and announce a transition this process made."""
        local = self._local
        now = self.clock.now_ms()
        if decision.state in (CLOSED, FORCED_CLOSED):
            expires = now + self.cache_ms
        elif decision.state == OPEN and self.cache_ms > 0:
            expires = now + decision.retry_after_ms
        elif decision.state == FORCED_OPEN:
            expires = now + self.cache_ms
        else:
            expires = now
        with local.lock:
            current = local.entries.get(name)
            # Older news never overwrites newer; a re-created breaker (Redis lost it) starts again at 0.
            if current is None or current.epoch <= decision.epoch or decision.created:
                local.entries[name] = _Entry(decision.state, decision.epoch, expires, decision.retry_after_ms)
                local.streaks[name] = decision.consecutive
                if decision.applied or decision.transition is not None:
                    local.known[name] = decision
        if decision.created:
            local.registered.discard(name)
        if decision.transition is not None:
            self.on_transition(decision.transition, True)

    def _register(self, name: str) -> None:
        local = self._local
        if name in local.registered:
            return
        self.backend.breaker_register(name, self.describe(name))
        local.registered.add(name)

    def forget_cache(self, name: str | None = None) -> None:
        """Drop the cached state of ``name`` (or of every breaker)."""
        local = self._local
        with local.lock:
            if name is None:
                local.entries.clear()
            else:
                local.entries.pop(name, None)

    # -- the listener -----------------------------------------------------------------

    def start(self) -> None:
        """Start the notice listener in this process; again if its thread died."""
        local = self._local
        thread = local.thread
        if thread is not None and thread.is_alive():
            return
        with local.lock:
            thread = local.thread
            if thread is not None and thread.is_alive():
                return
            if thread is not None:
                logger.warning("The breaker notice listener thread had died; starting it again.")
            # A fresh event per thread: a thread that stop() gave up waiting for keeps its own set.
            stop = local.stop = threading.Event()
            local.thread = threading.Thread(
                target=self._listen, args=(local, stop), name="dramatiq-resilience-breakers", daemon=True
            )
            local.thread.start()

    @property
    def listening(self) -> bool:
        thread = self._local.thread
        return thread is not None and thread.is_alive()

    def wait_listening(self, timeout: float) -> bool:
        """Wait until the listener is subscribed (for tests and demos); return whether it is."""
        return self._local.ready.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the listener (it sends no more batches; call :meth:`flush` for that)."""
        local = self._local
        thread = local.thread
        local.stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        local.thread = None
        local.ready.clear()

    def _listen(self, local: _Process, stop: threading.Event) -> None:
        tick = max(10, min(self.flush_ms, LISTEN_TICK))
        subscription: BreakerSubscription | None = None
        try:
            while not stop.is_set():
                try:
                    if subscription is None:
                        subscription = self.backend.breaker_subscribe()
                    self._listen_once(local, stop, subscription, tick)
                except Exception:
                    # Not an outage (those are BackendError, handled inside): a bug or
                    # a reply we do not understand.  Notices may have been lost, so
                    # the cache goes; the subscription starts afresh.
                    local.ready.clear()
                    self.forget_cache()
                    local.listener_errors += 1
                    if local.listener_errors == 1:
                        logger.exception(
                            "The breaker notice listener failed; it dropped the cached breaker states and "
                            "goes on. Further failures are counted, not logged, until it works again."
                        )
                    if subscription is not None:
                        subscription.close()
                        subscription = None
                    stop.wait(RECONNECT_DELAY / 1000)
        finally:
            if subscription is not None:
                subscription.close()

    def _listen_once(
        self, local: _Process, stop: threading.Event, subscription: BreakerSubscription, tick: int
    ) -> None:
        """One round of the listener: wait ``tick`` ms for notices, apply them, send old batches."""
        try:
            notices = subscription.poll(tick)
        except BackendError as exc:
            local.ready.clear()
            self.listener_outage.failed(exc, action="trust cached breaker states for at most cache_ms")
            self.forget_cache()
            stop.wait(RECONNECT_DELAY / 1000)
            return
        self.listener_outage.succeeded()
        if local.listener_errors:
            logger.info("The breaker notice listener works again after %d failures.", local.listener_errors)
            local.listener_errors = 0
        if notices.resubscribed:
            self.forget_cache()
            local.ready.set()
        if notices.malformed:
            self.forget_cache()  # a notice we cannot read may have been a transition
            for problem in notices.malformed:
                logger.warning(
                    "Skipping a malformed breaker notice (every cached breaker state was dropped): %s",
                    problem,
                )
        for transition in notices.transitions:
            self._notice(local, transition)
        try:
            if self.flush(older_than_ms=self.flush_ms):
                self.outage.succeeded()
        except BackendError as exc:
            self.outage.failed(exc, action="keep its batched outcomes")

    def _notice(self, local: _Process, transition: BreakerTransition) -> None:
        if transition.origin == local.origin:
            return
        with local.lock:
            entry = local.entries.get(transition.breaker)
            if entry is not None and entry.epoch < transition.epoch:
                del local.entries[transition.breaker]
        self.on_transition(transition, False)
