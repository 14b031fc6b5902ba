"""Connections that threads keep for script calls, within a share of the client's pool.

Taking a connection from redis-py's pool and giving it back around every
``EVALSHA`` costs more client CPU than most of our scripts cost Redis (about
81 µs against 45 µs per limiter decision). So each thread keeps one connection
of the pool for its script calls and gives it back when it ends.

Held connections never take more than half of the pool's ``max_connections``
(redis-py 8's default pool has 100): past that, a thread's call takes a
connection from the pool and gives it back, as redis-py does, so a worker with
many threads, or a client shared with other code, never runs out of
connections (nor blocks, with a ``BlockingConnectionPool``) because of us.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import redis


class _Budget:
    """How many connections of one pool are held, in this process."""

    __slots__ = ("held", "limit", "lock", "pid")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.pid = os.getpid()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.pid != os.getpid():  # a forked child: its pool starts empty
                self.pid, self.held = os.getpid(), 0
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def give_back(self, pid: int) -> None:
        with self.lock:
            if self.pid == pid:
                self.held -= 1


class _Held:
    """One thread's own connection of a pool, given back when the thread ends."""

    __slots__ = ("budget", "connection", "pid", "pool")

    def __init__(self, pool: Any, budget: _Budget) -> None:
        self.pool = pool
        self.budget = budget
        self.pid = os.getpid()
        try:
            try:
                self.connection = pool.get_connection()
            except TypeError:  # redis-py before 5.3 wants a command name
                self.connection = pool.get_connection("EVALSHA")
        except BaseException:
            budget.give_back(self.pid)
            raise

    def __del__(self) -> None:  # the thread ended (its thread-local storage went away)
        if self.pid == os.getpid() and hasattr(self, "connection"):
            # At interpreter shutdown, or after a pool reset, there is nothing to give back.
            with contextlib.suppress(Exception):
                self.pool.release(self.connection)
            self.budget.give_back(self.pid)


class HeldConnections:
    """Sends commands on the calling thread's own connection of ``client``'s pool."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pool = getattr(client, "connection_pool", None)
        limit = getattr(self.pool, "max_connections", 0) or 0
        self.budget = _Budget(limit // 2)
        self.local = threading.local()

    def call(self, *command: Any) -> Any:
        """Send ``command`` and read its reply.

        A held connection that went stale (Redis restarted, a failover, a
        ``CLIENT KILL``) is reconnected and the command sent once more, as
        redis-py's own retry does; callers send only commands that are safe to
        run twice after a lost reply. Clients without a single pool
        (RedisCluster), and threads past the budget, go through redis-py.
        """
        held = self._held()
        if held is None:
            return self.client.execute_command(*command)
        try:
            return _exchange(held.connection, command)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return _exchange(held.connection, command)  # send_command reconnects

    def _held(self) -> _Held | None:
        held: _Held | None = getattr(self.local, "value", None)
        if held is not None and held.pid == os.getpid():
            return held
        self.local.value = None  # a connection inherited through a fork is the parent's
        if self.pool is None or not self.budget.take():
            return None
        held = self.local.value = _Held(self.pool, self.budget)
        return held


def _exchange(connection: Any, command: tuple[Any, ...]) -> Any:
    """Send ``command`` on ``connection`` and read its reply, leaving the two in step.

    Anything but an error reply (a lost connection, or an exception raised into
    the thread between the send and the read, as Dramatiq's ``TimeLimit`` does)
    may leave a reply unread, which the next command would take for its own:
    the connection is closed then, and the next command opens it again.
    """
    try:
        connection.send_command(*command)
        return connection.read_response()
    except redis.exceptions.ResponseError:
        raise
    except BaseException:
        connection.disconnect()
        raise
