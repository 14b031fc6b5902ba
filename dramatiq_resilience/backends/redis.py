"""The Redis state backend: one Lua script per atomic operation."""

from __future__ import annotations

from .base import StateBackend
from .redis_base import RedisBase
from .redis_breaker import RedisBreakerOps
from .redis_broker_heartbeats import RedisBrokerHeartbeatOps
from .redis_cron import RedisCronOps
from .redis_dead_letters import RedisDeadLetterOps
from .redis_dedup import RedisDedupOps
from .redis_health import RedisHealthOps
from .redis_window import RedisWindowOps

__all__ = ["RedisBackend"]


class RedisBackend(
    RedisHealthOps,
    RedisBreakerOps,
    RedisCronOps,
    RedisDedupOps,
    RedisWindowOps,
    RedisDeadLetterOps,
    RedisBrokerHeartbeatOps,
    RedisBase,
    StateBackend,
):
    """State backend on Redis (5 or later; Redis Cluster works: keys are hash-tagged).

    Parameters:
      url: a ``redis://`` (or ``rediss://``, ``unix://``) URL.  Ignored if
        ``client`` is given; defaults to ``redis://127.0.0.1:6379/0``.
      client: an existing ``redis.Redis`` client to use.
      namespace: the prefix of every key (default ``"dramatiq-resilience"``).
      clock: a clock to use instead of the Redis server's ``TIME``.  For tests
        only: in production every host must share the server's clock.
      **client_options: passed to ``redis.Redis.from_url`` (by default
        ``socket_timeout=5.0`` and ``socket_connect_timeout=2.0`` seconds).

    Nothing connects until the first operation.  Each feature's operations come
    from its mixin (``redis_<feature>.py``), listed first in the bases.
    """
