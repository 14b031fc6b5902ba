"""Exactly-once effects under SIGKILL: 3 dramatiq processes, 5 000 messages over 3 000 keys."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.testing import DramatiqProcess

KEYS = 3_000


def messages_to_send() -> list[str]:
    """5 000 keys to send, in order: every key once, 1 000 pairs and 500 triples sent side by side."""
    rng = random.Random(4)
    groups: list[list[str]] = []
    late: list[str] = []
    for n in range(KEYS):
        key = f"key-{n:04d}"
        if n < 1_000:
            groups.append([key, key])  # a pair sent at the same moment
        elif n < 1_500:
            groups.append([key, key])  # a pair now, a third copy long after
            late.append(key)
        else:
            groups.append([key])
    rng.shuffle(groups)
    keys = [key for group in groups for key in group]
    return keys[:3_500] + late + keys[3_500:]


@pytest.mark.slow
def test_effects_are_exactly_once_when_a_worker_is_killed(
    redis_url: str, namespace: str, dramatiq_processes: Callable[..., DramatiqProcess]
) -> None:
    """SIGKILL one of three workers mid-run: every key's effect is exactly 1, and every key got done."""
    env = {"TEST_REDIS_URL": redis_url, "TEST_NAMESPACE": namespace, "TEST_LEASE_MS": "2000"}
    workers = [dramatiq_processes("tests.apps.dedup", env=env, processes=1, threads=4) for _ in range(3)]
    client = redis.Redis.from_url(redis_url)
    producer = RedisBroker(url=redis_url, namespace=f"{namespace}-broker")
    keys = messages_to_send()
    assert (len(keys), len(set(keys))) == (5_000, KEYS)

    def send(key: str) -> None:
        producer.enqueue(
            Message(queue_name="default", actor_name="effect", args=(key,), kwargs={}, options={})
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, keys[:2_500]))
        deadline = time.monotonic() + 120
        victim = str(workers[0].pid).encode()  # its process group: the CLI and its worker process
        while (
            int(client.get(f"{namespace}:progress") or 0) < 1_000
            or list(client.hgetall(f"{namespace}:inflight").values()).count(victim) < 2
        ):
            assert time.monotonic() < deadline, "the workers made no progress"
            time.sleep(0.002)
        workers[0].kill()  # SIGKILL, mid-run: its in-flight claims and prefetched messages are orphaned
        killed_at = int(client.get(f"{namespace}:progress") or 0)
        list(pool.map(send, keys[2_500:]))

    effect_keys = [f"{namespace}:effect:{{{key}}}" for key in sorted(set(keys))]
    deadline = time.monotonic() + 180
    while True:
        effects = client.mget(effect_keys)
        queue = f"{namespace}-broker:default"
        left = client.hlen(f"{queue}.msgs") + client.hlen(f"{queue}.DQ.msgs")
        if all(effects) and left == 0:
            break
        assert time.monotonic() < deadline, f"{sum(1 for e in effects if e)} keys done, {left} messages left"
        time.sleep(0.2)

    assert killed_at < KEYS
    assert [int(effect) for effect in effects] == [1] * KEYS  # exactly once, for every key
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    records = [backend.dedup_inspect(key) for key in sorted(set(keys))]
    assert {record.state for record in records if record is not None} == {"completed"}
    assert sum(record is not None for record in records) == KEYS
    takeovers = sum(record.takeovers for record in records if record is not None)
    runs = {k.decode(): int(v) for k, v in client.hgetall(f"{namespace}:runs").items()}
    print(
        f"killed after {killed_at} keys; {takeovers} claims taken over after the kill; "
        f"{sum(1 for n in runs.values() if n > 1)} keys ran more than once, each with one effect"
    )
    assert takeovers >= 1  # the kill really orphaned in-flight claims
    assert client.zcard(f"{namespace}-broker:default.XQ") == 0
    for worker in workers[1:]:
        assert worker.running
    backend.close()
    producer.close()
