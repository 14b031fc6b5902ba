"""Reading the health inputs, cluster-wide, from the state backend and the broker.

* breaker states: the breaker registry and states in the backend (``Breakers``);
* failure rates and new dead letters per queue and actor: the outcome counts
  every worker process flushes to the backend (``health_read``);
* new dead letters overall, and the store's size: ``DeadLetterStore.stats()``;
* queue depths: the broker when there is one, else the depths the latest
  health scan published (``health_snapshot``);
* worker liveness: the processes that flushed recently (each says how often
  it flushes; one unheard of for three flush intervals is not alive).

Each input that cannot be read is named in ``errors``; the others still count.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..backends.base import StateBackend
from ..breakers import Breakers
from ..errors import BackendError
from .health_policy import HealthPolicy
from .health_report import BreakerView, HealthInputs, QueueDepth

__all__ = ["DEFAULT_BUCKET", "DEFAULT_FLUSH_MS", "FORGET_AFTER", "gather"]

logger = logging.getLogger(__name__)

#: Milliseconds of one bucket of outcome counts.
DEFAULT_BUCKET = 10_000

#: Milliseconds between two flushes of a worker process's counts (and heartbeats).
DEFAULT_FLUSH_MS = 5_000

#: Milliseconds after which a silent worker process is forgotten (no longer "known").
FORGET_AFTER = 3_600_000


def breakers_of_actors(broker: Any) -> dict[str, set[str]]:
    """Breaker name -> the broker's actors that use it (as its ``CircuitBreaker`` resolves them)."""
    from ..middleware.breaker import CircuitBreaker

    middleware = next((m for m in broker.middleware if isinstance(m, CircuitBreaker)), None)
    found: dict[str, set[str]] = {}
    if middleware is None:
        return found
    for actor_name, actor in broker.actors.items():
        value = actor.options.get("breaker", middleware.breaker)
        if value is not False:
            found.setdefault(actor_name if value is True else str(value), set()).add(actor_name)
    return found


def _breakers(backend: StateBackend, broker: Any) -> list[BreakerView]:
    local = breakers_of_actors(broker) if broker is not None else {}
    views = []
    for status in Breakers(backend).list():
        state = status.state
        if state == "open" and status.retry_after_ms == 0:
            state = "half_open"  # the cooldown has passed: the next message probes it
        actors = tuple(sorted({*status.actors, *local.get(status.name, ())}))
        views.append(BreakerView(status.name, state, status.state, actors, status.retry_after_ms))
    return views


def _snapshot_depths(backend: StateBackend) -> dict[str, QueueDepth] | None:
    snapshot = backend.health_snapshot()
    if snapshot is None:
        return None
    depths = snapshot.report().get("queue_depths") or {}
    return {name: QueueDepth(**values) for name, values in depths.items()}


def _scan_actors(broker: Any) -> dict[str, str]:
    """The scans' actors that ``broker``'s workers declare, even where none was declared yet."""
    from ..install import installed

    stack = installed(broker)
    piece = stack.middleware.get("scheduling") if stack is not None else None
    scan_queues = getattr(piece, "scan_queues", None)
    return scan_queues(broker) if scan_queues is not None else {}


def gather(
    backend: StateBackend,
    policy: HealthPolicy,
    *,
    broker: Any = None,
    store: Any = None,
    bucket_ms: int = DEFAULT_BUCKET,
) -> HealthInputs:
    """Read every input of the formula (see the module docstring)."""
    inputs = HealthInputs(now_ms=int(time.time() * 1000), window_ms=policy.window)
    try:
        counts = backend.health_read(
            window_ms=policy.window, bucket_ms=bucket_ms, forget_after_ms=FORGET_AFTER
        )
    except BackendError as exc:
        inputs.backend_ok = False
        inputs.errors.append(f"state backend: {exc}")
    else:
        inputs.now_ms = counts.now_ms
        inputs.counts = counts.counts
        inputs.processes = counts.processes
        inputs.alive = sum(
            1
            for p in counts.processes
            if not p.stopped
            and p.last_seen_ms >= counts.now_ms - 3 * int(p.info.get("flush_ms") or DEFAULT_FLUSH_MS)
        )
        try:
            inputs.breakers = _breakers(backend, broker)
        except BackendError as exc:
            inputs.errors.append(f"breakers: {exc}")
        if store is not None:
            try:
                stats = store.stats(window=policy.window)
            except BackendError as exc:
                inputs.errors.append(f"dead letters: {exc}")
            else:
                inputs.dead_letters = {
                    "dead": stats.dead,
                    "claimed": stats.claimed,
                    "requeued": stats.requeued,
                    "recent": stats.recent,
                }
    if broker is not None:
        inputs.actors = {**_scan_actors(broker), **{n: a.queue_name for n, a in broker.actors.items()}}
        try:
            from .depth import queue_depths

            inputs.depths = queue_depths(broker)
            inputs.depth_source = "broker"
        except Exception as exc:
            logger.warning("Could not read queue depths from the broker: %s", exc)
            inputs.errors.append(f"queue depths: {exc}")
    if inputs.depth_source == "none" and inputs.backend_ok:
        try:
            depths = _snapshot_depths(backend)
        except (BackendError, TypeError, ValueError) as exc:
            inputs.errors.append(f"published queue depths: {exc}")
        else:
            if depths is not None:
                inputs.depths = depths
                inputs.depth_source = "snapshot"
    return inputs
