"""State that a process made by ``fork`` must not share with its parent.

``dramatiq --processes N`` forks worker processes after the app is
imported.  Locks may be held by a thread that does not exist in the child,
cached readings belong to the parent, sockets are shared: a child must start
afresh.  :class:`PerProcess` holds such a value; one ``os.register_at_fork``
hook (registered when the first holder is made, not at import) gives every
live holder a new value in the child right after ``fork``.  Reading it costs
an attribute lookup, not a system call.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class _Holders:
    """Every live holder, and the one at-fork hook that renews them."""

    def __init__(self) -> None:
        self.holders: weakref.WeakSet[PerProcess[Any]] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.hooked = False

    def add(self, holder: PerProcess[Any]) -> None:
        with self.lock:
            if not self.hooked:
                os.register_at_fork(after_in_child=self.renew_in_child)
                self.hooked = True
            self.holders.add(holder)

    def renew_in_child(self) -> None:
        self.lock = threading.Lock()  # the parent's may have been held by a thread the child does not have
        for holder in list(self.holders):
            holder.value = holder.factory()


_holders = _Holders()


class PerProcess(Generic[T]):
    """A value made by ``factory``, made again in a child process right after ``fork``.

    Attributes:
      value: this process's value.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.value: T = factory()
        _holders.add(self)
