"""A plain progress bar on stderr for bulk CLI work (no dependency)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``label [#####-----] done/total rate`` redrawn in place on ``stream``.

    Parameters:
      label: what is being done.
      enabled: ``True`` to draw, ``False`` not to; ``None`` (default) draws
        only when ``stream`` is a terminal, so logs and pipes stay clean.
      stream: where to draw (default stderr).
      width: characters of the bar.
    """

    def __init__(
        self, label: str, *, enabled: bool | None = None, stream: TextIO | None = None, width: int = 30
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.started = time.monotonic()
        self.drawn = False
        self._last = 0.0

    def update(self, done: int, total: int | None = None) -> None:
        """Show ``done`` of ``total`` (``None``: unknown); redrawn at most 10 times a second."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.drawn and now - self._last < 0.1 and (total is None or done < total):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-6)
        if total:
            filled = min(self.width, int(self.width * done / total))
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"{self.label} [{bar}] {done}/{total} ({rate:.0f}/s)"
        else:
            text = f"{self.label} {done} ({rate:.0f}/s)"
        self.stream.write("\r" + text)
        self.stream.flush()
        self.drawn = True

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
