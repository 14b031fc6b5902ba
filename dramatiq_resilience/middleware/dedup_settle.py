"""Settling a deduplication claim after processing: complete it, release it, or forget a reservation.

A settlement that fails because the backend is unreachable is handed to the
lease renewer, which retries it and keeps the claim's lease alive meanwhile,
so that nobody takes over a key whose work is done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
from dramatiq.broker import Broker
from dramatiq.common import q_name

from .. import events
from ..errors import BackendError, CorruptRecord
from .dedup_claims import Claim
from .dedup_keys import Arguments, compute_key
from .dedup_renewer import lease_renewer

if TYPE_CHECKING:
    from .dedup import Deduplication

__all__ = ["Settlement", "emit_for"]


def emit_for(name: str, message: Any, **fields: Any) -> None:
    """Emit event ``name`` about ``message`` (actor, canonical queue and id first)."""
    events.emit(
        name,
        actor_name=message.actor_name,
        queue_name=q_name(message.queue_name),
        message_id=message.message_id,
        **fields,
    )


def what(claim: Claim, verb: str) -> str:
    """``verb`` ("complete", "release") applied to ``claim``, for logs."""
    return f"{verb} deduplication key {claim.key!r} of message {claim.message_id!r}"


class Settlement:
    """The after-processing side of :class:`~dramatiq_resilience.Deduplication`."""

    def __init__(self, middleware: Deduplication) -> None:
        self.middleware = middleware

    def complete(self, message: Any, claim: Claim, result: Any, *, store: bool) -> None:
        """The actor succeeded: mark the key completed (unless ``Claim.commit()`` did)."""
        if claim.committed:
            lease_renewer().discard(claim)
            emit_for("dedup_completed", message, key=claim.key, committed=True)
            return
        packed = None
        if store:
            try:
                packed = bytes(msgpack.packb(result, use_bin_type=True))
            except (TypeError, ValueError, OverflowError) as exc:
                self.middleware.logger.warning(
                    "Result of message %r not stored: %s.", message.message_id, exc
                )
        backend, logger = self.middleware.backend, self.middleware.logger

        def complete() -> bool:
            done = backend.dedup_complete(claim.key, token=claim.token, ttl_ms=claim.ttl_ms, result=packed)
            if done:
                emit_for("dedup_completed", message, key=claim.key, committed=False)
            else:
                logger.error(
                    "Message %r finished after losing deduplication key %r to another message (its lease "
                    "ran out); its effects may have happened twice.",
                    message.message_id,
                    claim.key,
                )
                emit_for("dedup_lease_lost", message, key=claim.key, at="complete")
            return done

        self._settle(message, claim, complete, "complete")

    def release(self, message: Any, claim: Claim, *, forget: bool, reason: str) -> None:
        """The attempt failed or was skipped: give the key back (``forget``: delete it)."""
        backend = self.middleware.backend

        def release() -> bool:
            done = backend.dedup_release(
                claim.key,
                token=claim.token,
                message_id=message.message_id,
                forget=forget,
                ttl_ms=claim.ttl_ms,
            )
            if done:
                emit_for("dedup_released", message, key=claim.key, reason=reason)
            return done

        self._settle(message, claim, release, "release")

    def forget_reservation(self, broker: Broker, message: Any) -> None:
        """A message that never claimed its key was dead-lettered: free its pending reservation."""
        actor = broker.get_actor(message.actor_name)
        if "dedup_key" not in actor.options and "dedup_key" not in message.options:
            return
        middleware = self.middleware
        try:
            spec = middleware.resolve_option(broker, message, "dedup_key")
            key = compute_key(spec, Arguments(actor.fn, message.args, message.kwargs))
            if key is not None and middleware.backend.dedup_release(
                key, token="", message_id=message.message_id, forget=True, ttl_ms=0
            ):
                emit_for("dedup_released", message, key=key, reason="dead_lettered")
        except Exception as exc:
            middleware.logger.warning(
                "Could not free the reservation of dead-lettered message %r: %s", message.message_id, exc
            )

    def _settle(self, message: Any, claim: Claim, action: Callable[[], bool], verb: str) -> None:
        renewer = lease_renewer()
        renewer.discard(claim)  # before acting: a renewal racing the settlement must not cry "lost"
        try:
            action()
        except CorruptRecord as exc:
            # Someone overwrote the record while the actor ran: there is no claim left
            # to settle, and retrying would not change that.  Not an outage.
            self.middleware.logger.error("Could not %s: %s.", what(claim, verb), exc)
            emit_for("dedup_corrupt", message, key=claim.key, error=exc)
            return
        except BackendError as exc:
            self.middleware.outage.failed(exc, action="settle claims in the background")
            renewer.settle_later(claim, action, what(claim, verb))
            emit_for("dedup_settle_retrying", message, key=claim.key, action=verb)
            return
        self.middleware.outage.succeeded()
