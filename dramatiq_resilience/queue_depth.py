"""Reading a queue's depth from the broker: Redis, RabbitMQ and the StubBroker.

A queue's depth is the number of messages waiting in it (``ready``) plus
those waiting in its delay queue (``delayed``: deferred messages, retries
in their backoff, sends with a ``delay``).  Messages that workers have
fetched and are running are not counted; neither are dead letters.

* **RedisBroker**: ``LLEN <ns>:<queue>`` (ids waiting to be fetched) plus
  ``HLEN <ns>:<queue>.DQ.msgs`` (every delayed message, including those a
  worker holds in memory until their eta), the keys laid out by Dramatiq's
  ``brokers/redis.py`` and ``redis/dispatch.lua``.  One pipelined round trip
  reads any number of queues.
* **RabbitmqBroker**: the ``message_count`` of a passive ``queue_declare`` of
  the queue and of its ``.DQ``, on a connection of the reader's own (pika
  connections are not thread-safe, and a passive declare of a missing queue
  closes its channel).  AMQP counts only *ready* messages: delayed messages
  that workers already hold until their eta are not counted.
* **StubBroker**: the in-memory queues (``qsize()`` of the queue, unfinished
  tasks of its delay queue).
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import dq_name, q_name

from .broker_kind import broker_kind
from .errors import ConfigurationError, DepthUnavailable
from .per_process import PerProcess

__all__ = [
    "DepthReader",
    "QueueDepth",
    "RabbitmqDepthReader",
    "RedisDepthReader",
    "StubDepthReader",
    "depth_reader",
    "read_queue_depths",
]


@dataclass(frozen=True)
class QueueDepth:
    """One reading of a queue's depth.

    Attributes:
      queue_name: the canonical queue name.
      ready: messages waiting in the queue.
      delayed: messages waiting in its delay queue.
      read_at_ms: when it was read (this host's clock, ms since the epoch).
    """

    queue_name: str
    ready: int
    delayed: int
    read_at_ms: int

    @property
    def depth(self) -> int:
        """``ready + delayed``: what thresholds compare with."""
        return self.ready + self.delayed

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue_name": self.queue_name,
            "depth": self.depth,
            "ready": self.ready,
            "delayed": self.delayed,
            "read_at_ms": self.read_at_ms,
        }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class DepthReader(abc.ABC):
    """Reads queue depths from one broker.  Thread-safe; usable again after ``fork``."""

    kind = "unknown"

    def __init__(self, broker: Broker) -> None:
        #: The broker (typed loosely: each reader uses its own broker class's attributes).
        self.broker: Any = broker

    @abc.abstractmethod
    def read(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        """The depth of each (canonical) queue; a queue that does not exist has depth 0.

        Raises:
          DepthUnavailable: the broker could not be asked.
        """

    def queues(self) -> list[str]:
        """The canonical names of the queues this reader can find (declared ones at least)."""
        return sorted({q_name(name) for name in self.broker.get_declared_queues()})

    def close(self) -> None:  # noqa: B027 (most readers hold nothing of their own)
        """Release connections of the reader's own (the broker's are left alone)."""


class RedisDepthReader(DepthReader):
    """Depths from a RedisBroker: ``LLEN`` of the queue plus ``HLEN`` of its delay queue's messages."""

    kind = "redis"

    def read(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        import redis

        namespace = self.broker.namespace
        pipe = self.broker.client.pipeline(transaction=False)
        for name in queue_names:
            pipe.llen(f"{namespace}:{name}")
            pipe.hlen(f"{namespace}:{dq_name(name)}.msgs")
        try:
            counts = pipe.execute()
        except redis.RedisError as exc:
            raise DepthUnavailable(
                f"cannot read the depth of queue(s) {', '.join(queue_names)} from Redis: {exc}",
                queue_name=queue_names[0] if queue_names else "",
            ) from exc
        now = _now_ms()
        return {
            name: QueueDepth(name, int(counts[2 * n]), int(counts[2 * n + 1]), now)
            for n, name in enumerate(queue_names)
        }

    def queues(self) -> list[str]:
        """Declared queues, and every queue with messages in Redis (found with ``SCAN``)."""
        import redis

        found = set(super().queues())
        prefix = f"{self.broker.namespace}:"
        try:
            for key in self.broker.client.scan_iter(match=f"{prefix}*.msgs", count=1000):
                name = (key.decode() if isinstance(key, bytes) else str(key))[len(prefix) : -len(".msgs")]
                if not name.startswith("__") and not name.endswith(".XQ"):
                    found.add(q_name(name))
        except redis.RedisError as exc:
            raise DepthUnavailable(f"cannot list queues in Redis: {exc}", queue_name="") from exc
        return sorted(found)


@dataclass
class _AmqpLink:
    """One process's connection and channel (a forked child gets a new one: never the parent's socket)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    connection: Any = None
    channel: Any = None

    def drop(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already closed or broken: nothing to release
                connection.close()


class RabbitmqDepthReader(DepthReader):
    """Depths from a RabbitmqBroker: passive ``queue_declare`` message counts, on a connection of its own."""

    kind = "rabbitmq"

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self._link = PerProcess(_AmqpLink)

    def read(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        import pika.exceptions

        link = self._link.value
        with link.lock:
            for attempt in (1, 2):
                try:
                    counts = {
                        name: (self._count(link, name), self._count(link, dq_name(name)))
                        for name in queue_names
                    }
                    break
                except (pika.exceptions.AMQPError, OSError) as exc:
                    # The server may have closed an idle connection (missed heartbeats): reconnect once.
                    link.drop()
                    if attempt == 2:
                        raise DepthUnavailable(
                            f"cannot read the depth of queue(s) {', '.join(queue_names)} from RabbitMQ: "
                            f"{exc!r}",
                            queue_name=queue_names[0] if queue_names else "",
                        ) from exc
        now = _now_ms()
        return {name: QueueDepth(name, ready, delayed, now) for name, (ready, delayed) in counts.items()}

    def _count(self, link: _AmqpLink, name: str) -> int:
        import pika
        import pika.exceptions

        if link.channel is None or not link.channel.is_open:
            if link.connection is None or not link.connection.is_open:
                link.connection = pika.BlockingConnection(self.broker.parameters)
            link.channel = link.connection.channel()
        try:
            return int(link.channel.queue_declare(name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            link.channel = None
            if exc.reply_code == 404:  # no such queue: nothing waits in it
                return 0
            raise

    def close(self) -> None:
        link = self._link.value
        with link.lock:
            link.drop()


class StubDepthReader(DepthReader):
    """Depths from a StubBroker's in-memory queues."""

    kind = "stub"

    def read(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        queues = self.broker.queues
        now = _now_ms()
        result = {}
        for name in queue_names:
            ready = queues.get(name)
            delayed = queues.get(dq_name(name))
            result[name] = QueueDepth(
                name,
                ready.qsize() if ready is not None else 0,
                # Unfinished tasks: also the delayed messages a worker holds until their eta.
                delayed.unfinished_tasks if delayed is not None else 0,
                now,
            )
        return result


def depth_reader(broker: Broker) -> DepthReader:
    """The reader for ``broker`` (RedisBroker, RabbitmqBroker or StubBroker).

    Raises:
      ConfigurationError: another kind of broker.
    """
    kind = broker_kind(broker)
    if kind == "stub":
        return StubDepthReader(broker)
    if kind == "redis":
        return RedisDepthReader(broker)
    if kind == "rabbitmq":
        return RabbitmqDepthReader(broker)
    raise ConfigurationError(
        f"cannot read queue depths from a {type(broker).__name__}: "
        "RedisBroker, RabbitmqBroker and StubBroker are supported",
        option="broker",
    )


def read_queue_depths(broker: Broker, queue_names: Iterable[str] | None = None) -> dict[str, QueueDepth]:
    """Read the depth of ``queue_names`` (default: every queue the broker knows) now, uncached.

    Raises:
      DepthUnavailable: the broker could not be asked.
      ConfigurationError: the broker is of an unsupported kind.
    """
    reader = depth_reader(broker)
    try:
        names = reader.queues() if queue_names is None else sorted({q_name(name) for name in queue_names})
        return reader.read(names)
    finally:
        reader.close()
