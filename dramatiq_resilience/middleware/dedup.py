"""Deduplication: a key runs to completion once; duplicates wait or are skipped."""

from __future__ import annotations

import weakref
from typing import Any, ClassVar, NoReturn

from dramatiq.broker import Broker
from dramatiq.common import q_name
from dramatiq.middleware import Retries

from ..backends.base import StateBackend
from ..backends.dedup import DedupRecord
from ..deferral import deferral_count
from ..errors import (
    BackendError,
    ConfigurationError,
    CorruptDedupRecord,
    CorruptRecord,
    DuplicateSkipped,
    IdempotencyConflict,
    InvalidMessage,
)
from ..options import Option, boolean, choice, milliseconds, optional, positive_int
from .base import DEFAULT_BACKEND_RETRY_DELAY, ResilienceMiddleware, scratch
from .dedup_claims import Claim, new_token, set_current
from .dedup_enqueue import UniqueEnqueue
from .dedup_keys import Arguments, compute_key, fingerprint, key_option
from .dedup_renewer import lease_renewer
from .dedup_settle import Settlement, emit_for

__all__ = [
    "DEFAULT_BUSY_DELAY",
    "DEFAULT_MAX_BUSY_DELAY",
    "DEFAULT_MAX_LEASE",
    "DEFAULT_MIN_LEASE",
    "DEFAULT_RESERVATION_TIMEOUT",
    "DEFAULT_TTL",
    "Deduplication",
]

#: Milliseconds a completed key is remembered (24 hours).
DEFAULT_TTL = 86_400_000

#: The longest lease derived from an actor's time limit, in milliseconds: a
#: dead worker's key frees within a minute (RedisBroker redelivers a dead
#: worker's messages after its 60 s heartbeat timeout anyway).
DEFAULT_MAX_LEASE = 60_000

#: The shortest lease derived from an actor's time limit, in milliseconds.
DEFAULT_MIN_LEASE = 1_000

#: The first deferral of a duplicate whose key is in progress, in milliseconds;
#: it doubles with each deferral.
DEFAULT_BUSY_DELAY = 250

#: The longest deferral of a duplicate whose key is in progress, in milliseconds.
DEFAULT_MAX_BUSY_DELAY = 10_000

#: Milliseconds a unique-enqueue reservation lasts until its enqueue is confirmed.
DEFAULT_RESERVATION_TIMEOUT = 30_000

_OWNER = "dedup"

#: The deferral reason of a duplicate whose key is in progress.
BUSY = "duplicate_in_progress"


class Deduplication(ResilienceMiddleware):
    """Middleware that runs each deduplication key to completion once.

    Before a message of an actor with a ``dedup_key`` runs, its key is claimed
    ``in_progress`` with a lease (one Lua script); the lease is renewed while
    the actor runs.  On success the key is marked ``completed`` for
    ``dedup_ttl``; on failure it is released so the retry can run (forgotten
    when the failure is final).  A completed duplicate is skipped; an
    in-progress one is deferred with a growing delay; the same key with other
    arguments is dead-lettered with ``IdempotencyConflict``.  With
    ``dedup_on_enqueue``, ``send`` raises ``DuplicateMessage`` while the key is
    pending, running or completed.

    Position: before ``Retries`` (``install()`` puts it after the breaker),
    so that it sees whether a failure was final.

    Parameters:
      backend: the state backend.
      ttl: milliseconds a completed key is remembered (default 24 h);
        actor option ``dedup_ttl``.
      lease: milliseconds a claim lasts without renewal; ``None`` (default)
        derives it from the actor's ``time_limit``, clamped to 1 s .. 60 s;
        actor option ``dedup_lease``.
      payload_check: dead-letter a key reused with other arguments (default
        ``True``); actor option ``dedup_payload_check``.
      store_result: store the actor's return value (msgpack) with the
        completion (default ``False``); actor option ``dedup_store_result``.
      on_enqueue: refuse duplicate sends (default ``False``); actor option
        ``dedup_on_enqueue``.
      max_deferrals: dead-letter a duplicate deferred this often while its key
        is in progress (default ``None``: no cap); actor option
        ``dedup_max_deferrals``.
      busy_delay, max_busy_delay: the first and the longest deferral of an
        in-progress duplicate, milliseconds (250, 10 000); never past the
        holder's lease.
      reservation_timeout: milliseconds an unconfirmed reservation lasts (30 000).
      on_backend_error: ``"defer"`` (default) or ``"allow"`` when the backend
        is unreachable before processing.
      on_enqueue_backend_error: ``"send"`` (default: send without reservation;
        processing-time deduplication still holds) or ``"refuse"`` (raise
        ``UniqueEnqueueUnavailable``) when it is unreachable at ``send``.
      backend_retry_delay: milliseconds (default 5 000).

    The actor option ``dedup_key`` is a function of the actor's arguments
    returning the key (or ``None``: not deduplicated), or a constant string;
    a message option ``dedup_key`` (a string) overrides it.
    """

    option_specs: ClassVar[tuple[Option, ...]] = (
        Option("dedup_key", "key", key_option),
        Option("dedup_ttl", "ttl", milliseconds()),
        Option("dedup_lease", "lease", optional(milliseconds(minimum=10))),
        Option("dedup_payload_check", "payload_check", boolean),
        Option("dedup_store_result", "store_result", boolean),
        Option("dedup_on_enqueue", "on_enqueue", boolean),
        Option("dedup_max_deferrals", "max_deferrals", optional(positive_int)),
    )

    def __init__(
        self,
        *,
        backend: StateBackend,
        ttl: int = DEFAULT_TTL,
        lease: int | None = None,
        payload_check: bool = True,
        store_result: bool = False,
        on_enqueue: bool = False,
        max_deferrals: int | None = None,
        busy_delay: int = DEFAULT_BUSY_DELAY,
        max_busy_delay: int = DEFAULT_MAX_BUSY_DELAY,
        reservation_timeout: int = DEFAULT_RESERVATION_TIMEOUT,
        on_backend_error: str = "defer",
        on_enqueue_backend_error: str = "send",
        backend_retry_delay: int = DEFAULT_BACKEND_RETRY_DELAY,
    ) -> None:
        super().__init__(
            backend=backend, on_backend_error=on_backend_error, backend_retry_delay=backend_retry_delay
        )
        self.key: Any = None
        self.ttl = ttl
        self.lease = lease
        self.payload_check = payload_check
        self.store_result = store_result
        self.on_enqueue = on_enqueue
        self.max_deferrals = max_deferrals
        self.busy_delay = self._check_default("busy_delay", milliseconds(minimum=0), busy_delay)
        self.max_busy_delay = self._check_default("max_busy_delay", milliseconds(), max_busy_delay)
        self.reservation_timeout = self._check_default(
            "reservation_timeout", milliseconds(), reservation_timeout
        )
        self.on_enqueue_backend_error = self._check_default(
            "on_enqueue_backend_error", choice("send", "refuse"), on_enqueue_backend_error
        )
        self.check_defaults()
        self.unique = UniqueEnqueue(self)
        self._actor_options: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self.settle = Settlement(self)

    # -- the API ---------------------------------------------------------------

    def inspect(self, key: str) -> DedupRecord | None:
        """The record of deduplication key ``key``, or ``None``."""
        return self.backend.dedup_inspect(key)

    def forget(self, key: str) -> DedupRecord | None:
        """Delete ``key``'s record whatever its state (the next message runs); return what it was."""
        return self.backend.dedup_forget(key)

    def options_for(self, broker: Broker, message: Any) -> dict[str, Any]:
        """Every ``dedup_*`` option of ``message``, resolved (message > actor > default).

        Cached per actor for messages that override none of them (the usual
        case); a bad message value rejects the message, as for :meth:`option`.
        """
        actor = broker.get_actor(message.actor_name)
        if any(name in message.options for name in self._specs):
            return {name: self.option(broker, message, name) for name in self._specs}
        cached = self._actor_options.get(actor)
        if cached is None:
            cached = {name: self.actor_option(broker, actor.actor_name, name) for name in self._specs}
            self._actor_options[actor] = cached
        return cached

    def validate_actor(self, broker: Broker, actor: Any) -> None:
        # After Retries, a final failure would look like a retryable one: the key
        # would stay pending instead of being forgotten.
        order = [type(m) for m in broker.middleware]
        if (
            Retries in order
            and self in broker.middleware
            and order.index(Retries) < broker.middleware.index(self)
        ):
            raise ConfigurationError(
                "Deduplication must come before Retries in the middleware list: use dr.install(), or "
                "broker.add_middleware(Deduplication(...), before=Retries)",
                actor_name=actor.actor_name,
            )

    def lease_for(self, broker: Broker, message: Any, options: dict[str, Any] | None = None) -> int:
        """The lease of ``message`` in milliseconds: ``dedup_lease``, or derived from its time limit.

        A bad ``dedup_lease`` or ``time_limit`` message option rejects the message.
        """
        lease: int | None = (options if options is not None else self.options_for(broker, message))[
            "dedup_lease"
        ]
        if lease is not None:
            return lease
        return min(max(self.time_limit(broker, message), DEFAULT_MIN_LEASE), DEFAULT_MAX_LEASE)

    def busy_delay_for(self, message: Any, retry_after_ms: int) -> int:
        """Milliseconds to defer a duplicate whose key is in progress (jitter is added on top).

        ``busy_delay`` doubled with each such deferral of the message, at most
        ``max_busy_delay``, and never past the holder's lease (``retry_after_ms``):
        if the holder died, the key frees then.
        """
        growing = self.busy_delay * 2 ** min(deferral_count(message, BUSY), 20)
        return max(0, min(growing, self.max_busy_delay, retry_after_ms))

    # -- processing ------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: Any) -> None:
        actor = broker.get_actor(message.actor_name)
        if "dedup_key" not in actor.options and "dedup_key" not in message.options:
            return
        state = scratch(message, _OWNER)
        state["decided"] = True  # from here on, whatever happens is this hook's doing
        options = state["options"] = self.options_for(broker, message)
        arguments = Arguments(actor.fn, message.args, message.kwargs)
        key = self._key(message, options["dedup_key"], arguments)
        if key is None:
            return
        ttl = options["dedup_ttl"]
        lease = self.lease_for(broker, message, options)
        payload = fingerprint(message.actor_name, arguments) if options["dedup_payload_check"] else ""
        token = new_token()
        try:
            result = self.backend.dedup_claim(
                key,
                message_id=message.message_id,
                actor_name=message.actor_name,
                token=token,
                lease_ms=lease,
                ttl_ms=ttl,
                payload=payload,
            )
        except CorruptRecord as exc:
            self.reject_corrupt(message, key, exc)
        except BackendError as exc:
            self.backend_failed(broker, message, exc)
            return
        self.outage.succeeded()

        if result.outcome == "claimed":
            claim = Claim(
                backend=self.backend,
                key=key,
                token=token,
                message_id=message.message_id,
                actor_name=message.actor_name,
                queue_name=q_name(message.queue_name),
                lease_ms=lease,
                ttl_ms=ttl,
            )
            state.update(claim=claim, decided=False)
            lease_renewer().add(claim)
            set_current(claim)
            if result.takeover:
                self.logger.warning(
                    "Message %r took over deduplication key %r from message %r, whose lease ran out.",
                    message.message_id,
                    key,
                    result.owner,
                )
            emit_for("dedup_claimed", message, key=key, takeover=result.takeover, previous_owner=result.owner)
            return
        if result.outcome == "completed":
            self.logger.info(
                "Skipping message %r: deduplication key %r was completed by message %r.",
                message.message_id,
                key,
                result.owner,
            )
            emit_for("dedup_skipped", message, key=key, existing_message_id=result.owner)
            raise DuplicateSkipped(
                f"Message {message.message_id!r} skipped: deduplication key {key!r} was completed by "
                f"message {result.owner!r}.",
                key=key,
                existing_message_id=str(result.owner),
            )
        if result.outcome == "busy":
            self.defer(
                broker,
                message,
                delay_ms=self.busy_delay_for(message, result.retry_after_ms),
                reason=BUSY,
                max_deferrals=options["dedup_max_deferrals"],
            )
        emit_for("dedup_conflict", message, key=key, existing_message_id=result.owner, where="process")
        self.reject(
            message,
            IdempotencyConflict(
                f"Deduplication key {key!r} of actor {message.actor_name!r} is held ({result.state}) by "
                f"message {result.owner!r} with different arguments; message {message.message_id!r} was "
                "dead-lettered without running. Make the key include every argument that changes the "
                "work, or set dedup_payload_check=False.",
                actor_name=message.actor_name,
                message_id=message.message_id,
                key=key,
                existing_message_id=result.owner,
            ),
        )

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        state = scratch(message, _OWNER)
        claim: Claim | None = state.pop("claim", None)
        if claim is None:
            if exception is not None and message.failed and not state.get("decided"):
                self.settle.forget_reservation(broker, message)
            return
        set_current(None)
        if exception is None:
            self.settle.complete(message, claim, result, store=state["options"]["dedup_store_result"])
        else:
            self.settle.release(
                message, claim, forget=message.failed, reason="dead_lettered" if message.failed else "failed"
            )

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        state = scratch(message, _OWNER)
        claim: Claim | None = state.pop("claim", None)
        if claim is None:
            if message.failed and not state.get("decided"):
                self.settle.forget_reservation(broker, message)
            return
        set_current(None)
        self.settle.release(
            message, claim, forget=message.failed, reason="dead_lettered" if message.failed else "skipped"
        )

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        lease_renewer().stop()

    # -- enqueueing (see dedup_enqueue.py) ----------------------------------------

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        self.unique.before_enqueue(broker, message, delay)

    def after_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        self.unique.after_enqueue(broker, message, delay)

    # -- helpers -----------------------------------------------------------------

    def reject_corrupt(self, message: Any, key: str, error: CorruptRecord) -> NoReturn:
        """Dead-letter ``message``: its key's record is unusable, which waiting would not repair.

        Not an outage (nothing is deferred or logged as one); nothing is lost
        either: once the record is forgotten the message can be requeued.
        """
        emit_for("dedup_corrupt", message, key=key, error=error)
        self.reject(
            message,
            CorruptDedupRecord(
                f"{error}; message {message.message_id!r} of actor {message.actor_name!r} was dead-lettered "
                f"without running. Delete the record (dramatiq-resilience dedup forget {key!r}), then "
                "requeue the message from the dead letters.",
                actor_name=message.actor_name,
                message_id=message.message_id,
                key=key,
                problem=str(error),
            ),
        )

    def _key(self, message: Any, spec: Any, arguments: Arguments) -> str | None:
        try:
            return compute_key(spec, arguments)
        except Exception as exc:
            problem = str(exc) if isinstance(exc, ValueError) else f"the key function raised {exc!r}"
            self.reject(
                message,
                InvalidMessage(
                    f"Actor {message.actor_name!r}, option 'dedup_key': {problem}",
                    actor_name=message.actor_name,
                    message_id=message.message_id,
                    option="dedup_key",
                    problem=problem,
                ),
            )
