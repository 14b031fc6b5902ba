"""Tells the limiter's processes apart when they define one limit differently (a rolling deploy)."""

from __future__ import annotations

import logging
import threading

from .. import events
from ..backends.base import StateBackend
from ..backends.window import LimitDefinition
from ..errors import BackendError
from .limiter_plan import Plan

__all__ = ["ANNOUNCE_INTERVAL", "ANNOUNCE_TTL", "Announcer"]

#: Milliseconds (backend time) between two announcements of an actor's limit
#: definitions by one process: how soon processes that disagree on a limit
#: see it.  A process announces on its first decision for the actor.
ANNOUNCE_INTERVAL = 60_000

#: Milliseconds an announcement lasts: a definition that no process uses any
#: more stops being reported this long after its last announcement.
ANNOUNCE_TTL = 3 * ANNOUNCE_INTERVAL


class Announcer:
    """Announces this process's limit definitions, and reports once what other processes define differently.

    A limit is checked per process when actors are declared; processes
    running different code (a rolling deploy) can only find out from shared
    state.  Each process announces every actor's definitions on its first
    decision and then every ``ANNOUNCE_INTERVAL`` ms (one round trip per
    actor per interval, off the per-message path).  When another live
    definition of the same limit shows up, a warning is logged and
    ``rate_limit_disagreement`` emitted, once per change; when it goes away,
    an info line says so.  The windows themselves stay bounded meanwhile
    (see :mod:`dramatiq_resilience.backends.window`).

    Parameters:
      backend: the state backend.
      logger: where disagreements are logged.
    """

    def __init__(self, backend: StateBackend, logger: logging.Logger) -> None:
        self.backend = backend
        self.logger = logger
        self._lock = threading.Lock()
        #: When (backend ms) each actor's definitions are next announced.
        self._due: dict[str, int] = {}
        #: The other processes' definitions last seen for each of ours (only where they differ).
        self._disagreements: dict[LimitDefinition, tuple[str, ...]] = {}

    def forget(self, actor_name: str) -> None:
        """The actor was declared again: announce its (new) definitions on its next decision."""
        self._due.pop(actor_name, None)

    def due(self, actor_name: str, now_ms: int) -> bool:
        """Whether the actor's definitions are due at ``now_ms`` (backend time): one dict lookup."""
        return now_ms >= self._due.get(actor_name, 0)

    def announce(self, actor_name: str, plan: Plan, now_ms: int) -> None:
        """Announce the actor's definitions; log and emit what other processes define differently."""
        # Set first: the other worker threads need not announce the same thing.
        self._due[actor_name] = now_ms + ANNOUNCE_INTERVAL
        definitions = plan.definitions
        try:
            answers = self.backend.window_announce(definitions, ANNOUNCE_TTL)
        except BackendError:
            return  # the decision that follows reports the outage; the next announcement is not far
        for definition, answer in zip(definitions, answers, strict=True):
            self._compare(definition, tuple(answer))

    def _compare(self, definition: LimitDefinition, others: tuple[str, ...]) -> None:
        with self._lock:
            if self._disagreements.get(definition, ()) == others:
                return
            if others:
                self._disagreements[definition] = others
            else:
                del self._disagreements[definition]
        if not others:
            self.logger.info(
                "Every process now defines %s limit %r as %s.",
                definition.kind,
                definition.limit,
                definition.text,
            )
            return
        self.logger.warning(
            "Processes disagree on %s limit %r: it is %s here, but %s elsewhere (a rolling deploy?). "
            "Each process enforces its own definition (in a window of its own where the windows "
            "differ), so until they agree up to the sum of their limits may be admitted.",
            definition.kind,
            definition.limit,
            definition.text,
            " and ".join(others),
        )
        events.emit(
            "rate_limit_disagreement",
            kind=definition.kind,
            limit=definition.limit,
            definition=definition.text,
            others=list(others),
        )
