"""Deduplication operations on Redis: one Lua script per operation.

A key's record is one Redis hash, ``{namespace}:dedup:{<key>}:record``,
hash-tagged by the deduplication key so that a caller's own writes can share
its Redis Cluster slot (see :meth:`RedisDedupOps.dedup_commit`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from ..errors import BackendError
from .dedup import (
    ClaimResult,
    DedupOps,
    DedupRecord,
    RenewRequest,
    ReserveResult,
    State,
    record_from_fields,
    unpack_message,
)
from .redis_base import RedisBase

__all__ = ["RedisDedupOps"]

#: How often ``dedup_commit`` retries when the record changed between its
#: check and its commit (a lease renewal touches the record).
COMMIT_ATTEMPTS = 20


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


class RedisDedupOps(RedisBase, DedupOps):
    """:class:`~dramatiq_resilience.backends.dedup.DedupOps` on Redis."""

    def dedup_record_key(self, key: str) -> str:
        """The Redis key of ``key``'s record."""
        return self.key("dedup", key, "record")

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
        outcome, owner, got_token, takeover, retry_after, state, claims = self.run_script(
            "dedup_claim",
            [self.dedup_record_key(key)],
            [message_id, actor_name, token, int(lease_ms), int(ttl_ms), payload],
        )
        return ClaimResult(
            outcome=cast(Any, _text(outcome)),
            owner=_text(owner) or None,
            token=_text(got_token) or None,
            takeover=bool(takeover),
            retry_after_ms=int(retry_after),
            state=cast(State, _text(state)) or None,
            claims=int(claims),
        )

    def dedup_renew(self, requests: Sequence[RenewRequest]) -> list[bool]:
        if not requests:
            return []
        pipe = self.client.pipeline(transaction=False)
        for request in requests:
            self.run_script(
                "dedup_renew",
                [self.dedup_record_key(request.key)],
                [request.token, int(request.lease_ms), int(request.ttl_ms)],
                client=pipe,
            )
        with self.errors():
            return [bool(answer) for answer in pipe.execute()]

    def dedup_complete(self, key: str, *, token: str, ttl_ms: int, result: bytes | None = None) -> bool:
        args = [token, int(ttl_ms), "0" if result is None else "1", result or b""]
        return bool(self.run_script("dedup_complete", [self.dedup_record_key(key)], args))

    def dedup_release(self, key: str, *, token: str, message_id: str, forget: bool, ttl_ms: int) -> bool:
        args = [token, message_id, "1" if forget else "0", int(ttl_ms)]
        return bool(self.run_script("dedup_release", [self.dedup_record_key(key)], args))

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
        answer = self.run_script(
            "dedup_reserve",
            [self.dedup_record_key(key)],
            [message_id, actor_name, int(timeout_ms), payload, message or b""],
        )
        if int(answer[0]) == 1:
            return ReserveResult(reserved=True)
        _, owner, state, conflict, stored = answer
        return ReserveResult(
            reserved=False,
            owner=_text(owner),
            state=cast(State, _text(state)),
            conflict=bool(conflict),
            message=unpack_message(key, stored),
        )

    def dedup_confirm(self, key: str, *, message_id: str, ttl_ms: int) -> bool:
        args = [message_id, int(ttl_ms)]
        return bool(self.run_script("dedup_confirm", [self.dedup_record_key(key)], args))

    def dedup_inspect(self, key: str) -> DedupRecord | None:
        return record_from_fields(
            key, _pairs(self.run_script("dedup_inspect", [self.dedup_record_key(key)], []))
        )

    def dedup_forget(self, key: str) -> DedupRecord | None:
        return record_from_fields(
            key, _pairs(self.run_script("dedup_forget", [self.dedup_record_key(key)], []))
        )

    def dedup_commit(
        self,
        key: str,
        *,
        token: str,
        ttl_ms: int,
        writes: Callable[[Any], Any],
        result: bytes | None = None,
    ) -> bool:
        # WATCH the record, check the claim, then queue the caller's writes and
        # the completion in one MULTI.  Any change to the record in between (a
        # takeover, a forget, a renewal) aborts EXEC; we then look again.
        record = self.dedup_record_key(key)
        with self.errors():
            for _ in range(COMMIT_ATTEMPTS):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(record)
                        state, held = pipe.hmget(record, ["state", "token"])
                        if state != b"in_progress" or held != token.encode():
                            return False
                        pipe.multi()
                        writes(pipe)
                        args = [token, int(ttl_ms), "0" if result is None else "1", result or b""]
                        self.run_script("dedup_complete", [record], args, client=pipe)
                        answers = pipe.execute()
                    except redis.WatchError:
                        continue
                # WATCH makes the check above hold at EXEC, so the completion succeeds.
                return bool(answers[-1])
        raise BackendError(
            f"Could not commit deduplication key {key!r}: its record kept changing during "
            f"{COMMIT_ATTEMPTS} attempts"
        )
