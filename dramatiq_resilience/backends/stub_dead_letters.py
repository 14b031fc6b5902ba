"""Dead-letter storage in memory, with the same results as the Redis scripts."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .dead_letters import (
    FACETS,
    DeadLetterCounts,
    DeadLetterEntry,
    DeadLetterOps,
    ListChunk,
    StoredDeadLetter,
    TrimChunk,
)
from .stub_base import StubBase

__all__ = ["StubDeadLetterOps"]

_STATUS = {"d": "dead", "r": "requeued", "c": "claimed"}


class _ZSet:
    """A Redis sorted set: members ordered by (score, member)."""

    def __init__(self) -> None:
        self.scores: dict[str, int] = {}
        self.order: list[tuple[int, str]] = []

    def add(self, member: str, score: int) -> None:
        self.remove(member)
        self.scores[member] = score
        bisect.insort(self.order, (score, member))

    def remove(self, member: str) -> None:
        score = self.scores.pop(member, None)
        if score is not None:
            del self.order[bisect.bisect_left(self.order, (score, member))]

    def __len__(self) -> int:
        return len(self.order)

    def __contains__(self, member: str) -> bool:
        return member in self.scores

    def count_below(self, score: int, *, inclusive: bool = False) -> int:
        """How many members have a score below ``score`` (or equal, with ``inclusive``)."""
        key = (score, "\U0010ffff" * 4) if inclusive else (score, "")
        return bisect.bisect_left(self.order, key)

    def at(self, rank: int, *, desc: bool) -> tuple[int, str] | None:
        if not 0 <= rank < len(self.order):
            return None
        return self.order[len(self.order) - 1 - rank] if desc else self.order[rank]


@dataclass
class _Entry:
    status: str
    score: int
    values: tuple[str, str, str, str]


@dataclass
class _State:
    rec: dict[str, bytes] = field(default_factory=dict)
    idx: dict[str, _Entry] = field(default_factory=dict)
    all: _ZSet = field(default_factory=_ZSet)
    dead: _ZSet = field(default_factory=_ZSet)
    requeued: _ZSet = field(default_factory=_ZSet)
    claimed: _ZSet = field(default_factory=_ZSet)
    tomb: _ZSet = field(default_factory=_ZSet)
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {facet: {} for facet in FACETS})
    by: dict[tuple[str, str], _ZSet] = field(default_factory=dict)

    def facet(self, facet: str, value: str) -> _ZSet:
        zset = self.by.get((facet, value))
        if zset is None:
            zset = self.by[(facet, value)] = _ZSet()
        return zset

    def status_set(self, status: str) -> _ZSet:
        return {"d": self.dead, "r": self.requeued}.get(status[:1], self.claimed)

    def count(self, values: tuple[str, ...], delta: int) -> None:
        for facet, value in zip(FACETS, values, strict=True):
            counts = self.counts[facet]
            counts[value] = counts.get(value, 0) + delta
            if counts[value] <= 0:
                del counts[value]

    def index(self, record_id: str, entry: _Entry, now: int) -> None:
        self.idx[record_id] = entry
        self.all.add(record_id, entry.score)
        for facet, value in zip(FACETS, entry.values, strict=True):
            self.facet(facet, value).add(record_id, entry.score)
        self.status_set(entry.status).add(record_id, now if entry.status[:1] == "c" else entry.score)
        if entry.status == "d":
            self.count(entry.values, 1)

    def unindex(self, record_id: str, entry: _Entry) -> None:
        del self.idx[record_id]
        self.all.remove(record_id)
        for facet, value in zip(FACETS, entry.values, strict=True):
            zset = self.facet(facet, value)
            zset.remove(record_id)
            if not zset:
                del self.by[(facet, value)]
        self.status_set(entry.status).remove(record_id)
        if entry.status == "d":
            self.count(entry.values, -1)

    def move(self, record_id: str, entry: _Entry, status: str, now: int) -> None:
        self.status_set(entry.status).remove(record_id)
        if entry.status == "d":
            self.count(entry.values, -1)
        entry.status = status
        self.status_set(status).add(record_id, now if status[:1] == "c" else entry.score)
        if status == "d":
            self.count(entry.values, 1)

    def remove(self, record_id: str, now: int) -> StoredDeadLetter:
        entry = self.idx.get(record_id)
        if entry is not None:
            self.unindex(record_id, entry)
        self.rec.pop(record_id, None)
        self.tomb.add(record_id, now)
        return _stored(record_id, entry)


def _stored(record_id: str, entry: _Entry | None, payload: bytes | None = None) -> StoredDeadLetter:
    if entry is None:
        return StoredDeadLetter(record_id, "", 0, payload=payload)
    return StoredDeadLetter(
        record_id, _STATUS.get(entry.status[:1], entry.status), entry.score, *entry.values, payload=payload
    )


class StubDeadLetterOps(StubBase, DeadLetterOps):
    """:class:`DeadLetterOps` in memory."""

    def _state(self) -> _State:
        state = self.data.get("dead_letters")
        if state is None:
            state = self.data["dead_letters"] = _State()
        assert isinstance(state, _State)
        return state

    def dead_letters_write(self, entries: Sequence[DeadLetterEntry], *, replace: bool) -> list[int]:
        outcomes = []
        with self.atomic() as now:
            state = self._state()
            for item in entries:
                existing = state.idx.get(item.record_id)
                if existing is not None:
                    outcome = 2 if replace else 0
                else:
                    outcome = 0 if not replace and item.record_id in state.tomb else 1
                if outcome:
                    if existing is not None:
                        state.unindex(item.record_id, existing)
                    state.rec[item.record_id] = item.payload
                    state.tomb.remove(item.record_id)
                    a, q, e, c = (_clean(value) for value in item.facets())
                    values = (a, q, e, c)
                    state.index(item.record_id, _Entry("d", int(item.failed_at), values), now)
                outcomes.append(outcome)
        return outcomes

    def dead_letters_get(self, record_ids: Sequence[str]) -> list[StoredDeadLetter | None]:
        with self.atomic():
            state = self._state()
            found: list[StoredDeadLetter | None] = []
            for record_id in record_ids:
                entry, payload = state.idx.get(record_id), state.rec.get(record_id)
                found.append(
                    None if entry is None and payload is None else _stored(record_id, entry, payload)
                )
            return found

    def dead_letters_list(
        self,
        *,
        status: str,
        facets: Mapping[str, Sequence[str]],
        since: int | None,
        until: int | None,
        descending: bool,
        limit: int,
        cursor: tuple[int, str] | None,
        with_payload: bool,
        budget: int,
    ) -> ListChunk:
        with self.atomic():
            state = self._state()
            status_set = {"dead": state.dead, "requeued": state.requeued}.get(status, state.all)
            candidates = [status_set]
            groups: list[list[_ZSet]] = []
            for facet, values in facets.items():
                unique = list(dict.fromkeys(_clean(value) for value in values))
                if not unique:
                    return ListChunk([], None, 0)
                sets = [state.by.get((facet, value)) or _ZSet() for value in unique]
                if len(sets) == 1:
                    candidates.append(sets[0])
                else:
                    groups.append(sets)
            primary = min(candidates, key=len)  # the first smallest, as the script picks
            groups += [[zset] for zset in candidates if zset is not primary and zset is not state.all]

            def out_of_range(score: int) -> bool:
                if descending:
                    return since is not None and score < since
                return until is not None and score >= until

            size = len(primary)
            if descending:
                start = size - primary.count_below(until) if until is not None else 0
            else:
                start = primary.count_below(since) if since is not None else 0
            if cursor is not None:
                cscore, cid = cursor
                ties = _ties(primary, cscore)
                if descending:
                    after = size - primary.count_below(cscore, inclusive=True)
                    after += sum(1 for _, member in ties if member > cid)
                else:
                    after = primary.count_below(cscore) + sum(1 for _, member in ties if member < cid)
                if primary.scores.get(cid) == cscore:
                    after += 1  # the cursor's own entry
                start = max(start, after)

            entries: list[StoredDeadLetter] = []
            scanned = 0
            last: tuple[int, str] | None = None
            pos = start
            finished = False
            while len(entries) < limit and scanned < budget:
                item = primary.at(pos, desc=descending)
                if item is None or out_of_range(item[0]):
                    finished = True
                    break
                pos += 1
                scanned += 1
                last = item
                record_id = item[1]
                if all(any(record_id in zset for zset in group) for group in groups):
                    payload = state.rec.get(record_id) if with_payload else None
                    entries.append(_stored(record_id, state.idx.get(record_id), payload))
            if not finished:
                item = primary.at(pos, desc=descending)
                finished = item is None or out_of_range(item[0])
            return ListChunk(entries, None if finished or last is None else last, scanned)

    def dead_letters_claim(self, record_ids: Sequence[str], token: str) -> list[StoredDeadLetter]:
        claimed = []
        status = f"c:{token}"
        with self.atomic() as now:
            state = self._state()
            for record_id in record_ids:
                entry = state.idx.get(record_id)
                if entry is not None and entry.status in ("d", status):
                    if entry.status == "d":
                        state.move(record_id, entry, status, now)
                    claimed.append(_stored(record_id, entry, state.rec.get(record_id)))
        return claimed

    def dead_letters_release(self, record_ids: Sequence[str], token: str) -> int:
        released = 0
        with self.atomic() as now:
            state = self._state()
            for record_id in record_ids:
                entry = state.idx.get(record_id)
                if entry is not None and entry.status == f"c:{token}":
                    state.move(record_id, entry, "d", now)
                    released += 1
        return released

    def dead_letters_finish(self, items: Sequence[tuple[str, bytes]], token: str) -> list[str]:
        done = []
        claimed, finished = f"c:{token}", f"r:{token}"
        with self.atomic() as now:
            state = self._state()
            for record_id, payload in items:
                entry = state.idx.get(record_id)
                if entry is not None and entry.status == claimed:
                    state.move(record_id, entry, finished, now)
                    state.rec[record_id] = payload
                    done.append(record_id)
                elif entry is not None and entry.status == finished:
                    done.append(record_id)
        return done

    def dead_letters_repair(self, items: Sequence[tuple[DeadLetterEntry, str]]) -> list[int]:
        outcomes = []
        with self.atomic() as now:
            state = self._state()
            for item, digest in items:
                existing = state.idx.get(item.record_id)
                outcome = 0
                if existing is not None:
                    current = state.rec.get(item.record_id)
                    if _digest(current) == digest:
                        claimed_at = state.claimed.scores.get(item.record_id)
                        state.unindex(item.record_id, existing)
                        state.rec[item.record_id] = item.payload
                        a, q, e, c = (_clean(value) for value in item.facets())
                        entry = _Entry(existing.status, int(item.failed_at), (a, q, e, c))
                        state.index(item.record_id, entry, now if claimed_at is None else claimed_at)
                        outcome = 2
                outcomes.append(outcome)
        return outcomes

    def dead_letters_delete(
        self, record_ids: Sequence[str], *, statuses: Sequence[str]
    ) -> list[StoredDeadLetter]:
        letters = {status[0] for status in statuses if status in ("dead", "requeued")}
        removed = []
        with self.atomic() as now:
            state = self._state()
            for record_id in record_ids:
                entry = state.idx.get(record_id)
                removable = entry.status[:1] in letters if entry is not None else record_id in state.rec
                if removable:
                    removed.append(state.remove(record_id, now))
        return removed

    def dead_letters_trim(
        self,
        *,
        max_age: int,
        max_count: int,
        claim_timeout: int,
        tombstone_ttl: int,
        max_tombstones: int,
        limit: int,
    ) -> TrimChunk:
        with self.atomic() as now:
            state = self._state()
            released = 0
            stale = [member for score, member in state.claimed.order if score <= now - claim_timeout][:limit]
            for record_id in stale:
                entry = state.idx.get(record_id)
                if entry is not None and entry.status[:1] == "c":
                    state.move(record_id, entry, "d", now)
                    released += 1
                else:
                    state.claimed.remove(record_id)
            cutoff = now - max_age
            old = [member for score, member in state.all.order[:limit] if score < cutoff]
            by_age = [state.remove(record_id, now) for record_id in old]
            excess = len(state.all) - max_count
            by_count = []
            if excess > 0:
                oldest = [member for _, member in state.all.order[: min(excess, limit)]]
                by_count = [state.remove(record_id, now) for record_id in oldest]
            expired = [member for score, member in state.tomb.order if score < now - tombstone_ttl]
            for record_id in expired:
                state.tomb.remove(record_id)
            dropped = len(expired)
            over = len(state.tomb) - max_tombstones
            if over > 0:
                for _, record_id in state.tomb.order[:over]:
                    state.tomb.remove(record_id)
                dropped += over
            more = len(stale) == limit or len(old) == limit or len(state.all) > max_count
            return TrimChunk(released, by_age, by_count, dropped, more)

    def dead_letters_stats(self, *, window: int) -> DeadLetterCounts:
        with self.atomic() as now:
            state = self._state()
            dead = state.dead.order
            return DeadLetterCounts(
                now=now,
                dead=len(state.dead),
                claimed=len(state.claimed),
                requeued=len(state.requeued),
                total=len(state.all),
                tombstones=len(state.tomb),
                oldest=dead[0][0] if dead else None,
                newest=dead[-1][0] if dead else None,
                recent=len(state.all) - state.all.count_below(now - window),
                by_facet={facet: dict(counts) for facet, counts in state.counts.items()},
            )


def _ties(zset: _ZSet, score: int) -> list[tuple[int, str]]:
    lo = zset.count_below(score)
    hi = zset.count_below(score, inclusive=True)
    return zset.order[lo:hi]


def _digest(payload: bytes | None) -> str:
    """What the Redis scripts compute: the SHA-1 (hex) of a payload, "" for none."""
    return "" if payload is None else hashlib.sha1(payload, usedforsecurity=False).hexdigest()


def _clean(value: str) -> str:
    return value.replace("\n", " ").replace("\r", " ") or "unknown"
