"""Window operations on Redis: one Lua script per operation (``lua/window_*.lua``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .redis_base import RedisBase
from .window import (
    DEFAULT_HOLD_ESTIMATE,
    WINDOW_GROUP,
    HeldLease,
    LeaseSpec,
    LimitDefinition,
    RateSpec,
    WindowDecision,
    WindowOps,
    WindowUsage,
    bucket_width,
    escape_id,
    unescape_id,
)

__all__ = ["RedisWindowOps"]

#: Items per window_inspect call.
_INSPECT_BATCH = 200


def _glob(text: str) -> str:
    """Escape ``text`` for a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


#: How many rate specs keep their encoded call (see ``_rate_call``).
_CALL_CACHE_SIZE = 4_096

_SMALL = [b"%d" % n for n in range(16)]


def _small(n: int) -> bytes:
    """``n`` as the bytes redis-py would send (precomputed for small counts)."""
    return _SMALL[n] if n < len(_SMALL) else b"%d" % n


class RedisWindowOps(RedisBase, WindowOps):
    """Window state in Redis hashes and sorted sets, all under the ``{limits}`` hash tag.

    Keys: ``<ns>:window:{limits}:r:<limit>:<key>:<per>:<width>`` (a rate
    window: its layout is part of its name, so two definitions of one limit
    never share, or reset, one window), ``...:c:<limit>:<key>`` (a pool's
    leases), ``...:m:<limit>:<key>`` (a pool's meta) and
    ``...:d:<kind>:<limit>`` (the definitions processes announced).  One hash
    tag for all of them means one Redis Cluster slot holds all limiter state:
    that is what lets one script take any mix of shared and per-key limits
    atomically.
    """

    def _window_key(self, kind: str, limit: str, key: str) -> str:
        return self.key("window", WINDOW_GROUP, kind, escape_id(limit), escape_id(key))

    def _rate_key(self, rate: RateSpec) -> str:
        """The hash of ``rate``'s window: limit, key and layout (``per`` and bucket width, in ms)."""
        layout = (str(rate.per_ms), str(bucket_width(rate.per_ms)))
        return self.key("window", WINDOW_GROUP, "r", escape_id(rate.limit), escape_id(rate.key), *layout)

    def _pool_keys(self, spec: LeaseSpec) -> list[str]:
        return [self._window_key("c", spec.limit, spec.key), self._window_key("m", spec.limit, spec.key)]

    def _rate_call(self, rate: RateSpec) -> tuple[str, bytes, bytes, bytes]:
        """The key and the encoded arguments of ``rate``, computed once per spec.

        A decision is one round trip, so encoding its arguments is a good part
        of its cost: specs repeat (one per limit and key), their bytes need not
        be rebuilt.  The cache is bounded; it is dropped when full.
        """
        cache: dict[RateSpec, tuple[str, bytes, bytes, bytes]] = self.__dict__.setdefault("_window_calls", {})
        call = cache.get(rate)
        if call is None:
            if len(cache) >= _CALL_CACHE_SIZE:
                cache.clear()
            call = cache[rate] = (
                self._rate_key(rate),
                b"%d" % rate.count,
                b"%d" % rate.per_ms,
                b"%d" % bucket_width(rate.per_ms),
            )
        return call

    def window_acquire(
        self, token: str, rates: Sequence[RateSpec], leases: Sequence[LeaseSpec] = ()
    ) -> WindowDecision:
        calls = [self._rate_call(rate) for rate in rates]
        keys = [call[0] for call in calls]
        args: list[Any] = [token, _small(len(rates)), _small(len(leases))]
        for call in calls:
            args += call[1:]
        for lease in leases:
            keys += self._pool_keys(lease)
            args += [lease.n, lease.lease_ms, min(DEFAULT_HOLD_ESTIMATE, lease.lease_ms)]
        reply = self.run_script("window_acquire", keys, args)
        if isinstance(reply, int):
            return WindowDecision(granted=True, now_ms=reply)
        now, retry_at, blocked_by, spacing = map(int, reply.split())
        return WindowDecision(
            granted=False, now_ms=now, retry_at_ms=retry_at, blocked_by=blocked_by, spacing_ms=spacing
        )

    def window_release(self, token: str, leases: Sequence[LeaseSpec], held_ms: int | None = None) -> int:
        if not leases:
            return 0
        keys = [key for lease in leases for key in self._pool_keys(lease)]
        held = "" if held_ms is None else str(max(0, int(held_ms)))
        return int(
            self.run_script("window_release", keys, [token, held, *(spec.lease_ms for spec in leases)])
        )

    def window_renew(self, held: Sequence[HeldLease]) -> list[bool]:
        if not held:
            return []
        keys = [key for lease in held for key in self._pool_keys(lease.spec)]
        args: list[Any] = []
        for lease in held:
            args += [lease.token, lease.spec.lease_ms]
        return [bool(flag) for flag in self.run_script("window_renew", keys, args)]

    def _scan(self, kind: str, limit: str | None, key: str | None) -> list[tuple[str, str, str]]:
        """(stored key, limit, key) of every window (``r``) or pool (``c``) matching the filters, sorted."""
        prefix = self.key("window", WINDOW_GROUP, kind) + ":"
        if kind == "c" and limit is not None and key is not None:
            stored = prefix + escape_id(limit) + ":" + escape_id(key)
            with self.errors():
                found = self.client.exists(stored)
            return [(stored, limit, key)] if found else []
        pattern = _glob(prefix)
        if limit is not None:
            pattern += _glob(escape_id(limit)) + ":"
            if key is not None:
                pattern += _glob(escape_id(key)) + ":"
        pattern += "*"
        # Escaped ids hold no ":", so a name splits into exactly its parts:
        # limit and key, then (rate windows) per and width.
        parts = 4 if kind == "r" else 2
        seen: set[tuple[str, str, str]] = set()
        with self.errors():
            for raw in self.client.scan_iter(match=pattern, count=1000):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                fields = name[len(prefix) :].split(":")
                if len(fields) != parts:
                    continue  # not a key of this layout (e.g. written by an older version)
                stored_limit, stored_key = unescape_id(fields[0]), unescape_id(fields[1])
                if (limit is None or stored_limit == limit) and (key is None or stored_key == key):
                    seen.add((name, stored_limit, stored_key))
        return sorted(seen)

    def window_announce(self, definitions: Sequence[LimitDefinition], ttl_ms: int) -> list[list[str]]:
        if not definitions:
            return []
        keys = [
            self.key("window", WINDOW_GROUP, "d", definition.kind[0], escape_id(definition.limit))
            for definition in definitions
        ]
        texts = [definition.text for definition in definitions]
        reply = self.run_script("window_announce", keys, [int(ttl_ms), *texts])
        return [[item.decode() if isinstance(item, bytes) else str(item) for item in row] for row in reply]

    def window_inspect(self, limit: str | None = None, key: str | None = None) -> list[WindowUsage]:
        items = [("rate", found) for found in self._scan("r", limit, key)]
        items += [("concurrency", found) for found in self._scan("c", limit, key)]
        usages: list[WindowUsage] = []
        for start in range(0, len(items), _INSPECT_BATCH):
            batch = items[start : start + _INSPECT_BATCH]
            keys: list[str] = []
            letters = ""
            for kind, (stored, name, value) in batch:
                if kind == "rate":
                    keys.append(stored)
                    letters += "r"
                else:
                    keys += self._pool_keys(LeaseSpec(name, value, 0, 0))
                    letters += "c"
            reply = self.run_script("window_inspect", keys, [letters])
            now = int(reply[0])
            for (kind, (_, name, value)), row in zip(batch, reply[1:], strict=True):
                used, capacity, window, next_free, resets, waiting = (int(x) for x in row)
                if used == 0 and waiting < 0:
                    continue
                usages.append(
                    WindowUsage(
                        kind=kind,
                        limit=name,
                        key=value,
                        used=used,
                        capacity=capacity,
                        window_ms=window,
                        next_free_ms=None if next_free < 0 else next_free,
                        resets_at_ms=None if resets < 0 else resets,
                        waiting_until_ms=None if waiting < 0 else waiting,
                        now_ms=now,
                    )
                )
        return sorted(usages, key=lambda u: (u.limit, u.kind, u.key, u.window_ms))
