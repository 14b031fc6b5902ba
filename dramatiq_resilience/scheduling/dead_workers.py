"""Deterministic recovery of the messages held by dead RedisBroker workers.

A RedisBroker worker moves each message it fetches into an ack set,
``<ns>:__acks__.<worker id>.<queue>``, until it acks it.  If the worker dies,
the messages stay there.  Dramatiq puts them back during "maintenance", which
runs with a 0.1% chance per broker command (``maintenance_chance=1000`` per
million) and only for the queue of that command: minutes, sometimes much
more.  This scan does it on every run:

1. one script lists the workers whose heartbeat (``<ns>:__heartbeats__``, the
   time of their last broker command) is older than the broker's
   ``heartbeat_timeout``; usually none, and the scan ends there;
2. otherwise a ``SCAN MATCH <ns>:__acks__.*`` finds those workers' ack sets
   (Dramatiq builds the keys inside its script, so they cannot be derived
   from the queue list alone);
3. one script per ack set, with every key passed in, checks the heartbeat
   again and moves the messages back to the end of their queue (a ``.DQ``
   ack set goes back to the delay queue), then forgets the worker.

A worker counts as dead exactly as Dramatiq's own maintenance decides it: no
broker command for ``heartbeat_timeout`` ms.  A live worker sends one at least
every second (its consumers poll), so only a dead or frozen process is affected.
"""

from __future__ import annotations

import re
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from dramatiq.common import q_name
from dramatiq.logging import get_logger
from redis.commands.core import Script

from .. import events
from ..backends.redis_base import script_source

__all__ = ["Recovery", "recover_dead_workers"]

logger = get_logger(__name__)

_scripts: weakref.WeakKeyDictionary[Any, dict[str, Script]] = weakref.WeakKeyDictionary()


@dataclass
class Recovery:
    """What one recovery run did: dead workers handled and messages requeued by queue."""

    dead_workers: list[str] = field(default_factory=list)
    requeued: dict[str, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(self.requeued.values())


def _script(client: Any, name: str) -> Script:
    scripts = _scripts.setdefault(client, {})
    if name not in scripts:
        scripts[name] = client.register_script(script_source(name))
    return scripts[name]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def recover_dead_workers(broker: Any, *, now_ms: int | None = None) -> Recovery:
    """Requeue every message held by the dead workers of RedisBroker ``broker``.

    Parameters:
      broker: a ``dramatiq.brokers.redis.RedisBroker``.
      now_ms: the time to judge heartbeats by, in milliseconds (default: the
        broker Redis server's clock).
    """
    client = broker.client
    namespace = broker.namespace
    timeout = int(broker.heartbeat_timeout)
    now = "" if now_ms is None else str(now_ms)
    heartbeats = f"{namespace}:__heartbeats__"
    report = Recovery()
    dead = {_text(w) for w in _script(client, "broker_dead_workers")(keys=[heartbeats], args=[now, timeout])}
    if not dead:
        return report
    prefix = f"{namespace}:__acks__."
    ack_sets: dict[str, list[str]] = defaultdict(list)
    for key in client.scan_iter(match=re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*", count=1000):
        worker, _, queue = _text(key)[len(prefix) :].partition(".")
        if worker in dead and queue:
            ack_sets[worker].append(queue)
    requeue = _script(client, "broker_requeue_acks")
    for worker in sorted(dead):
        queues = sorted(ack_sets.get(worker, []))
        alive = False
        for index, queue in enumerate(queues):
            last = "1" if index == len(queues) - 1 else "0"
            keys = [
                heartbeats,
                f"{prefix}{worker}.{queue}",
                f"{namespace}:{queue}",
                f"{namespace}:{queue}.msgs",
            ]
            moved = int(requeue(keys=keys, args=[now, worker, timeout, last]))
            if moved < 0:
                alive = True
                break
            if moved:
                report.requeued[queue] = report.requeued.get(queue, 0) + moved
                logger.warning(
                    "Requeued %d message(s) of dead worker %r on queue %r (silent for %d milliseconds).",
                    moved,
                    worker,
                    queue,
                    timeout,
                )
                events.emit(
                    "dead_worker_recovered", worker_id=worker, queue_name=q_name(queue), messages=moved
                )
        if not queues:
            alive = int(requeue(keys=[heartbeats], args=[now, worker, timeout, "1"])) < 0
        if not alive:
            report.dead_workers.append(worker)
    return report
