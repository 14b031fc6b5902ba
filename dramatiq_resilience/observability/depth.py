"""Queue depths read from the broker: ready, delayed (``.DQ``) and dead (``.XQ``) messages per queue."""

from __future__ import annotations

from typing import Any

from dramatiq.common import dq_name, q_name, xq_name

from .health_report import QueueDepth

__all__ = ["queue_depths", "queue_names"]


def _kinds(broker: Any) -> set[str]:
    return {cls.__name__ for cls in type(broker).__mro__}


def queue_names(broker: Any) -> list[str]:
    """The broker's declared queues, canonical (``.DQ``/``.XQ`` names folded into their queue)."""
    return sorted({q_name(name) for name in broker.get_declared_queues()})


def queue_depths(broker: Any) -> dict[str, QueueDepth]:
    """Depths of every declared queue: one pipelined round trip on Redis, three declarations per
    queue on RabbitMQ (passive counts), memory on the StubBroker; ``{}`` for other brokers."""
    names = queue_names(broker)
    kinds = _kinds(broker)
    if not names:
        return {}
    if "RedisBroker" in kinds:
        pipe = broker.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(f"{broker.namespace}:{name}")
            pipe.llen(f"{broker.namespace}:{dq_name(name)}")
            pipe.zcard(f"{broker.namespace}:{xq_name(name)}")
        values = pipe.execute()
        return {
            name: QueueDepth(int(values[3 * i]), int(values[3 * i + 1]), int(values[3 * i + 2]))
            for i, name in enumerate(names)
        }
    if "RabbitmqBroker" in kinds:
        return {name: QueueDepth(*broker.get_queue_message_counts(name)) for name in names}
    if "StubBroker" in kinds:
        depths = {}
        for name in names:
            ready = broker.queues.get(name)
            delayed = broker.queues.get(dq_name(name))
            depths[name] = QueueDepth(
                ready.qsize() if ready is not None else 0,
                delayed.qsize() if delayed is not None else 0,
                len(broker.dead_letters_by_queue.get(name, ())),
            )
        return depths
    return {}
