"""Small helpers shared by test modules."""

from __future__ import annotations

from typing import Any

import dramatiq

import dramatiq_resilience as dr


def fail_enqueues(broker: Any, origin: str, *, times: int | None = None) -> None:
    """Make ``broker.enqueue`` raise ConnectionClosed for enqueues of ``origin`` (see ``enqueue_origin``).

    All of them, or only the first ``times`` (a broker that blinks).
    """
    real_enqueue = broker.enqueue
    left = [times]

    def enqueue(message: Any, *, delay: Any = None) -> Any:
        if dr.enqueue_origin(message) == origin and (left[0] is None or left[0] > 0):
            if left[0] is not None:
                left[0] -= 1
            raise dramatiq.errors.ConnectionClosed("broker down")
        return real_enqueue(message, delay=delay)

    broker.enqueue = enqueue
