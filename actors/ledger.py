"""A tiny side-effect ledger: what really happened, counted across processes.

The fake gateway and the webhook receiver write here, so the demo, the tests
and the benchmarks can count real effects (a charge made twice is visible).
It also carries switches that the demo flips to break the gateway.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Protocol

import redis


class Ledger(Protocol):
    def incr(self, table: str, field: str, amount: int = 1) -> int: ...
    def get(self, table: str, field: str) -> int: ...
    def table(self, table: str) -> dict[str, int]: ...
    def set_switch(self, name: str, value: str, ttl_ms: int | None = None) -> None: ...
    def switch(self, name: str) -> str | None: ...
    def reset(self) -> None: ...


class MemoryLedger:
    """The ledger in process memory (in-process demo and unit tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._switches: dict[str, tuple[str, float | None]] = {}

    def incr(self, table: str, field: str, amount: int = 1) -> int:
        with self._lock:
            self._tables[table][field] += amount
            return self._tables[table][field]

    def get(self, table: str, field: str) -> int:
        with self._lock:
            return self._tables[table].get(field, 0)

    def table(self, table: str) -> dict[str, int]:
        with self._lock:
            return dict(self._tables[table])

    def set_switch(self, name: str, value: str, ttl_ms: int | None = None) -> None:
        with self._lock:
            expires = None if ttl_ms is None else time.monotonic() + ttl_ms / 1000
            self._switches[name] = (value, expires)

    def switch(self, name: str) -> str | None:
        with self._lock:
            value, expires = self._switches.get(name, (None, None))
            if expires is not None and time.monotonic() >= expires:
                self._switches.pop(name, None)
                return None
            return value

    def reset(self) -> None:
        with self._lock:
            self._tables.clear()
            self._switches.clear()


class RedisLedger:
    """The ledger in Redis hashes under ``namespace`` (real workers)."""

    def __init__(self, url: str, *, namespace: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.namespace = namespace

    def _key(self, kind: str, name: str) -> str:
        return f"{self.namespace}:{kind}:{name}"

    def incr(self, table: str, field: str, amount: int = 1) -> int:
        return int(self.client.hincrby(self._key("table", table), field, amount))

    def get(self, table: str, field: str) -> int:
        return int(self.client.hget(self._key("table", table), field) or 0)

    def table(self, table: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.client.hgetall(self._key("table", table)).items()}

    def set_switch(self, name: str, value: str, ttl_ms: int | None = None) -> None:
        self.client.set(self._key("switch", name), value, px=ttl_ms)

    def switch(self, name: str) -> str | None:
        value = self.client.get(self._key("switch", name))
        return None if value is None else str(value)

    def reset(self) -> None:
        for key in self.client.scan_iter(match=f"{self.namespace}:*", count=1000):
            self.client.delete(key)
