"""The CircuitBreaker row: what a closed breaker costs, and decisions per second against pybreaker.

* On the RedisBroker CLI run (2 processes x 8 threads, no-op actor), the
  breaker alone before ``Retries``: throughput against ``bare``, judged on
  the median ratio of 5 pairs of runs (each breaker run next to a bare run,
  the order alternating), and the breaker's own Redis round trips per
  message, counted with MONITOR on its state backend's named connections.
* Decisions per second in one thread, on the same private Redis: a decision
  is what a message costs the breaker (``before_process_message`` then
  ``after_process_message`` on a real ``MessageProxy``), against pybreaker
  1.x ``CircuitBreaker.call`` with ``CircuitRedisStorage``, each with its
  Redis commands per decision (``INFO commandstats``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr

from .bare import cli_row
from .harness import OWN_CLIENT_NAME, CommandCounter
from .runner import Context, row

#: The issue's targets.
MAX_COMMANDS_PER_MSG = 0.1
MIN_RATIO_VS_BARE = 0.95
MIN_SPEEDUP_VS_PYBREAKER = 10.0

#: The breaker's state-backend connections are named this (see benchmarks/apps/noop.py).
CLIENT_NAME = "dramatiq-resilience-breaker"


def _timed(calls: int, decide: Callable[[], None]) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        decide()
    return calls / (time.perf_counter() - started)


def ours(url: str, calls: int, counter: CommandCounter) -> tuple[float, float]:
    """Decisions/s and Redis commands per decision of a closed CircuitBreaker (default cache and batches)."""
    broker = StubBroker()
    backend = dr.RedisBackend(url=url, namespace=f"bench-{uuid.uuid4().hex[:8]}")
    breaker = dr.CircuitBreaker(backend=backend)
    broker.add_middleware(breaker)

    @dramatiq.actor(broker=broker, max_retries=0)
    def noop() -> None: ...

    message = noop.message()

    def decide() -> None:
        proxy = MessageProxy(message)
        breaker.before_process_message(broker, proxy)
        breaker.after_process_message(broker, proxy, result=None)

    try:
        _timed(200, decide)  # warm up: register, load scripts, first check
        counter.reset()
        rate = _timed(calls, decide)
        breaker.flush()
        commands = counter.others() / calls
    finally:
        breaker.local.stop()
        backend.close()
        broker.close()
    return rate, commands


def pybreaker_rate(url: str, calls: int, counter: CommandCounter) -> tuple[float, float]:
    """Decisions/s and Redis commands per decision of pybreaker with CircuitRedisStorage."""
    import pybreaker
    import redis

    client = redis.Redis.from_url(url)
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"bench-{uuid.uuid4().hex[:8]}"
    )
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)

    def decide() -> None:
        breaker.call(lambda: None)

    try:
        _timed(200, decide)
        counter.reset()
        rate = _timed(calls, decide)
        commands = counter.others() / calls
    finally:
        client.close()
    return rate, commands


@row("breaker")
def breaker(context: Context) -> dict[str, Any]:
    """A closed CircuitBreaker on the CLI run, and decisions/s against pybreaker (Redis storage)."""
    result = cli_row(context, "breaker", paired="bare")
    by_client = result.pop("redis_commands_by_client_per_msg", {})
    result["breaker_commands_per_msg"] = round(by_client.get(CLIENT_NAME, 0.0), 4)
    result["extra_commands_per_msg_vs_bare"] = round(
        result["redis_commands_per_msg"] - context.results["bare"]["redis_commands_per_msg"], 3
    )

    counter = CommandCounter(context.server.client(client_name=OWN_CLIENT_NAME))
    ours_rate, ours_commands = ours(context.server.url, 5_000 if context.quick else 50_000, counter)
    theirs_rate, theirs_commands = pybreaker_rate(
        context.server.url, 1_000 if context.quick else 5_000, counter
    )
    result.update(
        decisions_per_s=round(ours_rate),
        decision_commands=round(ours_commands, 4),
        pybreaker_decisions_per_s=round(theirs_rate),
        pybreaker_decision_commands=round(theirs_commands, 2),
        speedup_vs_pybreaker=round(ours_rate / theirs_rate, 1),
    )

    # Judged on the median of paired runs (see cli_row): a best-of-3 against a best-of-3
    # taken minutes apart moves by +-10 % on a 2-core machine, more than the 5 % target.
    ratio = result["paired_ratio_vs_bare"]
    checks = [
        (
            result["breaker_commands_per_msg"] <= MAX_COMMANDS_PER_MSG,
            f"commands/msg {result['breaker_commands_per_msg']} <= {MAX_COMMANDS_PER_MSG}",
        ),
        (
            ratio >= MIN_RATIO_VS_BARE,
            f"throughput {ratio:.3f} x bare (median of paired runs) >= {MIN_RATIO_VS_BARE}",
        ),
        (
            result["speedup_vs_pybreaker"] >= MIN_SPEEDUP_VS_PYBREAKER,
            f"{result['speedup_vs_pybreaker']} x pybreaker >= {MIN_SPEEDUP_VS_PYBREAKER}",
        ),
    ]
    failed = [text for ok, text in checks if not ok]
    result["verdict"] = (
        ("FAIL: not " + "; not ".join(failed)) if failed else "pass: " + "; ".join(t for _, t in checks)
    )
    if context.quick:
        result["verdict"] += " (quick run: indicative only)"
    return result
