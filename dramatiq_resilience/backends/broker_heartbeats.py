"""Liveness of RedisBroker workers, judged on the backend's clock.

Dramatiq's RedisBroker scores each worker in ``<ns>:__heartbeats__`` with the
time of its last broker command *on the worker's own clock*.  Comparing those
scores with another clock would take a live worker whose clock trails for
dead (its messages would run twice) and never recover a dead one whose clock
runs ahead.  So the dead-worker scan never reads a score as a time: it hands
the scores it read to :meth:`BrokerHeartbeatOps.broker_heartbeats_observe`,
which remembers, per worker, the last score seen and the backend time it was
first seen, and answers how long each worker's score has stayed the same.
The scan counts a worker dead once that reaches the heartbeat timeout.  A
live worker changes its score whenever its consumers poll (about every second,
whatever its clock says); one whose consumers all sit on full prefetch buffers
for longer than the timeout does not, and counts as dead here exactly as it
does for Dramatiq's own check.

One hash per broker (``broker_heartbeats:{<broker id>}``, the broker id naming
its Redis server, database and namespace: ``dead_workers.broker_identity``;
worker id -> ``"<score> <first seen ms>"``).  Every time is in milliseconds,
on the backend's clock.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

__all__ = ["BrokerHeartbeatOps", "score_text"]


def score_text(score: float) -> str:
    """A heartbeat score as text, the same for the same score everywhere (integers without ``.0``)."""
    return f"{score:.0f}" if float(score).is_integer() else repr(float(score))


class BrokerHeartbeatOps(abc.ABC):
    """Atomic operations on RedisBroker worker liveness.  See the module docstring for the model."""

    @abc.abstractmethod
    def broker_heartbeats_observe(self, broker_id: str, scores: Mapping[str, str]) -> dict[str, int]:
        """Record the heartbeat scores just read; return how long the unchanged ones have been silent.

        ``scores`` maps every worker id of the broker's heartbeat set to its
        score (:func:`score_text`).  A worker seen for the first time, or with
        another score than last time, starts its silence now and is not
        returned; one whose score is the one recorded is returned with the
        milliseconds since that score was first seen.  Workers missing from
        ``scores`` (gone from the heartbeat set) are forgotten.  Returns
        ``{worker id: silent ms}``, sorted by worker id.
        """
