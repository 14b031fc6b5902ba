"""Deterministic recovery of the messages held by dead RedisBroker workers.

A RedisBroker worker moves each message it fetches into an ack set,
``<ns>:__acks__.<worker id>.<queue>``, until it acks it.  If the worker dies,
the messages stay there.  Dramatiq puts them back during "maintenance", which
runs with a 0.1% chance per broker command (``maintenance_chance=1000`` per
million) and only for the queue of that command: minutes, sometimes much
more.  This scan does it on every run:

1. it reads the heartbeats (``<ns>:__heartbeats__``: each worker scored by the
   time of its last broker command, *on that worker's clock*) and hands the
   scores to the state backend (``broker_heartbeats_observe``), which says
   how long each worker's score has stayed the same, on the *backend's*
   clock; a worker is dead once that reaches the broker's
   ``heartbeat_timeout``.  Usually none is, and the scan ends there;
2. otherwise a ``SCAN MATCH <ns>:__acks__.*`` finds those workers' ack sets
   (Dramatiq builds the keys inside its script, so they cannot be derived
   from the queue list alone);
3. one script per ack set, with every key passed in, checks that the worker's
   score is still the silent one and moves the messages back to the end of
   their queue (a ``.DQ`` ack set goes back to the delay queue), then forgets
   the worker.

A score is never compared with a clock, so clock skew between hosts cannot
break liveness: a live worker (its consumers poll, so its score changes at
least every second; the scans' queue always has room to poll) is never taken
for dead however far its clock trails, and a dead one is recovered however
far its clock runs ahead: ``heartbeat_timeout`` after the first scan that saw
its final score, so between ``heartbeat_timeout`` and ``heartbeat_timeout``
plus two intervals after its last command.  Scans run up to about a second
after their tick (an idle worker polls every second), so a scan that finds a
silence due to reach the timeout within :data:`SETTLE_WAIT` waits for it and
looks again, rather than leaving it to the next scan one interval later.
"""

from __future__ import annotations

import re
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dramatiq.common import q_name
from dramatiq.logging import get_logger
from redis.commands.core import Script

from .. import events
from ..backends.base import StateBackend
from ..backends.broker_heartbeats import score_text
from ..backends.redis_base import script_source

__all__ = ["SETTLE_WAIT", "Recovery", "recover_dead_workers"]

logger = get_logger(__name__)

#: Milliseconds a scan waits, at most, for a silence about to reach the heartbeat timeout.
SETTLE_WAIT = 1_000

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


def _score(value: Any) -> str:
    return score_text(float(value))


def broker_identity(broker: Any) -> str:
    """Which broker's heartbeats these are: its Redis server and database, and its namespace.

    Two brokers with one namespace on two Redis servers sharing one state
    backend must not track (and forget) each other's workers.
    """
    kwargs = broker.client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"{where}/{kwargs.get('db', 0)}/{broker.namespace}".replace("{", "(").replace("}", ")")


def _observe(
    client: Any, backend: StateBackend, namespace: str, identity: str
) -> tuple[dict[str, str], dict[str, int]]:
    beats = client.zrange(f"{namespace}:__heartbeats__", 0, -1, withscores=True)
    scores = {_text(worker): _score(score) for worker, score in beats}
    return scores, backend.broker_heartbeats_observe(identity, scores)


def recover_dead_workers(
    broker: Any, backend: StateBackend, *, sleep: Callable[[float], None] = time.sleep
) -> Recovery:
    """Requeue every message held by the dead workers of RedisBroker ``broker``.

    Parameters:
      broker: a ``dramatiq.brokers.redis.RedisBroker``.
      backend: the state backend that tracks the workers' heartbeat scores;
        silences are measured on its clock.
      sleep: how to wait (seconds) for a silence about to reach the timeout
        (tests pass one that moves their fake clock).
    """
    client = broker.client
    namespace = broker.namespace
    timeout = int(broker.heartbeat_timeout)
    heartbeats = f"{namespace}:__heartbeats__"
    report = Recovery()
    identity = broker_identity(broker)
    scores, silences = _observe(client, backend, namespace, identity)
    due = [timeout - silent for silent in silences.values() if 0 < timeout - silent <= SETTLE_WAIT]
    if due:
        sleep(max(due) / 1000)
        scores, silences = _observe(client, backend, namespace, identity)
    dead = {worker: silent for worker, silent in silences.items() if silent >= timeout}
    if not dead:
        return report
    prefix = f"{namespace}:__acks__."
    ack_sets: dict[str, list[str]] = defaultdict(list)
    for key in client.scan_iter(match=re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*", count=1000):
        worker, _, queue = _text(key)[len(prefix) :].partition(".")
        if worker in dead and queue:
            ack_sets[worker].append(queue)
    requeue = _script(client, "broker_requeue_acks")
    for worker, silent in dead.items():
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
            moved = int(requeue(keys=keys, args=["", worker, scores[worker], last]))
            if moved < 0:
                alive = True
                break
            if moved:
                report.requeued[queue] = report.requeued.get(queue, 0) + moved
                logger.warning(
                    "Requeued %d message(s) of dead worker %r on queue %r (its heartbeat has not changed "
                    "for %d milliseconds).",
                    moved,
                    worker,
                    queue,
                    silent,
                )
                events.emit(
                    "dead_worker_recovered", worker_id=worker, queue_name=q_name(queue), messages=moved
                )
        if not queues:
            alive = int(requeue(keys=[heartbeats], args=["", worker, scores[worker], "1"])) < 0
        if not alive:
            report.dead_workers.append(worker)
    return report
