"""Dead-letter storage on Redis: one Lua script per operation (``lua/dead_letters_*.lua``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import msgpack
from redis.commands.core import Script

from .dead_letters import (
    FACETS,
    DeadLetterCounts,
    DeadLetterEntry,
    DeadLetterOps,
    ListChunk,
    StoredDeadLetter,
    TrimChunk,
)
from .redis_base import RedisBase, script_source

__all__ = ["RedisDeadLetterOps", "parse_index_line"]

#: The hash tag shared by every dead-letter key: one Redis Cluster slot.
GROUP = "dlq"

_STATUS = {"d": "dead", "r": "requeued", "c": "claimed"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def clean_facet(value: str) -> str:
    """A facet value safe for the index entry (no newlines, never empty)."""
    return value.replace("\n", " ").replace("\r", " ") or "unknown"


def parse_index_line(record_id: str, line: Any, payload: Any = None) -> StoredDeadLetter:
    """A :class:`StoredDeadLetter` from an index entry line (``None`` line: only a payload is left)."""
    if line is None or line is False:
        return StoredDeadLetter(record_id, "", 0, payload=payload or None)
    fields = _text(line).split("\n")
    fields += [""] * (6 - len(fields))
    status = _STATUS.get(fields[0][:1], fields[0])
    try:
        failed_at = int(float(fields[1]))
    except ValueError:
        failed_at = 0
    return StoredDeadLetter(
        record_id, status, failed_at, fields[2], fields[3], fields[4], fields[5], payload or None
    )


def _pairs(flat: Sequence[Any]) -> dict[str, int]:
    return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


class RedisDeadLetterOps(RedisBase, DeadLetterOps):
    """:class:`DeadLetterOps` on Redis.  See ``backends/dead_letters.py`` for the layout.

    List, claim and finish, which carry a whole requeue batch, exchange it
    with their scripts as one msgpack value instead of thousands of arguments and
    replies: redis-py handles each of those in Python, cmsgpack in Redis and
    msgpack here in C.
    """

    def _dl_keys(self) -> list[str]:
        keys: list[str] | None = self.__dict__.get("_dead_letter_keys")
        if keys is None:
            part = ("rec", "idx", "all", "dead", "requeued", "claimed", "tomb")
            keys = [self.key("dead_letters", GROUP, name) for name in part]
            keys += [self.key("dead_letters", GROUP, "n", facet) for facet in FACETS]
            keys.append(self.key("dead_letters", GROUP, "by", ""))
            self.__dict__["_dead_letter_keys"] = keys
        return keys

    def _dl_script(self, name: str) -> Script:
        # Like RedisBase.script, with the dead-letter library between prelude and body.
        script = self._scripts.get(name)
        if script is None:
            with self._scripts_lock:
                script = self._scripts.get(name)
                if script is None:
                    folder = resources.files("dramatiq_resilience.backends.lua")
                    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
                    source = script_source("_dead_letters_lib") + "\n" + body
                    script = self._scripts[name] = self.client.register_script(source)
        return script

    def _run(self, name: str, args: Sequence[Any]) -> Any:
        script = self._dl_script(name)
        with self.errors():
            return script(keys=self._dl_keys(), args=[self.now_arg(), *args])

    # -- operations -----------------------------------------------------------------

    def dead_letters_write(self, entries: Sequence[DeadLetterEntry], *, replace: bool) -> list[int]:
        if not entries:
            return []
        args: list[Any] = ["replace" if replace else "insert"]
        for entry in entries:
            args += [entry.record_id, entry.payload, entry.failed_at]
            args += [clean_facet(value) for value in entry.facets()]
        return [int(outcome) for outcome in self._run("dead_letters_write", args)]

    def dead_letters_get(self, record_ids: Sequence[str]) -> list[StoredDeadLetter | None]:
        if not record_ids:
            return []
        flat = self._run("dead_letters_get", list(record_ids))
        found: list[StoredDeadLetter | None] = []
        for i in range(0, len(flat), 3):
            record_id, line, payload = _text(flat[i]), flat[i + 1], flat[i + 2]
            found.append(
                None if line is None and payload is None else parse_index_line(record_id, line, payload)
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
        args: list[Any] = [
            status,
            "desc" if descending else "asc",
            limit,
            "" if cursor is None else cursor[0],
            "" if cursor is None else cursor[1],
            "" if since is None else since,
            "" if until is None else until,
            budget,
            "1" if with_payload else "0",
        ]
        for facet, values in facets.items():
            unique = list(dict.fromkeys(clean_facet(value) for value in values))
            args += [facet, len(unique), *unique]
        packed, score, last, scanned = self._run("dead_letters_list", args)
        flat = msgpack.unpackb(packed, raw=True)
        entries = [parse_index_line(_text(flat[i]), flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        next_cursor = None if last is None else (int(float(score)), _text(last))
        return ListChunk(entries, next_cursor, int(scanned))

    def dead_letters_claim(self, record_ids: Sequence[str], token: str) -> list[StoredDeadLetter]:
        if not record_ids:
            return []
        flat = msgpack.unpackb(self._run("dead_letters_claim", [token, *record_ids]), raw=True)
        return [parse_index_line(_text(flat[i]), flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    def dead_letters_release(self, record_ids: Sequence[str], token: str) -> int:
        if not record_ids:
            return 0
        return int(self._run("dead_letters_release", [token, *record_ids]))

    def dead_letters_finish(self, items: Sequence[tuple[str, bytes]], token: str) -> list[str]:
        if not items:
            return []
        flat = [value for item in items for value in item]
        reply = self._run("dead_letters_finish", [token, msgpack.packb(flat, use_bin_type=False)])
        return [_text(record_id) for record_id in msgpack.unpackb(reply, raw=True)]

    def dead_letters_repair(self, items: Sequence[tuple[DeadLetterEntry, str]]) -> list[int]:
        if not items:
            return []
        args: list[Any] = []
        for entry, digest in items:
            args += [entry.record_id, entry.payload, entry.failed_at]
            args += [clean_facet(value) for value in entry.facets()]
            args.append(digest)
        return [int(outcome) for outcome in self._run("dead_letters_repair", args)]

    def dead_letters_delete(
        self, record_ids: Sequence[str], *, statuses: Sequence[str]
    ) -> list[StoredDeadLetter]:
        if not record_ids:
            return []
        letters = "".join(status[0] for status in statuses if status in ("dead", "requeued"))
        flat = self._run("dead_letters_delete", [letters, *record_ids])
        return [parse_index_line(_text(flat[i]), flat[i + 1] or None) for i in range(0, len(flat), 2)]

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
        released, by_age, by_count, dropped, more = self._run(
            "dead_letters_trim", [max_age, max_count, claim_timeout, tombstone_ttl, max_tombstones, limit]
        )

        def removed(flat: Sequence[Any]) -> list[StoredDeadLetter]:
            return [parse_index_line(_text(flat[i]), flat[i + 1] or None) for i in range(0, len(flat), 2)]

        return TrimChunk(int(released), removed(by_age), removed(by_count), int(dropped), bool(more))

    def dead_letters_stats(self, *, window: int) -> DeadLetterCounts:
        reply = self._run("dead_letters_stats", [window])
        now, dead, claimed, requeued, total, tombstones, oldest, newest, recent = reply[:9]
        return DeadLetterCounts(
            now=int(now),
            dead=int(dead),
            claimed=int(claimed),
            requeued=int(requeued),
            total=int(total),
            tombstones=int(tombstones),
            oldest=None if oldest is None else int(float(oldest)),
            newest=None if newest is None else int(float(newest)),
            recent=int(recent),
            by_facet={facet: _pairs(flat) for facet, flat in zip(FACETS, reply[9:13], strict=True)},
        )
