"""Queue depths read from the broker: ready, delayed (``.DQ``) and dead (``.XQ``) messages per queue.

Ready and delayed are counted as :mod:`dramatiq_resilience.queue_depth` counts them for
backpressure (delayed includes the messages that workers hold until their eta), so that
health, metrics and backpressure agree on a queue's depth.
"""

from __future__ import annotations

from typing import Any

from dramatiq.common import dq_name, q_name, xq_name

from ..broker_kind import broker_kind
from .health_report import QueueDepth

__all__ = ["queue_depths", "queue_names"]


def queue_names(broker: Any) -> list[str]:
    """The broker's declared queues, canonical (``.DQ``/``.XQ`` names folded into their queue)."""
    return sorted({q_name(name) for name in broker.get_declared_queues()})


def queue_depths(broker: Any) -> dict[str, QueueDepth]:
    """Depths of every declared queue: one pipelined round trip on Redis, three declarations per
    queue on RabbitMQ (passive counts), memory on the StubBroker; ``{}`` for other brokers."""
    names = queue_names(broker)
    kind = broker_kind(broker)
    if not names:
        return {}
    if kind == "redis":
        pipe = broker.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(f"{broker.namespace}:{name}")
            pipe.hlen(f"{broker.namespace}:{dq_name(name)}.msgs")
            pipe.zcard(f"{broker.namespace}:{xq_name(name)}")
        values = pipe.execute()
        return {
            name: QueueDepth(int(values[3 * i]), int(values[3 * i + 1]), int(values[3 * i + 2]))
            for i, name in enumerate(names)
        }
    if kind == "rabbitmq":
        return {name: QueueDepth(*broker.get_queue_message_counts(name)) for name in names}
    if kind == "stub":
        depths = {}
        for name in names:
            ready = broker.queues.get(name)
            delayed = broker.queues.get(dq_name(name))
            depths[name] = QueueDepth(
                ready.qsize() if ready is not None else 0,
                delayed.unfinished_tasks if delayed is not None else 0,
                len(broker.dead_letters_by_queue.get(name, ())),
            )
        return depths
    return {}
