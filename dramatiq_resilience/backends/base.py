"""The state backend interface.

State that more than one worker must agree on lives in a state backend and
changes by one atomic step per decision.  A backend only performs those atomic
steps; policy (thresholds, windows, scoring) lives in the middlewares, as the
``limits`` library keeps strategies apart from storages.

Two implementations share one contract test suite so they cannot drift:
:class:`~dramatiq_resilience.backends.redis.RedisBackend` (production: one Lua
script per operation, time from Redis ``TIME``) and
:class:`~dramatiq_resilience.backends.stub.StubBackend` (in memory, one lock,
injectable clock; for tests and the embedded demo).

Operations are named ``<feature>_<verb>`` (``breaker_record``,
``window_acquire``, ``dedup_claim``).  Each feature has three modules:

* ``backends/<feature>.py``: ``<Feature>Ops``, the abstract operations (and
  their result types), which :class:`StateBackend` inherits;
* ``backends/redis_<feature>.py``: ``Redis<Feature>Ops(RedisBase, <Feature>Ops)``,
  one Lua script per operation (``backends/lua/<feature>_<verb>.lua``);
* ``backends/stub_<feature>.py``: ``Stub<Feature>Ops(StubBase, <Feature>Ops)``.

``RedisBackend`` and ``StubBackend`` compose the mixins of every feature.
"""

from __future__ import annotations

import abc

from .breaker import BreakerOps
from .broker_heartbeats import BrokerHeartbeatOps
from .cron import CronOps
from .dead_letters import DeadLetterOps
from .dedup import DedupOps
from .health import HealthOps
from .keys import Keyed
from .window import WindowOps

__all__ = ["DEFAULT_NAMESPACE", "StateBackend"]

#: The default prefix of every key a backend writes.
DEFAULT_NAMESPACE = "dramatiq-resilience"


class StateBackend(
    Keyed, BreakerOps, CronOps, DedupOps, WindowOps, DeadLetterOps, HealthOps, BrokerHeartbeatOps, abc.ABC
):
    """Where shared resilience state lives.  See the module docstring.

    Every operation raises
    :class:`~dramatiq_resilience.errors.BackendUnavailable` when the backend
    cannot be reached, and :class:`~dramatiq_resilience.errors.BackendError`
    when it fails otherwise.
    """

    namespace: str

    @abc.abstractmethod
    def now_ms(self) -> int:
        """The backend's current time in milliseconds since the epoch."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Check that the backend answers; raise ``BackendUnavailable`` if not."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections.  The backend reconnects if used again."""
