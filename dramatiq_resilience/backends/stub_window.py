"""Window operations in memory, step for step as ``lua/window_*.lua`` does them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .stub_base import StubBase
from .window import (
    DEFAULT_HOLD_ESTIMATE,
    HeldLease,
    LeaseSpec,
    LimitDefinition,
    RateSpec,
    WindowDecision,
    WindowOps,
    WindowUsage,
    bucket_width,
)

__all__ = ["StubWindowOps"]


@dataclass
class _Window:
    width: int
    per: int
    count: int
    n: int = 0
    oldest: int | None = None
    newest: int | None = None
    q: float | None = None
    free_at: int | None = None
    buckets: dict[int, int] = field(default_factory=dict)
    expires_at: float = math.inf


@dataclass
class _Pool:
    leases: dict[str, int] = field(default_factory=dict)
    expires_at: float = math.inf


@dataclass
class _Meta:
    n: int = 0
    lease: int = 0
    hold: float | None = None
    q: float | None = None
    expires_at: float = math.inf


class StubWindowOps(StubBase, WindowOps):
    """Window state in ``self.data["window"]``; keys expire on the backend's clock."""

    def _window_state(self) -> dict[str, dict[Any, Any]]:
        """Rate windows by (limit, key, per): a window's layout is part of its identity, as in
        Redis; pools and their meta by (limit, key); announced definitions by (kind, limit)."""
        state: dict[str, dict[Any, Any]] = self.data.setdefault(
            "window", {"rates": {}, "pools": {}, "meta": {}, "definitions": {}}
        )
        return state

    @staticmethod
    def _window_live(table: dict[Any, Any], pair: tuple[Any, ...], now: int) -> Any:
        item = table.get(pair)
        if item is not None and item.expires_at <= now:
            del table[pair]
            return None
        return item

    # -- rate windows -----------------------------------------------------------

    def _load_rate(self, spec: RateSpec, now: int) -> _Window:
        rates = self._window_state()["rates"]
        width = bucket_width(spec.per_ms)
        window = self._window_live(rates, (spec.limit, spec.key, spec.per_ms), now)
        if window is None:
            window = _Window(width=width, per=spec.per_ms, count=spec.count)
        elif window.count != spec.count:  # another count: the starts still count
            window.count, window.free_at = spec.count, None
        cut = (now - window.per + 1) // width
        if window.n > 0 and window.oldest is not None and window.oldest < cut:
            for bucket in [b for b in window.buckets if b < cut]:
                window.n -= window.buckets.pop(bucket)
        if window.oldest is None or window.oldest < cut:
            window.oldest = cut
        return window

    @staticmethod
    def _rate_free_at(window: _Window, now: int) -> int:
        if window.free_at is not None and window.free_at > now:
            return window.free_at
        need = window.n - window.count + 1
        total = 0
        for bucket in sorted(window.buckets):
            if window.oldest is not None and bucket >= window.oldest:
                total += window.buckets[bucket]
                if total >= need:
                    window.free_at = (bucket + 1) * window.width + window.per - 1
                    return window.free_at
        window.free_at = now + window.per
        return window.free_at

    def _save_rate(self, spec: RateSpec, window: _Window, now: int) -> None:
        rates = self._window_state()["rates"]
        pair = (spec.limit, spec.key, spec.per_ms)
        if window.n == 0 and window.q is None:
            rates.pop(pair, None)
            return
        ttl = window.per + window.width
        if window.q is not None and window.q - now + window.per > ttl:
            ttl = math.ceil(window.q - now) + window.per
        window.expires_at = now + ttl
        rates[pair] = window

    # -- concurrency pools --------------------------------------------------------

    def _load_pool(self, spec: LeaseSpec, now: int) -> _Pool:
        pool = self._window_live(self._window_state()["pools"], (spec.limit, spec.key), now) or _Pool()
        for token in [t for t, expiry in pool.leases.items() if expiry <= now]:
            del pool.leases[token]
        return pool

    def _save_pool(self, spec: LeaseSpec, pool: _Pool) -> None:
        pools = self._window_state()["pools"]
        if pool.leases:
            pools[(spec.limit, spec.key)] = pool
        else:
            pools.pop((spec.limit, spec.key), None)

    def _meta(self, spec: LeaseSpec, now: int, *, create: bool = True) -> _Meta:
        """The pool's meta; a missing one is stored (expiring in 2 leases) only with ``create``."""
        meta = self._window_state()["meta"]
        pair = (spec.limit, spec.key)
        item = self._window_live(meta, pair, now)
        if item is None:
            item = _Meta(expires_at=now + 2 * spec.lease_ms)
            if create:
                meta[pair] = item
        return item

    def _save_meta(self, spec: LeaseSpec, meta: _Meta, now: int) -> None:
        meta.n, meta.lease = spec.n, spec.lease_ms
        ttl = spec.lease_ms
        if meta.q is not None and meta.q - now > ttl:
            ttl = math.ceil(meta.q - now)
        meta.expires_at = now + ttl + spec.lease_ms

    # -- operations ---------------------------------------------------------------

    def window_acquire(
        self, token: str, rates: Sequence[RateSpec], leases: Sequence[LeaseSpec] = ()
    ) -> WindowDecision:
        with self.atomic() as now:
            windows = [self._load_rate(spec, now) for spec in rates]
            pools = [self._load_pool(spec, now) for spec in leases]
            rate_ok = [w.n < w.count for w in windows]
            pool_ok = [
                token in p.leases or len(p.leases) < spec.n for p, spec in zip(pools, leases, strict=True)
            ]
            if all(rate_ok) and all(pool_ok):
                for spec, window in zip(rates, windows, strict=True):
                    bucket = now // window.width
                    window.buckets[bucket] = window.buckets.get(bucket, 0) + 1
                    window.n += 1
                    if window.newest is None or bucket > window.newest:
                        window.newest = bucket
                    if window.oldest is not None and bucket < window.oldest:
                        window.oldest = bucket
                    window.free_at = None
                    self._save_rate(spec, window, now)
                for lease, pool in zip(leases, pools, strict=True):
                    pool.leases[token] = now + lease.lease_ms
                    pool.expires_at = now + lease.lease_ms
                    self._save_pool(lease, pool)
                    self._save_meta(lease, self._meta(lease, now), now)
                return WindowDecision(granted=True, now_ms=now)

            best: tuple[str, int] | None = None
            best_at = 0.0
            best_spacing = 0.0
            for index, (window, ok) in enumerate(zip(windows, rate_ok, strict=True)):
                if not ok:
                    at = max(window.q or 0, self._rate_free_at(window, now))
                    if best is None or at > best_at:
                        best, best_at, best_spacing = ("rate", index), at, window.per / window.count
            for index, (lease, pool, ok) in enumerate(zip(leases, pools, pool_ok, strict=True)):
                if not ok:
                    meta = self._meta(lease, now, create=False)
                    hold = meta.hold if meta.hold is not None else min(DEFAULT_HOLD_ESTIMATE, lease.lease_ms)
                    free_at = min(*pool.leases.values(), now + hold)
                    at = max(meta.q or 0, free_at)
                    if best is None or at > best_at:
                        best, best_at, best_spacing = ("pool", index), at, hold / lease.n
            assert best is not None
            for index, (spec, window) in enumerate(zip(rates, windows, strict=True)):
                if best == ("rate", index):
                    window.q = best_at + best_spacing
                self._save_rate(spec, window, now)
            for index, (lease, pool) in enumerate(zip(leases, pools, strict=True)):
                self._save_pool(lease, pool)
                if best == ("pool", index):
                    meta = self._meta(lease, now)
                    meta.q = best_at + best_spacing
                    self._save_meta(lease, meta, now)
            kind, index = best
            return WindowDecision(
                granted=False,
                now_ms=now,
                retry_at_ms=math.ceil(best_at),
                blocked_by=index + (len(rates) if kind == "pool" else 0),
                spacing_ms=math.ceil(best_spacing),
            )

    def window_release(self, token: str, leases: Sequence[LeaseSpec], held_ms: int | None = None) -> int:
        with self.atomic() as now:
            released = 0
            for spec in leases:
                pool = self._window_live(self._window_state()["pools"], (spec.limit, spec.key), now)
                if pool is None or pool.leases.pop(token, None) is None:
                    continue
                released += 1
                self._save_pool(spec, pool)
                if held_ms is not None:
                    meta = self._meta(spec, now)
                    held = max(0, int(held_ms))
                    meta.hold = held if meta.hold is None else meta.hold * 0.8 + held * 0.2
            return released

    def window_renew(self, held: Sequence[HeldLease]) -> list[bool]:
        with self.atomic() as now:
            renewed = []
            for lease in held:
                pools = self._window_state()["pools"]
                pool = self._window_live(pools, (lease.spec.limit, lease.spec.key), now)
                if pool is None or lease.token not in pool.leases:
                    renewed.append(False)
                    continue
                pool.leases[lease.token] = now + lease.spec.lease_ms
                pool.expires_at = now + lease.spec.lease_ms
                meta = self._window_live(
                    self._window_state()["meta"], (lease.spec.limit, lease.spec.key), now
                )
                if meta is not None and meta.expires_at - now < lease.spec.lease_ms:
                    meta.expires_at = now + 2 * lease.spec.lease_ms
                renewed.append(True)
            return renewed

    def window_announce(self, definitions: Sequence[LimitDefinition], ttl_ms: int) -> list[list[str]]:
        with self.atomic() as now:
            table = self._window_state()["definitions"]
            result = []
            for definition in definitions:
                announced: dict[str, int] = table.setdefault((definition.kind, definition.limit), {})
                announced[definition.text] = now + int(ttl_ms)
                for text in [t for t, expires in announced.items() if expires <= now]:
                    del announced[text]
                result.append(sorted(text for text in announced if text != definition.text))
            return result

    def window_inspect(self, limit: str | None = None, key: str | None = None) -> list[WindowUsage]:
        with self.atomic() as now:
            state = self._window_state()
            usages: list[WindowUsage] = []
            for (name, value, per), window in list(state["rates"].items()):
                if (limit is not None and name != limit) or (key is not None and value != key):
                    continue
                if self._window_live(state["rates"], (name, value, per), now) is None:
                    continue
                usages.append(self._rate_usage(name, value, window, now))
            for (name, value), pool in list(state["pools"].items()):
                if (limit is not None and name != limit) or (key is not None and value != key):
                    continue
                if self._window_live(state["pools"], (name, value), now) is None:
                    continue
                meta = self._window_live(state["meta"], (name, value), now) or _Meta()
                usages.append(self._pool_usage(name, value, pool, meta, now))
            usages = [u for u in usages if u.used > 0 or u.waiting_until_ms is not None]
            return sorted(usages, key=lambda u: (u.limit, u.kind, u.key, u.window_ms))

    @staticmethod
    def _rate_usage(name: str, value: str, window: _Window, now: int) -> WindowUsage:
        cut = (now - window.per + 1) // window.width
        live = sorted((b, c) for b, c in window.buckets.items() if b >= cut)
        used = sum(c for _, c in live)
        next_free = None
        if used >= window.count > 0:
            need, total = used - window.count + 1, 0
            for bucket, count in live:
                total += count
                if total >= need:
                    next_free = (bucket + 1) * window.width + window.per - 1
                    break
        return WindowUsage(
            kind="rate",
            limit=name,
            key=value,
            used=used,
            capacity=window.count,
            window_ms=window.per,
            next_free_ms=next_free,
            resets_at_ms=(live[-1][0] + 1) * window.width + window.per - 1 if live else None,
            waiting_until_ms=math.ceil(window.q) if window.q is not None and window.q > now else None,
            now_ms=now,
        )

    @staticmethod
    def _pool_usage(name: str, value: str, pool: _Pool, meta: _Meta, now: int) -> WindowUsage:
        live = sorted(expiry for expiry in pool.leases.values() if expiry > now)
        return WindowUsage(
            kind="concurrency",
            limit=name,
            key=value,
            used=len(live),
            capacity=meta.n,
            window_ms=meta.lease,
            next_free_ms=live[0] if live and meta.n and len(live) >= meta.n else None,
            resets_at_ms=live[-1] if live else None,
            waiting_until_ms=math.ceil(meta.q) if meta.q is not None and meta.q > now else None,
            now_ms=now,
        )
