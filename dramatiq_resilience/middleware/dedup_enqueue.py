"""Unique enqueue: ``send`` refuses a duplicate while its key is pending, running or completed.

A producer's first send of a message whose actor has ``dedup_on_enqueue``
reserves the key ``pending`` for that message (one Lua script) in
``before_enqueue``, or raises :class:`~dramatiq_resilience.errors.DuplicateMessage`
carrying the holder's id (and, when stored, the holder's message).  Re-enqueues
(retries, deferrals, delayed-message moves, redrives) pass: see
:func:`~dramatiq_resilience.enqueue.is_producer_send`.

The reservation is confirmed in ``after_enqueue`` and then lasts
``dedup_ttl`` (plus the message's delay).  If the enqueue fails in between,
``after_enqueue`` never comes: the reservation then lasts only
``reservation_timeout``; :func:`send_unique` and the next unique send on the
same thread release it at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dramatiq import Actor, Message
from dramatiq.broker import Broker
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound

from ..enqueue import is_producer_send
from ..errors import (
    BackendError,
    ConfigurationError,
    CorruptRecord,
    DuplicateMessage,
    UniqueEnqueueUnavailable,
)
from .dedup_keys import Arguments, compute_key, fingerprint, pack_message, unpack_message
from .dedup_settle import emit_for

if TYPE_CHECKING:
    from .dedup import Deduplication

__all__ = ["UniqueEnqueue", "send_unique", "send_unique_with_options"]


class UniqueEnqueue:
    """The enqueue side of :class:`~dramatiq_resilience.Deduplication`."""

    def __init__(self, middleware: Deduplication) -> None:
        self.middleware = middleware
        self._local = threading.local()

    @property
    def _reservations(self) -> dict[str, tuple[str, int]]:
        """This thread's reservations whose enqueue is not confirmed yet: message id -> (key, ttl ms)."""
        reservations: dict[str, tuple[str, int]] | None = getattr(self._local, "reservations", None)
        if reservations is None:
            reservations = self._local.reservations = {}
        return reservations

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        self.release_unconfirmed()
        try:
            actor = broker.get_actor(message.actor_name)
        except ActorNotFound:
            return
        forced = getattr(self._local, "forced", False)
        if "dedup_key" not in actor.options and "dedup_key" not in message.options:
            if forced:
                raise ConfigurationError(
                    "send_unique() needs the actor to have a dedup_key", actor_name=actor.actor_name
                )
            return
        if not (forced or self.middleware.resolve_option(broker, message, "dedup_on_enqueue")):
            return
        if not is_producer_send(message):
            return
        arguments = Arguments(actor.fn, message.args, message.kwargs)
        try:
            key = compute_key(self.middleware.resolve_option(broker, message, "dedup_key"), arguments)
        except Exception as exc:
            problem = str(exc) if isinstance(exc, ValueError) else f"the key function raised {exc!r}"
            raise ConfigurationError(problem, actor_name=actor.actor_name, option="dedup_key") from exc
        if key is None:
            return
        check = self.middleware.resolve_option(broker, message, "dedup_payload_check")
        payload = fingerprint(message.actor_name, arguments) if check else ""
        middleware = self.middleware
        try:
            answer = middleware.backend.dedup_reserve(
                key,
                message_id=message.message_id,
                actor_name=message.actor_name,
                timeout_ms=middleware.reservation_timeout,
                payload=payload,
                message=pack_message(message),
            )
        except CorruptRecord as exc:
            # A data error, not an outage: send it.  Processing dead-letters it
            # (nothing runs, nothing is lost) until the record is forgotten.
            middleware.logger.error(
                "Message %r of actor %r is sent without a unique-enqueue reservation: %s.",
                message.message_id,
                message.actor_name,
                exc,
            )
            emit_for("dedup_unreserved", message, key=key, error=exc)
            return
        except BackendError as exc:
            self._backend_failed(message, key, exc)
            return
        middleware.outage.succeeded()
        if answer.reserved:
            ttl = self.middleware.resolve_option(broker, message, "dedup_ttl")
            self._reservations[message.message_id] = (key, ttl + (delay or 0))
            return

        existing = unpack_message(answer.message)
        if existing is None and payload and not answer.conflict:
            # Not stored (the key was claimed by a message sent without a unique
            # enqueue): same arguments, so rebuild it with the holder's id.
            existing = Message(
                queue_name=q_name(message.queue_name),
                actor_name=message.actor_name,
                args=tuple(message.args),
                kwargs=dict(message.kwargs),
                options={},
                message_id=str(answer.owner),
                message_timestamp=0,
            )
        emit_for(
            "dedup_conflict" if answer.conflict else "dedup_refused",
            message,
            key=key,
            existing_message_id=answer.owner,
            **({"where": "enqueue"} if answer.conflict else {"state": answer.state}),
        )
        differs = " with different arguments" if answer.conflict else ""
        raise DuplicateMessage(
            f"Deduplication key {key!r} of actor {message.actor_name!r} is already taken ({answer.state}) by "
            f"message {answer.owner!r}{differs}; message {message.message_id!r} was not sent.",
            actor_name=message.actor_name,
            key=key,
            existing_message_id=str(answer.owner),
            existing_message=existing,
            state=answer.state,
            conflict=answer.conflict,
        )

    def after_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        reservation = self._reservations.pop(message.message_id, None)
        if reservation is None:
            return
        key, ttl = reservation
        try:
            self.middleware.backend.dedup_confirm(key, message_id=message.message_id, ttl_ms=ttl)
        except CorruptRecord as exc:
            self.middleware.logger.error(
                "Could not confirm the reservation of %r: %s.", message.message_id, exc
            )
            return
        except BackendError as exc:
            # The reservation times out after reservation_timeout; processing-time
            # deduplication still holds for the message.
            self.middleware.outage.failed(exc, action="send without confirming reservations")
            return
        self.middleware.outage.succeeded()

    def release_unconfirmed(self) -> None:
        """Release this thread's reservations whose enqueue failed (no ``after_enqueue`` came)."""
        reservations = self._reservations
        while reservations:
            message_id, (key, _) = reservations.popitem()
            with contextlib.suppress(BackendError):  # else it times out after reservation_timeout
                self.middleware.backend.dedup_release(
                    key, token="", message_id=message_id, forget=True, ttl_ms=0
                )

    def _backend_failed(self, message: Any, key: str, exc: BackendError) -> None:
        middleware = self.middleware
        if middleware.on_enqueue_backend_error == "refuse":
            middleware.outage.failed(exc, action="refuse unique sends")
            raise UniqueEnqueueUnavailable(
                f"Message {message.message_id!r} of actor {message.actor_name!r} was not sent: its "
                f"deduplication key {key!r} cannot be reserved while the state backend is unreachable "
                f"({exc}).",
                actor_name=message.actor_name,
                key=key,
            ) from exc
        middleware.outage.failed(exc, action="send messages without a unique-enqueue reservation")
        emit_for("dedup_unreserved", message, key=key, error=exc)

    @contextmanager
    def forced(self) -> Iterator[None]:
        """Reserve on enqueue inside this block even without ``dedup_on_enqueue``."""
        previous = getattr(self._local, "forced", False)
        self._local.forced = True
        try:
            yield
        finally:
            self._local.forced = previous


def _unique_of(actor: Actor[Any, Any]) -> UniqueEnqueue:
    from .dedup import Deduplication

    for middleware in actor.broker.middleware:
        if isinstance(middleware, Deduplication):
            return middleware.unique
    raise ConfigurationError(
        "send_unique() needs the Deduplication middleware on the actor's broker (dr.install() adds it)",
        actor_name=actor.actor_name,
    )


def send_unique(actor: Actor[Any, Any], *args: Any, **kwargs: Any) -> Message[Any]:
    """Send a message to ``actor`` unless its deduplication key is taken; return the message either way.

    Returns the new message, or the one already holding the key (pending,
    running, or completed within ``dedup_ttl``): the original as it was sent
    when it went through a unique enqueue, else rebuilt from these arguments
    with the holder's id.  Works whether or not the actor sets
    ``dedup_on_enqueue``; the actor needs a ``dedup_key``.

    Raises:
      DuplicateMessage: the key is held by a message with other arguments.
      ConfigurationError: the actor has no ``dedup_key``, or the broker no
        ``Deduplication``.
    """
    return send_unique_with_options(actor, args=args, kwargs=kwargs)


def send_unique_with_options(
    actor: Actor[Any, Any],
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    delay: int | None = None,
    **options: Any,
) -> Message[Any]:
    """:func:`send_unique` with ``send_with_options`` arguments (``delay`` in milliseconds)."""
    unique = _unique_of(actor)
    with unique.forced():
        try:
            return actor.send_with_options(args=args, kwargs=kwargs, delay=delay, **options)
        except DuplicateMessage as exc:
            if exc.conflict or exc.existing_message is None:
                raise
            return exc.existing_message
        except Exception:
            unique.release_unconfirmed()  # the enqueue failed after the reservation
            raise
