"""A deduplication claim held by the message being processed, and its commit helper.

Inside an actor with a ``dedup_key``, :func:`current_claim` returns the
:class:`Claim` that :class:`~dramatiq_resilience.Deduplication` took for this
delivery.  :meth:`Claim.commit` applies the actor's own Redis writes and marks
the key completed in one transaction, fenced by the claim's token: if the
lease was lost (this worker stalled and another took the key over), nothing
is written and :class:`~dramatiq_resilience.errors.LeaseLost` is raised.  That
is what makes an effect exactly-once even when a worker is SIGKILLed between
doing the work and recording it (see the README's "Deduplication" section).
"""

from __future__ import annotations

import contextvars
import os
import random
import time
from collections.abc import Callable
from typing import Any

import msgpack

from .. import events
from ..backends.base import StateBackend
from ..errors import LeaseLost

__all__ = ["Claim", "current_claim"]

_current: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "dramatiq_resilience_claim", default=None
)

_NO_RESULT: Any = object()

_rng: tuple[int, random.Random] | None = None


def new_token() -> str:
    """A claim token: unique across processes and hosts, cheap (no system call per token).

    The generator is seeded from ``os.urandom`` once per process (again after a
    fork, so that forked workers never share a sequence), and the process id is
    part of the token.
    """
    global _rng  # noqa: PLW0603 - one generator per process
    pid = os.getpid()
    if _rng is None or _rng[0] != pid:
        _rng = (pid, random.Random(os.urandom(16)))
    return f"{pid:x}-{_rng[1].getrandbits(96):024x}"


def current_claim() -> Claim | None:
    """The claim of the message this thread is processing, or ``None``.

    ``None`` when the actor has no ``dedup_key``, when its key function
    returned ``None``, or when the backend was down and
    ``on_backend_error="allow"`` ran the message without a claim.
    """
    return _current.get()


class Claim:
    """A deduplication key held ``in_progress`` by one delivery of one message.

    Attributes:
      key: the deduplication key.
      token: the claim token; the key's record holds it while this claim is
        current, so it fences stale holders.
      message_id, actor_name, queue_name: the message holding the key.
      lease_ms: the lease in milliseconds, renewed every third of it.
      ttl_ms: milliseconds the key is remembered once completed.
      lost: the lease was lost to another message (seen by a renewal).
      committed: :meth:`commit` completed the key.
    """

    def __init__(
        self,
        *,
        backend: StateBackend,
        key: str,
        token: str,
        message_id: str,
        actor_name: str,
        queue_name: str,
        lease_ms: int,
        ttl_ms: int,
    ) -> None:
        self.backend = backend
        self.key = key
        self.token = token
        self.message_id = message_id
        self.actor_name = actor_name
        self.queue_name = queue_name
        self.lease_ms = lease_ms
        self.ttl_ms = ttl_ms
        self.lost = False
        self.committed = False
        #: Set while commit() runs, so that the renewer leaves the record alone.
        self.committing = False
        #: When the lease was last taken or renewed (time.monotonic(), seconds).
        self.renewed_at = time.monotonic()

    def __repr__(self) -> str:
        return f"Claim(key={self.key!r}, message_id={self.message_id!r})"

    @property
    def hash_tag(self) -> str:
        """``{<key>}``: name your own keys with it to share the record's Redis Cluster slot."""
        return "{" + self.key + "}"

    def report_lost(self, at: str) -> None:
        """Mark the claim lost (seen ``at`` "renew" or "commit") and emit ``dedup_lease_lost``."""
        self.lost = True
        events.emit(
            "dedup_lease_lost",
            actor_name=self.actor_name,
            queue_name=self.queue_name,
            message_id=self.message_id,
            key=self.key,
            at=at,
        )

    def commit(self, writes: Callable[[Any], Any], *, result: Any = _NO_RESULT) -> None:
        """Apply ``writes`` and mark the key completed in one transaction.

        ``writes(tx)`` queues your writes on ``tx``: a redis-py pipeline in
        ``MULTI`` on the state backend's Redis (on Redis Cluster, keys that
        contain :attr:`hash_tag`).  They commit together with the completion,
        or not at all.  Redis does not roll back a command that fails inside
        ``EXEC`` (a wrong type), so queue only commands that cannot.  On the
        in-memory backend ``tx`` is ``None`` and ``writes`` runs under its lock.

        ``result`` (msgpack-able) is stored with the completion when given.

        Raises:
          LeaseLost: the key is no longer held by this claim; nothing was written.
          BackendError: the backend failed; the transaction may or may not
            have committed (a retry then finds the key completed, or claims it).
        """
        if self.committed:
            raise RuntimeError(f"the claim on {self.key!r} was already committed")
        packed = None if result is _NO_RESULT else bytes(msgpack.packb(result, use_bin_type=True))
        self.committing = True
        try:
            done = self.backend.dedup_commit(
                self.key, token=self.token, ttl_ms=self.ttl_ms, writes=writes, result=packed
            )
            self.committed = done
        finally:
            self.committing = False
        if not done:
            self.report_lost("commit")
            raise LeaseLost(
                f"Message {self.message_id!r} no longer holds deduplication key {self.key!r} (its lease ran "
                "out and another message took the key over); its writes were not applied.",
                key=self.key,
                message_id=self.message_id,
            )


def set_current(claim: Claim | None) -> None:
    """Make ``claim`` the current thread's claim (the middleware's business)."""
    _current.set(claim)
