"""Connections that threads keep for script calls, within a share of the client's pool.

Taking a connection from redis-py's pool and giving it back around every
``EVALSHA`` costs more client CPU than most of our scripts cost Redis (about
81 µs against 45 µs per limiter decision). So each thread keeps one connection
of the pool for its script calls and gives it back when it ends.

Held connections never take more than half of a pool's ``max_connections``
(redis-py 8's default pool has 100), counted per pool and process however many
backends share the pool: past that, a thread's call takes a connection from
the pool and gives it back, as redis-py does, so a worker with many threads,
or a client shared with other code, never runs out of connections (nor
blocks, with a ``BlockingConnectionPool``) because of us. Pools with
client-side caching, or with maintenance notifications turned on explicitly
(``enabled=True``), are never held from: each call checks a connection out.

A command is never sent twice. Our scripts are not idempotent (a claim, a
rate-window start, a breaker count), and a reply that does not come back in
time does not mean Redis did not run the command. Before a send on a held
connection unused for ``CHECK_AFTER_IDLE`` seconds, it is checked as redis-py's
pool checks the connections it hands out (a connection Redis closed is opened
again), and one whose last call was cut off is reopened; after the send, any
failure closes it and is raised, whatever ``retry`` the client was given. So
Redis going away while a connection is busy fails one call on it, and the next
reconnects. A connection checked out per call is used the same way. Only
clients without a single pool (RedisCluster) go through redis-py's
``execute_command``, and its retries.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Any

import redis

#: Seconds a held connection may stay unused and still be sent on without a check first.
#: The check is a system call, which costs threads the GIL: a busy worker skips it, as
#: connection pools such as HikariCP skip validating a connection used within 500 ms.
CHECK_AFTER_IDLE = 0.5


class _Budget:
    """How many connections of one pool are held, in this process (reset in a forked child)."""

    __slots__ = ("held", "limit", "lock")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.held -= 1

    def forked(self) -> None:
        """In a forked child: nothing is held, and a lock copied while held is replaced."""
        self.lock = threading.Lock()
        self.held = 0


class _Budgets:
    """The budget of each pool (by the pool's identity: pools are not all hashable), per process."""

    def __init__(self) -> None:
        self.by_pool: dict[int, _Budget] = {}
        self.lock = threading.Lock()
        self.fork_hook = False

    def of(self, pool: Any) -> _Budget:
        with self.lock:
            budget = self.by_pool.get(id(pool))
            if budget is None:
                limit = getattr(pool, "max_connections", 0) or 0
                budget = self.by_pool[id(pool)] = _Budget(limit // 2)
                weakref.finalize(pool, self.by_pool.pop, id(pool), None)
                if not self.fork_hook:  # registered on first use: importing changes nothing
                    os.register_at_fork(after_in_child=self.forked)
                    self.fork_hook = True
            return budget

    def forked(self) -> None:
        """In a forked child: locks copied while another thread held them are replaced."""
        self.lock = threading.Lock()
        for budget in list(self.by_pool.values()):
            budget.forked()


_BUDGETS = _Budgets()


def _holdable(pool: Any) -> bool:
    """Whether connections of ``pool`` may be held: not with client-side caching, nor with
    maintenance notifications turned on explicitly (redis-py must see every command then)."""
    if getattr(pool, "cache", None) is not None:
        return False
    enabled = getattr(pool, "maint_notifications_enabled", None)
    return enabled is None or enabled() is not True


class _Held:
    """One thread's own connection of a pool, given back when the thread ends."""

    __slots__ = ("budget", "connection", "in_step", "pid", "pool", "used_at")

    def __init__(self, pool: Any, budget: _Budget) -> None:
        self.pool = pool
        self.budget = budget
        self.pid = os.getpid()
        self.used_at = 0.0  # time.monotonic() when the last call succeeded
        self.in_step = True  # False while a call runs, and after one that was cut off
        try:
            self.connection = _checkout(pool)
        except BaseException:
            budget.give_back()
            raise

    def __del__(self) -> None:  # the thread ended (its thread-local storage went away)
        if self.pid == os.getpid() and hasattr(self, "connection"):
            # At interpreter shutdown, or after a pool reset, there is nothing to give back.
            with contextlib.suppress(Exception):
                self.pool.release(self.connection)
            self.budget.give_back()  # a _Held inherited through a fork never gets here


class HeldConnections:
    """Sends commands on the calling thread's own connection of ``client``'s pool."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pool = getattr(client, "connection_pool", None)
        holdable = self.pool is not None and _holdable(self.pool)
        self.budget = _BUDGETS.of(self.pool) if holdable else None
        self.local = threading.local()

    def call(self, *command: Any) -> Any:
        """Send ``command`` once and read its reply.

        Threads past the budget, and pools redis-py must see every command of,
        check a connection out for the call. Clients without a single pool
        (RedisCluster) go through redis-py, and its retries.
        """
        if self.pool is None:
            return self.client.execute_command(*command)
        held = self._held()
        if held is None:
            connection = _checkout(self.pool)
            try:
                return _exchange(connection, command)
            finally:
                self.pool.release(connection)
        connection = held.connection
        if not held.in_step:
            # The last call was cut off outside _exchange (a TimeLimit exception inside
            # redis-py, say while re-authenticating): a reply may still be on its way,
            # where no check can see it yet. Start over on a new connection.
            connection.disconnect()
        held.in_step = False
        _ready(connection, check=time.monotonic() - held.used_at >= CHECK_AFTER_IDLE)
        try:
            reply = _exchange(connection, command)
        except redis.exceptions.ResponseError:
            held.in_step = True  # an error reply, read whole
            raise
        held.in_step = True
        held.used_at = time.monotonic()
        return reply

    def _held(self) -> _Held | None:
        held: _Held | None = getattr(self.local, "value", None)
        if held is not None and held.pid == os.getpid():
            return held
        self.local.value = None  # a connection inherited through a fork is the parent's
        if self.budget is None or not self.budget.take():
            return None
        held = self.local.value = _Held(self.pool, self.budget)
        return held


def _checkout(pool: Any) -> Any:
    """A connection of ``pool``, checked (and reconnected if need be) by the pool."""
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        return pool.get_connection("EVALSHA")


def _ready(connection: Any, *, check: bool) -> None:
    """Make ``connection`` ready to send, as redis-py's pool does for the connections it hands out.

    Also what the pool does when a connection comes back to it: a connection
    marked for reconnection is closed, and a pending re-authentication is sent.
    With ``check``, unread data (Redis closing the connection, or a push
    message such as a maintenance notification) reopens the connection.
    """
    should_reconnect = getattr(connection, "should_reconnect", None)
    if should_reconnect is not None and should_reconnect():
        connection.disconnect()
    if check:
        try:
            if connection.can_read():  # connects if closed
                raise redis.exceptions.ConnectionError("connection has data")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            connection.disconnect()
            connection.connect()
    re_auth = getattr(connection, "re_auth", None)
    if re_auth is not None:
        re_auth()


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
    except (OSError, ValueError) as exc:  # the socket closed under us (the pool disconnected)
        connection.disconnect()
        raise redis.exceptions.ConnectionError(f"the connection was closed during the call: {exc}") from exc
    except BaseException:
        connection.disconnect()
        raise
