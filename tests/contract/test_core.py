"""Contract: what every backend does, whatever features it carries."""

from __future__ import annotations

import time

import pytest
import redis
from redis.crc import key_slot

from dramatiq_resilience import (
    BackendUnavailable,
    ConfigurationError,
    FakeClock,
    RedisBackend,
    StateBackend,
)
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
