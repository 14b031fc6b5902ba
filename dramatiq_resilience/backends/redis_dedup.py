"""Deduplication operations on Redis: one Lua script per operation.

A key's record is one Redis hash, ``{namespace}:dedup:{<key>}:record``,
hash-tagged by the deduplication key so that a caller's own writes can share
its Redis Cluster slot (see :meth:`RedisDedupOps.dedup_commit`).

Round trips: one per operation (a renewal of every claim due at once
included), two for ``dedup_commit``.  A record that is not a hash (someone
``SET`` its key) is a data error, not an outage: operations raise
:class:`~dramatiq_resilience.errors.CorruptRecord` naming the key and what
it holds, and ``dedup_forget`` deletes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from ..errors import BackendError, BackendUnavailable, CorruptRecord
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
from .redis_base import RedisBase, script_source

__all__ = ["RedisDedupOps"]

#: How often ``dedup_commit`` retries when the record changed between its
#: check and its commit (a lease renewal touches the record).
COMMIT_ATTEMPTS = 20


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _wrong_type(error: BaseException | None) -> bool:
    """Whether ``error`` is Redis refusing an operation on a key of another type (a data error)."""
    return isinstance(error, redis.exceptions.ResponseError) and "WRONGTYPE" in str(error)


class RedisDedupOps(RedisBase, DedupOps):
    """:class:`~dramatiq_resilience.backends.dedup.DedupOps` on Redis."""

    def dedup_record_key(self, key: str) -> str:
        """The Redis key of ``key``'s record."""
        return self.key("dedup", key, "record")

    def _dedup_script(self, name: str, key: str, args: Sequence[Any]) -> Any:
        """Run script ``name`` on ``key``'s record; a record of another type raises ``CorruptRecord``."""
        try:
            return self.run_script(name, [self.dedup_record_key(key)], args)
        except BackendError as exc:
            if _wrong_type(exc.__cause__):
                raise self._corrupt(key) from exc.__cause__
            raise

    def _corrupt(self, key: str) -> CorruptRecord:
        """The error for ``key``'s record holding something else than a hash (one more round trip)."""
        record = self.dedup_record_key(key)
        try:
            kind = _text(self.client.type(record))
        except redis.exceptions.RedisError:
            kind = "none"
        holds = f"holds a {kind}" if kind != "none" else "held another type"
        return CorruptRecord(
            f"The record of deduplication key {key!r} (Redis key {record!r}) {holds}, not a hash",
            key=key,
        )

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
        outcome, owner, got_token, takeover, retry_after, state, claims = self._dedup_script(
            "dedup_claim", key, [message_id, actor_name, token, int(lease_ms), int(ttl_ms), payload]
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
        # One pipeline of EVALSHA: one round trip.  (redis-py's Script in a
        # pipeline would send SCRIPT EXISTS first: two.)  Renewals the server
        # refused because it lost the script (a restart) did nothing, so they
        # are sent again once it is loaded.  A record of another type holds no
        # claim: that renewal answers False, the others go on.
        if not requests:
            return []
        script = self.script("dedup_renew")
        now = self.now_arg()
        answers = [False] * len(requests)
        pending = list(range(len(requests)))
        with self.errors():
            for attempt in range(2):
                pipe = self.client.pipeline(transaction=False)
                for index in pending:
                    request = requests[index]
                    record = self.dedup_record_key(request.key)
                    pipe.evalsha(
                        script.sha, 1, record, now, request.token, int(request.lease_ms), int(request.ttl_ms)
                    )
                replies = pipe.execute(raise_on_error=False)
                unknown = []
                for index, reply in zip(pending, replies, strict=True):
                    if isinstance(reply, redis.exceptions.NoScriptError) and attempt == 0:
                        unknown.append(index)
                    elif _wrong_type(reply):
                        answers[index] = False
                    elif isinstance(reply, Exception):
                        raise reply
                    else:
                        answers[index] = bool(reply)
                if not unknown:
                    break
                self.client.script_load(script.script)
                pending = unknown
        return answers

    def dedup_complete(self, key: str, *, token: str, ttl_ms: int, result: bytes | None = None) -> bool:
        args = [token, int(ttl_ms), "0" if result is None else "1", result or b""]
        return bool(self._dedup_script("dedup_complete", key, args))

    def dedup_release(self, key: str, *, token: str, message_id: str, forget: bool, ttl_ms: int) -> bool:
        args = [token, message_id, "1" if forget else "0", int(ttl_ms)]
        return bool(self._dedup_script("dedup_release", key, args))

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
        answer = self._dedup_script(
            "dedup_reserve", key, [message_id, actor_name, int(timeout_ms), payload, message or b""]
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
        return bool(self._dedup_script("dedup_confirm", key, args))

    def dedup_inspect(self, key: str) -> DedupRecord | None:
        return record_from_fields(key, _pairs(self._dedup_script("dedup_inspect", key, [])))

    def dedup_forget(self, key: str) -> DedupRecord | None:
        return record_from_fields(key, _pairs(self._dedup_script("dedup_forget", key, [])))

    def dedup_commit(
        self,
        key: str,
        *,
        token: str,
        ttl_ms: int,
        writes: Callable[[Any], Any],
        result: bytes | None = None,
    ) -> bool:
        # Two round trips.  1: WATCH the record and read the claim (and the
        # time), sent together.  2: MULTI, the caller's writes, the completion,
        # EXEC.  Any change to the record in between (a takeover, a forget, a
        # renewal) aborts EXEC; we then look again.
        record = self.dedup_record_key(key)
        args: list[str | int | bytes] = [token, int(ttl_ms), "0" if result is None else "1", result or b""]
        with self.errors():
            for _ in range(COMMIT_ATTEMPTS):
                with self.client.pipeline(transaction=True) as pipe:
                    now = self._watch_claim(pipe, key, token)
                    if now is None:
                        return False
                    pipe.multi()
                    writes(pipe)
                    # EVAL, not EVALSHA: a script the server lost (a restart, SCRIPT
                    # FLUSH) would fail inside EXEC after the writes were applied; EVAL
                    # cannot, and needs no SCRIPT EXISTS first.  ``now`` is the time
                    # the claim was checked at, so the completion judges expiry as the
                    # check did (WATCH keeps the record as it was checked).
                    pipe.eval(script_source("dedup_complete"), 1, record, now, *args)
                    try:
                        answers = pipe.execute()
                    except redis.WatchError as exc:
                        if isinstance(exc.__context__, redis.exceptions.ConnectionError | redis.TimeoutError):
                            # The connection died around EXEC: it may or may not have committed.
                            raise BackendUnavailable(
                                f"Redis is unavailable: {exc.__context__} (the commit of deduplication "
                                f"key {key!r} may or may not have been applied)"
                            ) from exc
                        continue
                return bool(answers[-1])
        raise BackendError(
            f"Could not commit deduplication key {key!r}: its record kept changing during "
            f"{COMMIT_ATTEMPTS} attempts"
        )

    def _watch_claim(self, pipe: Any, key: str, token: str) -> bytes | None:
        """WATCH ``key``'s record and check it is held with ``token``, in one round trip.

        Returns the time of the check (ARGV[1] of the completion), or ``None``
        if the claim is not held.  redis-py sends WATCH and every command until
        MULTI one at a time; they are pipelined here on the pipeline's own
        connection, which then runs the transaction.
        """
        record = self.dedup_record_key(key)
        commands: list[tuple[Any, ...]] = [
            ("WATCH", record),
            ("HMGET", record, "state", "token", "expires_at"),
        ]
        if self.clock is None:
            commands.append(("TIME",))
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            raise BackendError(
                f"Claim.commit() needs a redis.Redis client (one connection pool) for its WATCH; "
                f"this RedisBackend has a {type(self.client).__name__}"
            )
        connection = pipe.connection = pool.get_connection()
        pipe.watching = True  # so that leaving the pipeline sends UNWATCH (or drops the connection)
        packed = connection.pack_commands(commands)
        for attempt in (1, 2):
            replies: list[Any] = []
            try:
                connection.send_packed_command(packed)
                for _ in commands:  # read every reply, errors too, so the connection stays in step
                    try:
                        replies.append(connection.read_response())
                    except redis.exceptions.ResponseError as exc:
                        replies.append(exc)
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                # A pooled connection that went stale (Redis restarted, failed over): nothing is
                # watched on a dead connection, so reconnecting and sending again is safe.
                connection.disconnect()
                if attempt == 2:
                    raise
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if any(_wrong_type(error) for error in errors):
            raise self._corrupt(key)
        if errors:
            raise errors[0]
        state, held, expires_at = (None if value is None else _text(value) for value in replies[1])
        if self.clock is None:
            seconds, micros = replies[2]
            now = int(seconds) * 1000 + int(micros) // 1000
        else:
            now = self.clock.now_ms()
        try:
            live = expires_at is not None and int(float(expires_at)) > now
        except ValueError:
            live = False
        if state != "in_progress" or held != token or not live:
            return None
        return b"%d" % now
