"""Contract: what every backend does, whatever features it carries."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cache import CacheConfig
from redis.crc import key_slot
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from dramatiq_resilience import (
    BackendUnavailable,
    ConfigurationError,
    FakeClock,
    RedisBackend,
    StateBackend,
)
from dramatiq_resilience.backends import held as held_module
from dramatiq_resilience.backends.held import HeldConnections
from dramatiq_resilience.testing import RedisServer


def test_now_follows_the_injected_clock(backend: StateBackend, clock: FakeClock) -> None:
    """now_ms() is the injected clock's time, and moves with it."""
    assert backend.now_ms() == clock.now_ms()
    clock.advance(1_500)
    assert backend.now_ms() == 1_767_225_601_500


def test_ping_answers(backend: StateBackend) -> None:
    """ping() returns quietly when the backend is up."""
    assert backend.ping() is None


def test_unreachable_backend_raises_backend_unavailable(down_backend: StateBackend) -> None:
    """Every core operation raises BackendUnavailable when the backend is down."""
    with pytest.raises(BackendUnavailable):
        down_backend.ping()
    if isinstance(down_backend, RedisBackend):
        down_backend.clock = None  # now_ms() must ask the server
    with pytest.raises(BackendUnavailable):
        down_backend.now_ms()


def test_keys_share_a_hash_slot_by_group(backend: StateBackend) -> None:
    """Keys of one group are hash-tagged into one Redis Cluster slot."""
    first = backend.key("breaker", "payments-gateway", "state")
    second = backend.key("breaker", "payments-gateway", "calls")
    assert first == f"{backend.namespace}:breaker:{{payments-gateway}}:state"
    assert key_slot(first.encode()) == key_slot(second.encode())


def test_redis_scripts_take_the_injected_time(redis_backend: RedisBackend, clock: FakeClock) -> None:
    """A script's ARGV[1] carries the injected clock, and the prelude uses it."""
    clock.set(1_000_000)
    assert redis_backend.run_script("now", [], []) == 1_000_000


def test_redis_scripts_use_server_time_without_a_clock(redis_url: str) -> None:
    """Without an injected clock, scripts and now_ms() read Redis TIME."""
    backend = RedisBackend(url=redis_url)
    before = time.time() * 1000
    script_now = backend.run_script("now", [], [])
    now = backend.now_ms()
    after = time.time() * 1000
    # The private server runs on this host, so its clock is this host's clock.
    assert before - 5 <= script_now <= now <= after + 5


def test_redis_scripts_are_loaded_once_and_reloaded_after_a_flush(redis_url: str) -> None:
    """Scripts run by EVALSHA; SCRIPT LOAD happens once, and again only if the server forgot them."""
    backend = RedisBackend(url=redis_url)
    client = redis.Redis.from_url(redis_url)
    backend.run_script("now", [], [])  # the server may not know the script yet: load it now
    client.config_resetstat()
    for _ in range(10):
        backend.run_script("now", [], [])
    stats = client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 10
    assert "cmdstat_eval" not in stats
    client.script_flush()
    backend.run_script("now", [], [])
    assert client.info("commandstats")["cmdstat_evalsha"]["calls"] == 12  # NOSCRIPT, then the retry


def test_redis_backend_recovers_after_a_restart(redis_server: RedisServer, redis_url: str) -> None:
    """While the server is down operations raise BackendUnavailable; afterwards they work again."""
    backend = RedisBackend(url=redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    backend.ping()
    redis_server.stop()
    try:
        with pytest.raises(BackendUnavailable):
            backend.ping()
        with pytest.raises(BackendUnavailable):
            backend.run_script("now", [], [])
    finally:
        redis_server.start()
    backend.ping()
    assert backend.run_script("now", [], []) > 0


def test_redis_scripts_keep_one_connection_per_thread(redis_url: str) -> None:
    """A thread's script calls share one connection; it goes back to the pool when the thread ends."""
    backend = RedisBackend(url=redis_url)
    pool = backend.client.connection_pool
    admin = redis.Redis.from_url(redis_url)
    backend.run_script("now", [], [])  # loads the script (on a pooled connection) the first time
    before = admin.info("stats")["total_connections_received"]
    for _ in range(50):
        backend.run_script("now", [], [])
    assert admin.info("stats")["total_connections_received"] - before == 0

    in_use: list[int] = []

    def calls() -> None:
        for _ in range(20):
            backend.run_script("now", [], [])
        in_use.append(len(pool._in_use_connections))

    thread = threading.Thread(target=calls)
    thread.start()
    thread.join()
    gc.collect()
    assert in_use == [2]  # the main thread's and this thread's, each held across its calls
    assert len(pool._in_use_connections) == 1  # the ended thread's went back to the pool


def _killed_held_connection(redis_url: str) -> tuple[RedisBackend, redis.Redis]:
    """A backend whose thread holds a connection Redis just killed, and an admin client (stats reset)."""
    backend = RedisBackend(url=redis_url)
    admin = redis.Redis.from_url(redis_url)
    backend.run_script("now", [], [])
    admin.config_resetstat()
    held = next(c["id"] for c in admin.client_list() if c["cmd"] == "evalsha")
    assert admin.client_kill_filter(_id=held) == 1
    return backend, admin


def test_a_held_connection_that_went_stale_is_reconnected_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script call on an idle connection Redis dropped reconnects and runs once; so after close()."""
    monkeypatch.setattr(held_module, "CHECK_AFTER_IDLE", 0.0)  # every connection counts as idle
    backend, admin = _killed_held_connection(redis_url)
    assert backend.run_script("now", [], []) > 0
    backend.close()
    assert backend.run_script("now", [], []) > 0
    assert admin.info("commandstats")["cmdstat_evalsha"]["calls"] == 2


def test_a_busy_connection_redis_dropped_fails_one_call_and_the_next_reconnects(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Used within CHECK_AFTER_IDLE, a connection is not checked: the one call fails, never sent twice."""
    monkeypatch.setattr(held_module, "CHECK_AFTER_IDLE", 3600.0)  # however slow the setup, still busy
    backend, admin = _killed_held_connection(redis_url)
    with pytest.raises(BackendUnavailable):
        backend.run_script("now", [], [])
    assert backend.run_script("now", [], []) > 0
    assert admin.info("commandstats")["cmdstat_evalsha"]["calls"] == 1


def test_a_forked_child_opens_its_own_connection(redis_url: str) -> None:
    """After a fork the child never uses the parent's held connection, and the parent's still works."""
    backend = RedisBackend(url=redis_url)
    admin = redis.Redis.from_url(redis_url)
    backend.run_script("now", [], [])
    before = admin.info("stats")["total_connections_received"]
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its script call worked on a connection of its own
        ok = backend.run_script("now", [], []) > 0
        opened = redis.Redis.from_url(redis_url).info("stats")["total_connections_received"] - before
        os._exit(0 if ok and opened == 2 else 1)  # its script connection and the one asking
    assert os.waitpid(pid, 0)[1] == 0
    assert backend.run_script("now", [], []) > 0
    assert admin.info("stats")["total_connections_received"] - before == 2  # the parent opened none


def test_threads_hold_at_most_half_of_a_small_pool(redis_url: str) -> None:
    """Six live threads on a pool of 4 all run scripts; only 2 hold a connection, none waits."""
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=4, timeout=1)
    backend = RedisBackend(client=redis.Redis(connection_pool=pool))
    budget = backend._connections.budget
    ran = threading.Barrier(7)
    done = threading.Event()
    results: list[bool] = []

    def calls() -> None:
        results.extend(backend.run_script("now", [], []) > 0 for _ in range(20))
        ran.wait(5)
        done.wait(5)  # stay alive, so a held connection stays held

    threads = [threading.Thread(target=calls) for _ in range(6)]
    for thread in threads:
        thread.start()
    ran.wait(5)
    assert budget.held == 2
    assert len(pool._get_in_use_connections()) == 2  # the other four borrowed one per call, as redis-py does
    assert backend.client.ping() is True  # the pool still has room for everyone else
    done.set()
    for thread in threads:
        thread.join()
    gc.collect()
    assert results == [True] * 120
    assert budget.held == 0
    assert len(pool._get_in_use_connections()) == 0


_BUSY_600_MS = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > 600000 then return 1 end
end
"""


@pytest.mark.parametrize("max_connections", [100, 1], ids=["held", "checked-out"])
def test_a_reply_that_comes_too_late_is_raised_and_the_command_never_sent_again(
    redis_url: str, max_connections: int
) -> None:
    """Redis runs a command whose reply timed out: sending it again (the client's retry) runs it twice."""
    client = redis.Redis.from_url(
        redis_url, socket_timeout=0.3, max_connections=max_connections, retry=Retry(NoBackoff(), 3)
    )
    connections = HeldConnections(client)
    assert connections.call("ECHO", "warm") == b"warm"
    assert connections.budget.held == (1 if max_connections == 100 else 0)
    busy = threading.Thread(target=redis.Redis.from_url(redis_url).eval, args=(_BUSY_600_MS, 0))
    busy.start()
    probe = redis.Redis.from_url(redis_url, socket_timeout=0.05)
    with pytest.raises(redis.exceptions.TimeoutError):  # the busy script runs once a PING waits
        for _ in range(100):
            probe.ping()
    with pytest.raises(redis.exceptions.TimeoutError):
        connections.call("INCR", "runs")
    busy.join()
    assert connections.call("INCR", "runs") == 2  # the timed-out INCR ran once; this reply is its own


def test_backends_sharing_a_pool_share_its_budget(redis_url: str) -> None:
    """Two backends on one pool of 4 hold at most 2 connections together; the pool keeps room."""
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=4, timeout=1)
    client = redis.Redis(connection_pool=pool)
    backends = [RedisBackend(client=client, namespace=name) for name in ("a", "b")]
    assert backends[0]._connections.budget is backends[1]._connections.budget
    ran = threading.Barrier(5)
    done = threading.Event()

    def calls(backend: RedisBackend) -> None:
        backend.run_script("now", [], [])
        ran.wait(5)
        done.wait(5)

    threads = [threading.Thread(target=calls, args=(b,)) for b in backends for _ in range(2)]
    for thread in threads:
        thread.start()
    ran.wait(5)
    assert backends[0]._connections.budget.held == 2
    assert client.ping() is True
    done.set()
    for thread in threads:
        thread.join()


def test_a_fork_while_the_budget_is_locked_leaves_the_child_a_free_lock(redis_url: str) -> None:
    """A child forked while a thread holds the budget's lock gets a lock of its own (no deadlock)."""
    backend = RedisBackend(url=redis_url)
    backend.run_script("now", [], [])
    budget = backend._connections.budget
    with budget.lock:
        pid = os.fork()
        if pid == 0:
            signal.alarm(5)  # a deadlock ends the child with SIGALRM
            threading.Thread(target=backend.run_script, args=("now", [], [])).start()
            os._exit(0 if backend.run_script("now", [], []) > 0 else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_caching_or_notifying_clients_are_never_held_from() -> None:
    """Client-side caching, or maintenance notifications turned on, need redis-py to see every command."""
    caching = redis.Redis(protocol=3, cache_config=CacheConfig())
    notifying = redis.Redis(protocol=3, maint_notifications_config=MaintNotificationsConfig(enabled=True))
    assert HeldConnections(caching).budget is None
    assert HeldConnections(notifying).budget is None
    assert HeldConnections(redis.Redis()).budget is not None  # RESP3 by default on redis-py 8: held


def test_a_client_never_held_from_checks_a_connection_out_per_call(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call checks a connection out and gives it back, also in threads and in a forked child."""
    monkeypatch.setattr(held_module, "_holdable", lambda pool: False)
    backend = RedisBackend(url=redis_url)
    pool = backend.client.connection_pool
    assert backend.run_script("now", [], []) > 0
    thread = threading.Thread(target=backend.run_script, args=("now", [], []))
    thread.start()
    thread.join()
    assert len(pool._in_use_connections) == 0
    pid = os.fork()
    if pid == 0:
        signal.alarm(5)
        os._exit(0 if backend.run_script("now", [], []) > 0 and not pool._in_use_connections else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_a_pending_reauthentication_goes_out_on_a_live_connection(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials renewed while Redis dropped the idle held connection: reconnect, then authenticate."""
    monkeypatch.setattr(held_module, "CHECK_AFTER_IDLE", 0.0)
    backend, _ = _killed_held_connection(redis_url)
    held = backend._connections.local.value.connection
    held.set_re_auth_token(_Token())
    assert backend.run_script("now", [], []) > 0
    assert held._re_auth_token is None


@pytest.mark.parametrize("where", ["exchange", "re-authentication"])
def test_a_call_cut_off_before_its_reply_never_hands_on_a_stale_reply(redis_url: str, where: str) -> None:
    """A TimeLimit between a send and its read, in our exchange or in a pending AUTH: the next reads its own.

    The exchange closes the connection; a call cut off outside it reopens it on the next call
    (the AUTH reply may still be on its way, where no check can see it).
    """
    connections = HeldConnections(redis.Redis.from_url(redis_url))
    assert connections.call("ECHO", "warm") == b"warm"
    held = connections.local.value.connection
    read = held.read_response

    def cut_off(*args: object, **kwargs: object) -> object:
        held.read_response = read
        raise RuntimeError("time limit exceeded")  # the command was sent, its reply is left unread

    if where == "re-authentication":
        held.set_re_auth_token(_Token())
    held.read_response = cut_off
    with pytest.raises(RuntimeError):
        connections.call("ECHO", "first")
    assert connections.call("ECHO", "second") == b"second"  # within CHECK_AFTER_IDLE


def test_a_connection_closed_under_a_call_raises_backend_unavailable(redis_url: str) -> None:
    """close() from another thread mid-call closes the socket: a ValueError inside redis-py."""
    backend = RedisBackend(url=redis_url)
    backend.run_script("now", [], [])
    held = backend._connections.local.value.connection
    read = held.read_response

    def closed(*args: object, **kwargs: object) -> object:
        held.read_response = read
        raise ValueError("I/O operation on closed file.")

    held.read_response = closed
    with pytest.raises(BackendUnavailable, match="closed during the call"):
        backend.run_script("now", [], [])
    assert backend.run_script("now", [], []) > 0


class _Token:
    """A streaming-credentials token for the default user (no password set: AUTH default x works)."""

    def try_get(self, key: str) -> str:
        return "default"

    def get_value(self) -> str:
        return "anything"


@pytest.mark.parametrize("namespace", ["", "a{b", "x}"])
def test_redis_backend_rejects_a_bad_namespace(namespace: str) -> None:
    """A namespace must be non-empty and brace-free (braces would break hash tags)."""
    with pytest.raises(ConfigurationError, match="Option 'namespace': must be a non-empty string"):
        RedisBackend(namespace=namespace)


def test_redis_backend_rejects_a_bad_url() -> None:
    """A URL with an unknown scheme is a ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match="Option 'url'"):
        RedisBackend(url="http://127.0.0.1:6379")


def test_redis_backend_rejects_client_and_url_together() -> None:
    """Giving both a client and a URL is ambiguous."""
    with pytest.raises(ConfigurationError, match="either a client or a url"):
        RedisBackend(url="redis://127.0.0.1:6379/0", client=redis.Redis())
