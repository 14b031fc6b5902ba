"""Deduplication operations of a state backend: one idempotency record per key.

A record is one key's state, written only by the atomic operations below:

``pending``      reserved by a unique enqueue (``dedup_reserve``), or released
                 by a failed attempt whose retry is on its way; any message with
                 the key may claim it.  ``owner`` is the message that holds it.
``in_progress``  claimed by ``owner`` with a lease that ends at ``lease_until``
                 (a time on the backend's clock) and a claim ``token`` that
                 only the claimer knows; renewed while the actor runs.
``completed``    ``owner`` ran to completion at ``completed_at``; remembered,
                 with an optional result, until ``expires_at``.

Every record also carries the ``payload`` fingerprint of the arguments that
took it (empty when the payload check is off) and ``expires_at``: a record is
gone once the backend's clock reaches it, whatever Redis' own key expiry says
(the Redis key expiry only collects garbage, so an injected test clock works).

Durations are milliseconds; times are milliseconds since the epoch on the
backend's clock.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import msgpack

from ..errors import CorruptRecord

__all__ = [
    "ClaimResult",
    "DedupOps",
    "DedupRecord",
    "RenewRequest",
    "ReserveResult",
    "State",
    "record_from_fields",
    "unpack_message",
]

State = Literal["pending", "in_progress", "completed"]


@dataclass(frozen=True)
class ClaimResult:
    """What ``dedup_claim`` decided.

    Attributes:
      outcome: ``"claimed"`` (the caller now holds the key with ``token``),
        ``"completed"`` (``owner`` already ran it: skip), ``"busy"`` (``owner``
        holds a live lease: try again in ``retry_after_ms``) or ``"conflict"``
        (the key is held, in ``state``, by arguments with another payload).
      owner: the message that holds (or held) the key; for ``"claimed"``, the
        previous holder when an expired lease was taken over, else ``None``.
      token: the claim token, for ``"claimed"`` only.
      takeover: ``"claimed"`` over an expired lease of an ``in_progress`` record.
      retry_after_ms: for ``"busy"``, milliseconds until the current lease ends.
      state: the state the record was found in (``None`` if there was none).
      claims: how many times the key has been claimed, this claim included.
    """

    outcome: Literal["claimed", "completed", "busy", "conflict"]
    owner: str | None = None
    token: str | None = None
    takeover: bool = False
    retry_after_ms: int = 0
    state: State | None = None
    claims: int = 0


@dataclass(frozen=True)
class ReserveResult:
    """What ``dedup_reserve`` decided.

    Attributes:
      reserved: the caller's message now holds the key (state ``pending``).
      owner: when not reserved, the message that holds the key.
      state: when not reserved, the state the key is in.
      conflict: when not reserved, whether the holder's payload differs.
      message: when not reserved, the holder's message as stored at its
        reservation (a ``Message.asdict()``-shaped dict), if it was stored.
    """

    reserved: bool
    owner: str | None = None
    state: State | None = None
    conflict: bool = False
    message: dict[str, Any] | None = None


@dataclass(frozen=True)
class RenewRequest:
    """One lease to extend: ``key`` held with ``token``, for ``lease_ms`` more, kept ``ttl_ms`` after."""

    key: str
    token: str
    lease_ms: int
    ttl_ms: int


@dataclass(frozen=True)
class DedupRecord:
    """A key's record, as ``dedup_inspect`` and ``dedup_forget`` show it.

    Times are milliseconds since the epoch on the backend's clock.
    ``lease_until`` is set for ``in_progress``; ``completed_at`` for
    ``completed``; ``confirmed`` says whether a ``pending`` reservation's
    enqueue was confirmed.  ``result`` is the stored result (``has_result``
    tells a stored ``None`` from none stored).  ``message`` is the holder's
    message stored by a unique enqueue.
    """

    key: str
    state: State
    owner: str
    actor_name: str
    payload: str
    created_at: int
    expires_at: int
    claims: int = 0
    takeovers: int = 0
    lease_until: int | None = None
    claimed_at: int | None = None
    completed_at: int | None = None
    confirmed: bool = True
    has_result: bool = False
    result: Any = None
    message: dict[str, Any] | None = None

    def asdict(self) -> dict[str, Any]:
        """The record as plain JSON-able values."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unpack(key: str, what: str, value: Any) -> Any:
    try:
        return msgpack.unpackb(value, raw=False, strict_map_key=False)
    except Exception as exc:
        raise CorruptRecord(
            f"The stored {what} of deduplication key {key!r} cannot be decoded: {exc}", key=key
        ) from None


def unpack_message(key: str, value: Any) -> dict[str, Any] | None:
    """Decode a stored message (msgpack of ``Message.asdict()``); ``None`` for nothing stored."""
    if value is None or value in (b"", ""):
        return None
    message = _unpack(key, "message", value)
    if not isinstance(message, dict):
        raise CorruptRecord(f"The stored message of deduplication key {key!r} is not a mapping", key=key)
    return message


def record_from_fields(key: str, fields: Mapping[Any, Any]) -> DedupRecord | None:
    """Build a :class:`DedupRecord` from a record's stored fields (bytes or text values).

    Raises:
      CorruptRecord: if a field cannot be decoded.
    """
    if not fields:
        return None
    values = {_text(name): value for name, value in fields.items()}

    def number(name: str) -> int | None:
        value = values.get(name)
        if value is None or value in (b"", ""):
            return None
        try:
            return int(float(_text(value)))
        except ValueError:
            raise CorruptRecord(
                f"Field {name!r} of deduplication key {key!r} is not a number", key=key
            ) from None

    state = _text(values.get("state", ""))
    if state not in ("pending", "in_progress", "completed"):
        raise CorruptRecord(f"Deduplication key {key!r} has an unknown state {state!r}", key=key)
    has_result = values.get("result") is not None
    return DedupRecord(
        key=key,
        state=cast(State, state),
        owner=_text(values.get("owner", "")),
        actor_name=_text(values.get("actor", "")),
        payload=_text(values.get("payload", "")),
        created_at=number("created_at") or 0,
        expires_at=number("expires_at") or 0,
        claims=number("claims") or 0,
        takeovers=number("takeovers") or 0,
        lease_until=number("lease_until"),
        claimed_at=number("claimed_at"),
        completed_at=number("completed_at"),
        confirmed=_text(values.get("confirmed", "1")) != "0",
        has_result=has_result,
        result=_unpack(key, "result", values["result"]) if has_result else None,
        message=unpack_message(key, values.get("message")),
    )


class DedupOps(abc.ABC):
    """Deduplication operations.  ``key`` is the user's deduplication key.

    Every write refreshes ``expires_at``; an expired record counts as absent.
    A record that is not one (on Redis, a key of another type) is a data
    error: every operation raises :class:`CorruptRecord` naming the key,
    except ``dedup_renew`` (not held: ``False``) and ``dedup_forget`` (deletes
    it and returns ``None``).
    """

    @abc.abstractmethod
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
        """Claim ``key`` ``in_progress`` for ``message_id`` with ``token``, for ``lease_ms``.

        Free, expired, ``pending``, or ``in_progress`` with an expired lease
        (whoever held it, this message included): claimed, the lease ending
        ``lease_ms`` from now and the record kept ``ttl_ms`` after that.
        ``completed``: not claimed, ``"completed"``.  ``in_progress`` with a
        live lease (even this message's own, redelivered after a crash):
        ``"busy"``.  A held key whose stored payload differs from a non-empty
        ``payload`` (and is non-empty): ``"conflict"``, before anything else.
        """

    @abc.abstractmethod
    def dedup_renew(self, requests: Sequence[RenewRequest]) -> list[bool]:
        """Extend each lease still held with its token; in one round trip.

        A lease that has run out is extended too as long as nobody took the
        key over.  Returns, per request, whether the key is still held.
        """

    @abc.abstractmethod
    def dedup_complete(self, key: str, *, token: str, ttl_ms: int, result: bytes | None = None) -> bool:
        """Mark ``key`` ``completed`` if still ``in_progress`` with ``token``; remember it ``ttl_ms``.

        ``result`` is stored as given (msgpack bytes).  Returns whether it was
        recorded (``False``: the claim was lost to someone else).
        """

    @abc.abstractmethod
    def dedup_release(self, key: str, *, token: str, message_id: str, forget: bool, ttl_ms: int) -> bool:
        """Give ``key`` back after a failed or skipped attempt.

        With a ``token``: if the key is ``in_progress`` with it, it becomes
        ``pending`` (owner ``message_id``, kept ``ttl_ms``: the retry can
        claim it), or is deleted with ``forget``.  Without a token (``""``):
        with ``forget``, a ``pending`` key owned by ``message_id`` is deleted
        (its message was dead-lettered before it could claim).  Returns
        whether anything changed.
        """

    @abc.abstractmethod
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
        """Reserve a free ``key`` ``pending`` for ``message_id`` (a unique enqueue).

        The reservation is unconfirmed and lasts ``timeout_ms`` until
        ``dedup_confirm`` says the enqueue happened.  ``message`` (msgpack of
        ``Message.asdict()``) is stored so that later duplicates can be given
        the original.  A key in any state is not reserved.
        """

    @abc.abstractmethod
    def dedup_confirm(self, key: str, *, message_id: str, ttl_ms: int) -> bool:
        """Confirm ``message_id``'s unconfirmed reservation of ``key``; keep it ``ttl_ms``.

        Returns whether there was such a reservation (``False`` if the message
        already claimed it, or the reservation timed out).
        """

    @abc.abstractmethod
    def dedup_inspect(self, key: str) -> DedupRecord | None:
        """The record of ``key``, or ``None``."""

    @abc.abstractmethod
    def dedup_forget(self, key: str) -> DedupRecord | None:
        """Delete the record of ``key`` whatever its state; return what it was, or ``None``."""

    @abc.abstractmethod
    def dedup_commit(
        self,
        key: str,
        *,
        token: str,
        ttl_ms: int,
        writes: Callable[[Any], Any],
        result: bytes | None = None,
    ) -> bool:
        """Apply ``writes`` and mark ``key`` ``completed``, atomically, if still held with ``token``.

        ``writes(tx)`` queues the caller's own writes: on Redis ``tx`` is a
        redis-py pipeline inside ``MULTI`` on the backend's server (so the
        writes and the completion commit together or not at all; on Redis
        Cluster, the written keys must share the record's hash slot); on the
        in-memory backend it is ``None`` and ``writes`` runs under the
        backend's lock.  Returns ``False``, without applying anything, if the
        key is no longer held with ``token``.
        """
