"""Log a backend outage once, count every error, and say when it is over."""

from __future__ import annotations

import logging
import threading
import time

from . import events

__all__ = ["OutageLog"]


class OutageLog:
    """Tracks one component's view of backend availability.

    The first error of an outage is logged as a warning; the following ones
    are only counted (and emitted as ``backend_error`` events for metrics);
    the first success afterwards logs how long the outage lasted.

    Parameters:
      component: who is reporting (``"CircuitBreaker"``...), for logs and events.
      logger: where to log.
    """

    def __init__(self, component: str, logger: logging.Logger) -> None:
        self.component = component
        self.logger = logger
        self._lock = threading.Lock()
        self._since: float | None = None
        self._errors = 0

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException, *, action: str) -> None:
        """Record an error; ``action`` says what the component does about it."""
        with self._lock:
            first = self._since is None
            if first:
                self._since = time.monotonic()
            self._errors += 1
        if first:
            self.logger.warning(
                "%s cannot reach its state backend (%s); it will %s until the backend is back. "
                "Further errors are counted, not logged.",
                self.component,
                error,
                action,
            )
        events.emit("backend_error", component=self.component, error=error, first=first)

    def succeeded(self) -> None:
        """Record a success; ends the outage if there was one.  Cheap when healthy."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            outage_ms = int((time.monotonic() - self._since) * 1000)
            errors, self._since, self._errors = self._errors, None, 0
        self.logger.info(
            "%s reached its state backend again after %d milliseconds and %d errors.",
            self.component,
            outage_ms,
            errors,
        )
        events.emit("backend_recovered", component=self.component, outage_ms=outage_ms, errors=errors)
