"""State that a process made by ``fork`` must not share with its parent.

``dramatiq --processes N`` forks worker processes after the app is
imported.  Locks may be held by a thread that does not exist in the child,
cached readings belong to the parent, sockets are shared: a child must start
afresh.  :class:`PerProcess` holds such a value and makes a new one the
first time it is used in another process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class PerProcess(Generic[T]):
    """A value made by ``factory``, made again in each process that uses it (after ``fork``)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._pid = os.getpid()
        self._value = factory()

    @property
    def value(self) -> T:
        """This process's value."""
        if self._pid != os.getpid():
            self._value, self._pid = self._factory(), os.getpid()
        return self._value
