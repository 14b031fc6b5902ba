"""Health operations of the in-memory backend, with the same results as the Lua scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .health import HealthCounts, HealthOps, HealthSnapshot, ProcessSeen, decode_info, sum_counts
from .stub_base import StubBase

__all__ = ["StubHealthOps"]


class StubHealthOps(StubBase, HealthOps):
    """``HealthOps`` in memory: ``data["health"]`` holds counts, processes and the snapshot."""

    def _health(self) -> dict[str, Any]:
        state: dict[str, Any] = self.data.setdefault(
            "health", {"counts": {}, "fields": {}, "processes": {}, "info": {}, "snapshot": None}
        )
        return state

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
        with self.atomic() as now:
            state = self._health()
            bucket = now - now % bucket_ms
            for suffix, count in counts.items():
                if count:
                    name = f"{bucket}\x1f{suffix}"
                    state["counts"][name] = state["counts"].get(name, 0) + int(count)
                    state["fields"][name] = bucket
            for name in [n for n, start in state["fields"].items() if start < now - retention_ms]:
                del state["fields"][name]
                state["counts"].pop(name, None)
            state["processes"][process] = now
            if info is not None:
                state["info"][process] = json.dumps(dict(info), sort_keys=True)
            for gone in [p for p, seen in state["processes"].items() if seen < now - forget_after_ms]:
                del state["processes"][gone]
                state["info"].pop(gone, None)
            return now

    def health_read(self, *, window_ms: int, bucket_ms: int, forget_after_ms: int) -> HealthCounts:
        with self.atomic() as now:
            state = self._health()
            since = now - window_ms - bucket_ms
            rows = [
                (name, state["counts"][name])
                for name, start in sorted(state["fields"].items(), key=lambda item: (item[1], item[0]))
                if start > since and name in state["counts"]
            ]
            processes = tuple(
                ProcessSeen(process, seen, decode_info(state["info"].get(process)))
                for process, seen in sorted(state["processes"].items(), key=lambda item: (item[1], item[0]))
                if seen >= now - forget_after_ms
            )
            return HealthCounts(now, sum_counts(rows), processes)

    def health_publish(self, payload: bytes, *, status: str, ttl_ms: int) -> str | None:
        with self.atomic() as now:
            state = self._health()
            previous = state["snapshot"]
            live = previous is not None and previous[3] > now
            state["snapshot"] = (now, status, bytes(payload), now + ttl_ms)
            return previous[1] if live else None

    def health_snapshot(self) -> HealthSnapshot | None:
        with self.atomic() as now:
            snapshot = self._health()["snapshot"]
            if snapshot is None or snapshot[3] <= now:
                return None
            return HealthSnapshot(snapshot[0], snapshot[1], snapshot[2])
