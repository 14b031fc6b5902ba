"""Deduplication operations in memory, with the same results as the Redis scripts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CorruptRecord
from .dedup import (
    ClaimResult,
    DedupOps,
    DedupRecord,
    RenewRequest,
    ReserveResult,
    record_from_fields,
    unpack_message,
)
from .stub_base import StubBase

__all__ = ["StubDedupOps"]


class StubDedupOps(StubBase, DedupOps):
    """:class:`~dramatiq_resilience.backends.dedup.DedupOps` in memory.

    ``self.data["dedup"]`` maps a key to its record: a dict with the same
    fields as the Redis hash (see ``lua/dedup_claim.lua``).
    """

    def _records(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("dedup", {})

    def _live(self, key: str, now: int) -> dict[str, Any] | None:
        """The record of ``key`` unless it expired (an expired one is dropped).

        Raises:
          CorruptRecord: the record is not a mapping (as Redis answers WRONGTYPE).
        """
        records = self._records()
        record = records.get(key)
        if record is not None and not isinstance(record, dict):
            raise CorruptRecord(
                f"The record of deduplication key {key!r} holds a {type(record).__name__}, not a mapping",
                key=key,
            )
        if record is not None and record["expires_at"] <= now:
            del records[key]
            record = None
        return record

    def dedup_claim(
        self,
        key: str,
        *,
        message_id: str,
        actor_name: str,
        token: str,
        lease_ms: int,
        ttl_ms: int,
        payload: str = "",
    ) -> ClaimResult:
        with self.atomic() as now:
            record = self._live(key, now)
            takeover, previous, found = False, None, None
            if record is not None:
                found = record["state"]
                stored = record.get("payload", "")
                if payload and stored and stored != payload:
                    return ClaimResult(
                        "conflict", owner=record["owner"], state=found, claims=record["claims"]
                    )
                if found == "completed":
                    return ClaimResult(
                        "completed", owner=record["owner"], state=found, claims=record["claims"]
                    )
                if found == "in_progress":
                    left = record["lease_until"] - now
                    if left > 0:
                        return ClaimResult(
                            "busy",
                            owner=record["owner"],
                            retry_after_ms=left,
                            state=found,
                            claims=record["claims"],
                        )
                    takeover, previous = True, record["owner"]
                    record["takeovers"] = record.get("takeovers", 0) + 1
                if not stored and payload:
                    record["payload"] = payload
            else:
                record = self._records()[key] = {
                    "actor": actor_name,
                    "payload": payload,
                    "created_at": now,
                    "claims": 0,
                }
            record.update(
                state="in_progress",
                owner=message_id,
                token=token,
                lease_until=now + lease_ms,
                claimed_at=now,
                expires_at=now + lease_ms + ttl_ms,
            )
            record.pop("confirmed", None)
            record["claims"] += 1
            return ClaimResult(
                "claimed",
                owner=previous,
                token=token,
                takeover=takeover,
                state=found,
                claims=record["claims"],
            )

    def dedup_renew(self, requests: Sequence[RenewRequest]) -> list[bool]:
        with self.atomic() as now:
            answers = []
            for request in requests:
                try:
                    record = self._live(request.key, now)
                except CorruptRecord:
                    record = None  # holds no claim, as on Redis
                held = (
                    record is not None
                    and record["state"] == "in_progress"
                    and record["token"] == request.token
                )
                if record is not None and held:
                    record["lease_until"] = now + request.lease_ms
                    record["expires_at"] = record["lease_until"] + request.ttl_ms
                answers.append(held)
            return answers

    def _held(self, key: str, token: str, now: int) -> dict[str, Any] | None:
        record = self._live(key, now)
        if record is None or record["state"] != "in_progress" or record.get("token") != token:
            return None
        return record

    def _complete(self, record: dict[str, Any], now: int, ttl_ms: int, result: bytes | None) -> None:
        record.update(state="completed", completed_at=now, expires_at=now + ttl_ms)
        record.pop("token", None)
        record.pop("lease_until", None)
        if result is not None:
            record["result"] = result

    def dedup_complete(self, key: str, *, token: str, ttl_ms: int, result: bytes | None = None) -> bool:
        with self.atomic() as now:
            record = self._held(key, token, now)
            if record is None:
                return False
            self._complete(record, now, ttl_ms, result)
            return True

    def dedup_release(self, key: str, *, token: str, message_id: str, forget: bool, ttl_ms: int) -> bool:
        with self.atomic() as now:
            record = self._live(key, now)
            if record is None:
                return False
            if token:
                if self._held(key, token, now) is None:
                    return False
                if forget:
                    del self._records()[key]
                    return True
                record.update(state="pending", owner=message_id, confirmed="1", expires_at=now + ttl_ms)
                record.pop("token", None)
                record.pop("lease_until", None)
                return True
            if forget and record["state"] == "pending" and record["owner"] == message_id:
                del self._records()[key]
                return True
            return False

    def dedup_reserve(
        self,
        key: str,
        *,
        message_id: str,
        actor_name: str,
        timeout_ms: int,
        payload: str = "",
        message: bytes | None = None,
    ) -> ReserveResult:
        with self.atomic() as now:
            record = self._live(key, now)
            if record is not None:
                stored = record.get("payload", "")
                return ReserveResult(
                    reserved=False,
                    owner=record["owner"],
                    state=record["state"],
                    conflict=bool(payload and stored and stored != payload),
                    message=unpack_message(key, record.get("message")),
                )
            record = self._records()[key] = {
                "state": "pending",
                "owner": message_id,
                "actor": actor_name,
                "payload": payload,
                "created_at": now,
                "confirmed": "0",
                "claims": 0,
                "expires_at": now + timeout_ms,
            }
            if message:
                record["message"] = message
            return ReserveResult(reserved=True)

    def dedup_confirm(self, key: str, *, message_id: str, ttl_ms: int) -> bool:
        with self.atomic() as now:
            record = self._live(key, now)
            if (
                record is None
                or record["state"] != "pending"
                or record["owner"] != message_id
                or record.get("confirmed") != "0"
            ):
                return False
            record.update(confirmed="1", expires_at=now + ttl_ms)
            return True

    def dedup_inspect(self, key: str) -> DedupRecord | None:
        with self.atomic() as now:
            record = self._live(key, now)
            return None if record is None else record_from_fields(key, record)

    def dedup_forget(self, key: str) -> DedupRecord | None:
        with self.atomic() as now:
            try:
                record = self._live(key, now)
            except CorruptRecord:
                record = None  # deleted all the same, as on Redis
            self._records().pop(key, None)
            return None if record is None else record_from_fields(key, record)

    def dedup_commit(
        self,
        key: str,
        *,
        token: str,
        ttl_ms: int,
        writes: Callable[[Any], Any],
        result: bytes | None = None,
    ) -> bool:
        with self.atomic() as now:
            record = self._held(key, token, now)
            if record is None:
                return False
            writes(None)
            self._complete(record, now, ttl_ms, result)
            return True
