"""RedisBroker liveness operations of the in-memory backend, with the same results as the Lua script."""

from __future__ import annotations

from collections.abc import Mapping

from .broker_heartbeats import BrokerHeartbeatOps
from .stub_base import StubBase

__all__ = ["StubBrokerHeartbeatOps"]


class StubBrokerHeartbeatOps(StubBase, BrokerHeartbeatOps):
    """``BrokerHeartbeatOps`` in memory: ``data["broker_heartbeats"][ns]`` maps worker -> (score, since)."""

    def broker_heartbeats_observe(self, broker_id: str, scores: Mapping[str, str]) -> dict[str, int]:
        with self.atomic() as now:
            brokers: dict[str, dict[str, tuple[str, int]]] = self.data.setdefault("broker_heartbeats", {})
            seen = brokers.setdefault(broker_id, {})
            silent: dict[str, int] = {}
            for worker in sorted(scores):
                score = scores[worker]
                previous = seen.get(worker)
                if previous is not None and previous[0] == score:
                    silent[worker] = now - previous[1]
                else:
                    seen[worker] = (score, now)
            for gone in [worker for worker in seen if worker not in scores]:
                del seen[gone]
            if not seen:
                del brokers[broker_id]
            return silent
