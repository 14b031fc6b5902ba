"""State that a process made by ``fork`` must not share with its parent.

``dramatiq --processes N`` forks worker processes after the app is
imported.  Locks may be held by a thread that does not exist in the child,
cached readings belong to the parent, sockets are shared: a child must start
afresh.  :class:`PerProcess` holds such a value and makes a new one in the
child right after ``fork`` (``os.register_at_fork``), so that reading it
costs an attribute lookup, not a system call.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


def _renew_in_child(ref: weakref.ReferenceType[PerProcess[object]]) -> None:
    holder = ref()
    if holder is not None:
        holder.value = holder.factory()


class PerProcess(Generic[T]):
    """A value made by ``factory``, made again in a child process right after ``fork``.

    Attributes:
      value: this process's value.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.value: T = factory()
        ref = weakref.ref(self)
        # Registered per holder (not at import): a forgotten holder's hook does nothing.
        os.register_at_fork(after_in_child=lambda: _renew_in_child(ref))  # type: ignore[arg-type]
