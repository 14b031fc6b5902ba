"""RedisBroker liveness operations of the Redis backend (``lua/broker_heartbeats_observe.lua``)."""

from __future__ import annotations

from collections.abc import Mapping

from .broker_heartbeats import BrokerHeartbeatOps
from .redis_base import RedisBase

__all__ = ["RedisBrokerHeartbeatOps"]


class RedisBrokerHeartbeatOps(RedisBase, BrokerHeartbeatOps):
    """``BrokerHeartbeatOps`` on Redis.  Keys: ``broker_heartbeats:{<broker namespace>}``."""

    def broker_heartbeats_observe(self, broker_id: str, scores: Mapping[str, str]) -> dict[str, int]:
        pairs = [item for worker in sorted(scores) for item in (worker, scores[worker])]
        key = self.key("broker_heartbeats", broker_id)
        flat = self.run_script("broker_heartbeats_observe", [key], pairs)
        silent = {
            (flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])): int(flat[i + 1])
            for i in range(0, len(flat), 2)
        }
        return dict(sorted(silent.items()))
