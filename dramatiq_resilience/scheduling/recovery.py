"""The built-in recovery scans.

=======================  ========  ===============================================
scan                     every     what it does, where it applies
=======================  ========  ===============================================
``dead_workers``         15 s      requeues the messages held by dead RedisBroker
                                   workers (:mod:`.dead_workers`); RedisBroker only
``stalled``              60 s      reports messages running longer than
                                   ``stalled_after`` (``message_stalled`` events),
                                   from the workers' in-flight snapshots
``dead_letters_trim``    10 min    applies dead-letter retention
                                   (``store.trim()``); with ``DeadLetters``
``dead_letters_redrive`` 30 s      requeues what the redrive policies say is due
                                   (``store.redrive_due(broker)``); with
                                   ``DeadLetters`` and at least one policy
``dead_letters_import``  60 s      moves the broker's own dead-letter queues
                                   (``<queue>.XQ``) into the store
                                   (``store.import_from(broker)``); with
                                   ``DeadLetters`` on a Redis, RabbitMQ or Stub broker
=======================  ========  ===============================================

The dead-letter scans call the store of the ``DeadLetters`` piece that
``install()`` put on the broker (``stack.middleware["dead_letters"].store``).
"""

from __future__ import annotations

from typing import Any

from dramatiq.broker import Broker
from dramatiq.logging import get_logger

from .. import events
from ..broker_kind import broker_kind
from .scans import ScanContext, register_scan

__all__ = ["DEFAULT_STALLED_AFTER", "register_builtin_scans", "stalled_after"]

logger = get_logger(__name__)

#: Milliseconds after which a running message counts as stalled.
DEFAULT_STALLED_AFTER = 300_000


def _is_redis_broker(broker: Broker) -> bool:
    return broker_kind(broker) == "redis"


def _dead_workers(context: ScanContext) -> dict[str, int]:
    from .dead_workers import recover_dead_workers

    recovery = recover_dead_workers(context.broker, context.backend)
    return {"dead_workers": len(recovery.dead_workers), "requeued": recovery.messages}


def stalled_after(context: ScanContext, actor_name: str) -> int | None:
    """The stalled threshold of ``actor_name`` in milliseconds (actor option ``scan_stalled_after``)."""
    settings = context.settings
    default = DEFAULT_STALLED_AFTER if settings is None else settings.stalled_after
    actor = context.broker.actors.get(actor_name)
    if actor is not None and "scan_stalled_after" in actor.options:
        return actor.options["scan_stalled_after"]
    return default


def _stalled(context: ScanContext) -> dict[str, int]:
    snapshots = context.backend.cron_inflight()
    running = stalled = 0
    for snapshot in snapshots:
        for message in snapshot.messages:
            running += 1
            threshold = stalled_after(context, message.actor_name)
            elapsed = context.now_ms - message.started_ms
            if threshold is None or elapsed < threshold:
                continue
            stalled += 1
            logger.warning(
                "Message %r of actor %r on queue %r has been running for %d milliseconds in process %r "
                "(stalled after %d).",
                message.message_id,
                message.actor_name,
                message.queue_name,
                elapsed,
                snapshot.process,
                threshold,
            )
            events.emit(
                "message_stalled",
                actor_name=message.actor_name,
                queue_name=message.queue_name,
                message_id=message.message_id,
                running_ms=elapsed,
                process=snapshot.process,
            )
    return {"processes": len(snapshots), "running": running, "stalled": stalled}


def _dead_letter_store(broker: Broker) -> Any:
    from ..install import installed

    stack = installed(broker)
    piece = None if stack is None else stack.middleware.get("dead_letters")
    return getattr(piece, "store", None)


def _has_dead_letters(broker: Broker) -> bool:
    return _dead_letter_store(broker) is not None


def _has_redrive_policies(broker: Broker) -> bool:
    return bool(getattr(_dead_letter_store(broker), "redrive", ()))


def _can_import(broker: Broker) -> bool:
    return _has_dead_letters(broker) and broker_kind(broker) is not None


def _trim(context: ScanContext) -> dict[str, int]:
    report = _dead_letter_store(context.broker).trim()
    return {
        "removed": report.removed,
        "by_age": report.by_age,
        "by_count": report.by_count,
        "released_claims": report.released_claims,
    }


def _redrive(context: ScanContext) -> dict[str, int]:
    report = _dead_letter_store(context.broker).redrive_due(context.broker)
    return {"requeued": report.requeued, "policies": len(report.policies)}


def _import(context: ScanContext) -> dict[str, int]:
    report = _dead_letter_store(context.broker).import_from(context.broker)
    return {
        "imported": report.imported,
        "already_stored": report.already_stored,
        "queues": len(report.queues),
    }


def register_builtin_scans() -> None:
    """Register the scans of the table above (idempotent)."""
    register_scan(
        "dead_workers",
        _dead_workers,
        every=15_000,
        applies=_is_redis_broker,
        description="requeue messages held by dead RedisBroker workers",
    )
    register_scan(
        "stalled", _stalled, every=60_000, description="report messages running longer than stalled_after"
    )
    register_scan(
        "dead_letters_trim",
        _trim,
        every=600_000,
        applies=_has_dead_letters,
        time_limit=300_000,
        description="apply dead-letter retention",
    )
    register_scan(
        "dead_letters_redrive",
        _redrive,
        every=30_000,
        applies=_has_redrive_policies,
        time_limit=300_000,
        description="requeue dead letters whose redrive policy is due",
    )
    register_scan(
        "dead_letters_import",
        _import,
        every=60_000,
        applies=_can_import,
        time_limit=300_000,
        description="import the broker's own dead-letter queues into the store",
    )
