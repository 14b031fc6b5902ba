"""RetryGuard: a failed message whose retry could not be enqueued is dead-lettered, not lost."""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.broker import Broker
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

__all__ = ["RetryGuard"]


class RetryGuard(Middleware):
    """Middleware that rejects a failed message whose retry could not be enqueued.

    When an actor (or a hook) fails, Dramatiq's ``Retries`` re-enqueues the
    message.  If that enqueue raises (the broker is down), Dramatiq logs the
    error and then *acks* the original: the message has neither run nor been
    re-enqueued nor been dead-lettered, and it is gone.  This guard watches
    enqueues on the worker thread; when a message failed, was not marked
    failed, and no retry was enqueued for it, it marks the message failed, so
    it is rejected into the broker's dead-letter queue (``<queue>.XQ``) once
    the broker answers, where dead-letter import finds it.

    Position: first in the middleware list.  Its ``before_process_message``
    must run for every message (a later middleware may raise), and because
    after-hooks run in reverse order, its ``after_process_message`` then runs
    after ``Retries`` has had its go.  ``install()`` puts it there.
    """

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))
        self._local = threading.local()

    def before_process_message(self, broker: Broker, message: Any) -> None:
        self._local.enqueued = set()

    def after_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        enqueued = getattr(self._local, "enqueued", None)
        if enqueued is not None:
            enqueued.add(message.message_id)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        enqueued = getattr(self._local, "enqueued", None)
        self._local.enqueued = None
        if exception is None or message.failed or enqueued is None:
            return
        if message.message_id not in enqueued:
            self.logger.error(
                "The retry of message %r could not be enqueued; rejecting it into the dead-letter "
                "queue so that it is not lost.",
                message.message_id,
            )
            message.fail()

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self._local.enqueued = None
