"""Where an enqueue comes from: a producer's ``send``, or a re-enqueue.

Enqueue-side protections (unique enqueue, backpressure) refuse producers'
sends, but must never refuse a re-enqueue of a message already accepted:
a retry, a deferral, the move of a delayed message to its queue, a scheduler
send or a dead-letter redrive.  :func:`enqueue_origin` tells them apart:

* our own re-enqueues run inside :func:`internal_enqueue`, which marks the
  current thread (or greenlet, under gevent) with their kind;
* Dramatiq moves due delayed messages from a consumer thread, the only place
  a consumer thread enqueues;
* Dramatiq's ``Retries`` increments ``options["retries"]`` before it enqueues.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from dramatiq.worker import ConsumerThread

__all__ = ["Origin", "enqueue_origin", "internal_enqueue", "is_producer_send"]

Origin = Literal["send", "retry", "deferral", "delayed_move", "redrive", "scheduled"]

_local = threading.local()


@contextmanager
def internal_enqueue(kind: Origin) -> Iterator[None]:
    """Mark enqueues made inside this block as re-enqueues of ``kind``."""
    previous = getattr(_local, "kind", None)
    _local.kind = kind
    try:
        yield
    finally:
        _local.kind = previous


def enqueue_origin(message: Any) -> Origin:
    """Classify the enqueue of ``message`` happening on this thread right now."""
    kind: Origin | None = getattr(_local, "kind", None)
    if kind is not None:
        return kind
    if isinstance(threading.current_thread(), ConsumerThread):
        return "delayed_move"
    retries = message.options.get("retries")
    if isinstance(retries, int) and retries > 0:
        return "retry"
    return "send"


def is_producer_send(message: Any) -> bool:
    """True when ``message`` is being enqueued by a producer for the first time."""
    return enqueue_origin(message) == "send"
