"""Plumbing of the Redis state backend: client, scripts, time, errors.

Feature mixins (``redis_<feature>.py``) subclass :class:`RedisBase`;
:class:`~dramatiq_resilience.backends.redis.RedisBackend` composes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from ..clock import Clock
from ..errors import BackendError, BackendUnavailable, ConfigurationError
from .base import DEFAULT_NAMESPACE
from .held import HeldConnections
from .keys import Keyed

__all__ = ["DEFAULT_SOCKET_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "RedisBase", "script_source"]

#: Seconds to wait for a Redis reply before the backend counts as unavailable.
#: redis-py waits forever by default, which would hang a worker thread.
DEFAULT_SOCKET_TIMEOUT = 5.0

#: Seconds to wait for a TCP connection to Redis.
DEFAULT_SOCKET_CONNECT_TIMEOUT = 2.0

#: Errors that mean "Redis cannot be reached right now".  A replica that was
#: promoted or is loading data counts: the operation may succeed a moment later.
_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


_sources_lock = threading.Lock()
_sources: dict[str, str] = {}


def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` with the shared prelude in front, read once per process."""
    with _sources_lock:
        if name not in _sources:
            folder = resources.files("dramatiq_resilience.backends.lua")
            prelude = (folder / "_prelude.lua").read_text(encoding="utf-8")
            body = (folder / f"{name}.lua").read_text(encoding="utf-8")
            _sources[name] = prelude + "\n" + body
        return _sources[name]


class RedisBase(Keyed):
    """The Redis plumbing every feature mixin uses.  See ``RedisBackend`` for the parameters.

    Parameters:
      url: a ``redis://`` (or ``rediss://``, ``unix://``) URL.  Ignored if
        ``client`` is given; defaults to ``redis://127.0.0.1:6379/0``.
      client: an existing ``redis.Redis`` client to use.
      namespace: the prefix of every key (default ``"dramatiq-resilience"``).
      clock: a clock to use instead of the Redis server's ``TIME``.  For tests
        only: in production every host must share the server's clock.
      **client_options: passed to ``redis.Redis.from_url`` (by default
        ``socket_timeout=5.0`` and ``socket_connect_timeout=2.0`` seconds).

    Nothing connects until the first operation.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: redis.Redis | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        clock: Clock | None = None,
        **client_options: Any,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or "{" in namespace or "}" in namespace:
            raise ConfigurationError(
                f"must be a non-empty string without braces, got {namespace!r}", option="namespace"
            )
        if client is not None and (url is not None or client_options):
            raise ConfigurationError(
                "give either a client or a url (with options), not both", option="client"
            )
        if client is None:
            client_options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
            client_options.setdefault("socket_connect_timeout", DEFAULT_SOCKET_CONNECT_TIMEOUT)
            try:
                client = redis.Redis.from_url(url or "redis://127.0.0.1:6379/0", **client_options)
            except ValueError as exc:
                raise ConfigurationError(f"{exc} (got {url!r})", option="url") from None
        self.client: redis.Redis = client
        self.namespace = namespace
        self.clock = clock
        self._scripts: dict[str, Script] = {}
        self._scripts_lock = threading.Lock()
        # Script calls go out on a connection each thread keeps (see held.py).
        self._connections = HeldConnections(client)

    def __repr__(self) -> str:
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            return f"RedisBackend({type(self.client).__name__}, namespace={self.namespace!r})"
        kwargs = pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
        return f"RedisBackend({where!r}, namespace={self.namespace!r})"

    # -- plumbing shared by every operation ---------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Wrap redis-py errors: unreachable becomes ``BackendUnavailable``, others ``BackendError``."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"Redis is unavailable: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis failed: {exc}") from exc

    def script(self, name: str) -> Script:
        """The registered script ``lua/<name>.lua`` (registered once per backend).

        redis-py's ``Script`` sends ``EVALSHA`` and reloads the script by itself
        if the server lost it (a restart), so a script is loaded once per server.
        """
        script = self._scripts.get(name)
        if script is None:
            with self._scripts_lock:
                script = self._scripts.get(name)
                if script is None:
                    script = self._scripts[name] = self.client.register_script(script_source(name))
        return script

    def now_arg(self) -> bytes:
        """ARGV[1] of every script: the injected clock's time, or "" for Redis ``TIME``.

        Bytes, so that redis-py passes it through without encoding it again.
        """
        return b"" if self.clock is None else b"%d" % self.clock.now_ms()

    def run_script(self, name: str, keys: Sequence[str], args: Sequence[Any], client: Any = None) -> Any:
        """Run script ``name`` with ``keys`` and ``args`` (the time argument is prepended).

        Errors are wrapped as for :meth:`errors`.  ``client`` may be a pipeline.
        """
        script = self.script(name)
        # Inline, not `with self.errors()`: a generator-based context manager
        # costs microseconds on the hottest call in the package.  For the same
        # reason a plain call sends EVALSHA itself (redis-py's Script wrapper
        # costs more than most of our scripts take to run) and loads the script
        # only when the server says it does not know it (after a restart).
        try:
            if client is not None:  # a pipeline: Script loads what the pipeline needs
                return script(keys=list(keys), args=[self.now_arg(), *args], client=client)
            command = ("EVALSHA", script.sha, len(keys), *keys, self.now_arg(), *args)
            try:
                return self._connections.call(*command)
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.script)
                return self._connections.call(*command)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"Redis is unavailable: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis failed: {exc}") from exc

    # -- core operations --------------------------------------------------------

    def now_ms(self) -> int:
        if self.clock is not None:
            return self.clock.now_ms()
        with self.errors():
            seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def ping(self) -> None:
        with self.errors():
            self.client.ping()

    def close(self) -> None:
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
        else:  # a client without one pool (redis-py's RedisCluster)
            self.client.close()
