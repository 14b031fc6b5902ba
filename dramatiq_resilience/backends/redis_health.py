"""Health operations of the Redis backend: one Lua script per write (``lua/health_*.lua``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .health import HealthCounts, HealthOps, HealthSnapshot, ProcessSeen, decode_info, sum_counts
from .redis_base import RedisBase

__all__ = ["RedisHealthOps"]


def _health_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHealthOps(RedisBase, HealthOps):
    """``HealthOps`` on Redis.  Keys: ``health:{health}:counts``, ``:fields``, ``:processes``,
    ``:process_info`` and ``:snapshot``."""

    def _health_keys(self) -> list[str]:
        return [
            self.key("health", "health", part) for part in ("counts", "fields", "processes", "process_info")
        ]

    def health_record(
        self,
        process: str,
        counts: Mapping[str, int],
        *,
        bucket_ms: int,
        retention_ms: int,
        forget_after_ms: int,
        info: Mapping[str, Any] | None = None,
    ) -> int:
        pairs = [item for name, count in counts.items() if count for item in (name, int(count))]
        blob = "" if info is None else json.dumps(dict(info), sort_keys=True)
        now = self.run_script(
            "health_record",
            self._health_keys(),
            [bucket_ms, retention_ms, forget_after_ms, process, blob, *pairs],
        )
        return int(now)

    def health_read(self, *, window_ms: int, bucket_ms: int, forget_after_ms: int) -> HealthCounts:
        now, flat, seen = self.run_script(
            "health_read", self._health_keys(), [window_ms, bucket_ms, forget_after_ms]
        )
        rows = [(_health_text(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
        processes = tuple(
            ProcessSeen(_health_text(seen[i]), int(float(seen[i + 1])), decode_info(seen[i + 2]))
            for i in range(0, len(seen), 3)
        )
        return HealthCounts(int(now), sum_counts(rows), processes)

    def health_publish(self, payload: bytes, *, status: str, ttl_ms: int) -> str | None:
        previous = self.run_script(
            "health_publish", [self.key("health", "health", "snapshot")], [payload, status, ttl_ms]
        )
        return None if previous is None else _health_text(previous)

    def health_snapshot(self) -> HealthSnapshot | None:
        found = self.run_script("health_snapshot", [self.key("health", "health", "snapshot")], [])
        if not found:
            return None
        at, status, payload = found
        return HealthSnapshot(int(at), _health_text(status), bytes(payload))
