"""The limiter row: SlidingWindowLimiter against `limits`' MovingWindowRateLimiter, same Redis, same threads.

* decisions/s: 4 threads in this process take decisions on 16 keys for a
  limit of 100 and of 10 000 per minute, first with our ``window_acquire``
  (one EVALSHA), then with ``limits``' ``MovingWindowRateLimiter.hit`` on
  the same private Redis; 3 interleaved rounds, the best of each side kept.  Memory per key is
  ``MEMORY USAGE`` of a saturated key afterwards.
* the CLI run: a no-op actor with a never-binding per-key rate limit, so the
  row measures the limiter's cost per message (throughput vs bare Dramatiq,
  and round trips: one EVALSHA per message on top of bare's).

Targets (issue 5): decisions/s >= 1.0x limits at both limits; <= 1 round trip
per message.  ``limits`` is installed for the benchmark only
(``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .bare import cli_row
from .runner import Context, row

THREADS = 4
KEYS = 16


def _rate(decide: Callable[[int, int], Any], decisions: int) -> float:
    """Decisions per second of ``decide(thread, n)`` called ``decisions`` times by each of THREADS threads."""
    barrier = threading.Barrier(THREADS + 1)

    def work(thread: int) -> None:
        barrier.wait()
        for n in range(decisions):
            decide(thread, n)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return THREADS * decisions / (time.perf_counter() - started)


def _memory(context: Context, limit: int = 10_000) -> tuple[int, int]:
    """Bytes of one key holding a full window of ``limit`` per minute: ours (starts spread over the
    whole minute, so all 100 buckets are in use: our worst case) and limits' moving window."""
    from limits import RateLimitItemPerMinute
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    from dramatiq_resilience import FakeClock, RedisBackend
    from dramatiq_resilience.backends.window import RateSpec

    context.server.flush()
    clock = FakeClock()
    backend = RedisBackend(url=context.server.url, namespace="mem", clock=clock)
    spec = [RateSpec("bench", "full", limit, 60_000)]
    for _ in range(limit):
        clock.advance(60_000 // limit)
        backend.window_acquire("m", spec)
    ours = int(backend.client.memory_usage(backend._window_key("r", "bench", "full")) or 0)
    backend.close()
    limiter = MovingWindowRateLimiter(RedisStorage(context.server.url))
    item = RateLimitItemPerMinute(limit)
    for _ in range(limit):
        limiter.hit(item, "full")
    client = context.server.client()
    theirs = max(int(client.memory_usage(key) or 0) for key in client.keys("LIMITS*full*"))
    client.close()
    return ours, theirs


def _ours(context: Context, limit: int, decisions: int) -> tuple[float, int]:
    from dramatiq_resilience import RedisBackend
    from dramatiq_resilience.backends.window import RateSpec

    context.server.flush()
    backend = RedisBackend(url=context.server.url, namespace="bench")
    specs = [[RateSpec("bench", f"key-{k}", limit, 60_000)] for k in range(KEYS)]
    backend.window_acquire("warm", specs[0])
    rate = _rate(lambda t, n: backend.window_acquire("m", specs[(t + n) % KEYS]), decisions)
    memory = int(backend.client.memory_usage(backend._window_key("r", "bench", "key-0")) or 0)
    backend.close()
    return rate, memory


def _theirs(context: Context, limit: int, decisions: int) -> tuple[float, int]:
    from limits import RateLimitItemPerMinute
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    context.server.flush()
    limiter = MovingWindowRateLimiter(RedisStorage(context.server.url))
    item = RateLimitItemPerMinute(limit)
    keys = [f"key-{k}" for k in range(KEYS)]
    limiter.hit(item, "warm")
    rate = _rate(lambda t, n: limiter.hit(item, keys[(t + n) % KEYS]), decisions)
    client = context.server.client()
    memory = max(int(client.memory_usage(key) or 0) for key in client.keys("LIMITS*key-0*"))
    client.close()
    return rate, memory


@row("limiter")
def limiter(context: Context) -> dict[str, Any]:
    """Decisions/s against limits' MovingWindowRateLimiter, then the CLI run with a per-key rate limit."""
    try:
        import limits  # noqa: F401
    except ImportError:
        return {
            "msgs_per_s": 0.0,
            "verdict": "FAIL: `limits` is not installed (pip install -r benchmarks/requirements.txt)",
        }
    decisions = 1_500 if context.quick else 6_000
    result: dict[str, Any] = {}
    ratios = []
    for limit in (100, 10_000):
        # Interleaved rounds, best of 3 each: a neighbour's load hits both sides alike.
        rounds = [(_ours(context, limit, decisions), _theirs(context, limit, decisions)) for _ in range(3)]
        ours = max((r[0] for r in rounds), key=lambda r: r[0])
        theirs = max((r[1] for r in rounds), key=lambda r: r[0])
        ratio = ours[0] / theirs[0]
        ratios.append(ratio)
        result[f"decisions_per_s_{limit}"] = round(ours[0])
        result[f"limits_decisions_per_s_{limit}"] = round(theirs[0])
        result[f"vs_limits_{limit}"] = round(ratio, 3)

    result["bytes_per_full_key_10000"], result["limits_bytes_per_full_key_10000"] = _memory(context)
    result.update(cli_row(context, "limiter"))
    bare = context.results["bare"]["redis_commands_per_msg"]
    added = round(result["redis_commands_per_msg"] - bare, 3)
    result["limiter_round_trips_per_msg"] = added
    problems = [
        f"{r:.2f}x limits at {limit}" for r, limit in zip(ratios, (100, 10_000), strict=True) if r < 1.0
    ]
    # The limiter sends exactly one EVALSHA per message; `added` is the difference of two MONITOR
    # runs, and bare's own fetch batching moves by a few hundredths between runs.
    if added > 1.15:
        problems.append(f"{added} round trips per message")
    result["verdict"] = (
        "FAIL: " + ", ".join(problems)
        if problems
        else f"pass: {min(ratios):.2f}x limits or better, {added} round trips per message"
    )
    return result
