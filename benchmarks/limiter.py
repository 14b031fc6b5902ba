"""The limiter row: SlidingWindowLimiter against `limits`' MovingWindowRateLimiter, same Redis, same threads.

* decisions/s: 4 threads in this process take decisions on 16 keys for a
  limit of 100 and of 10 000 per minute, first with our ``window_acquire``
  (one EVALSHA), then with ``limits``' ``MovingWindowRateLimiter.hit`` on
  the same private Redis; 7 interleaved pairs (the order swapped each time),
  judged on the median of the pairs' ratios.  Memory per key is
  ``MEMORY USAGE`` of a saturated key afterwards.
* the CLI run: a no-op actor with a never-binding per-key rate limit, so the
  row measures the limiter's cost per message (throughput vs bare Dramatiq);
  its MONITOR run tells the limiter's round trips from the broker's.

Round trips: the limiter's own are counted directly, not as the difference
with bare's ``redis cmds/msg``.  That difference was ~1.11: one
``window_acquire`` EVALSHA per message, plus ~0.11 more *broker* fetches
(dramatiq's ``dispatch`` script called with ``fetch``; acks stay at one per
message).  A consumer fetches ``prefetch - outstanding`` messages when its
buffer runs dry; a worker thread that spends a round trip on each message
keeps more messages outstanding, so each fetch brings fewer (about 5 instead
of 11) and there are more of them.  They follow from any per-message
latency, not from a command the limiter sends.  So every client command of
the MONITOR run that is neither the broker's ``dispatch`` nor a connection
handshake is charged to the limiter (a per-message ``TIME``, a script load,
a release or a renewal would all show up here); on the happy path it is
exactly one ``window_acquire`` per message.

Targets (issue 5): decisions/s >= 1.0x limits at both limits; <= 1 limiter
round trip per message.  ``limits`` is installed for the benchmark only
(``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from .bare import cli_row
from .harness import Run
from .runner import Context, row

THREADS = 4
KEYS = 16

#: Interleaved pairs of decision runs per limit (1 with --quick).
ROUNDS = 7

#: The limiter's round trips per message on the happy path (the issue's target).
TARGET_ROUND_TRIPS = 1

#: Commands a client sends once per connection, not per message.
HANDSHAKES = frozenset({"HELLO", "CLIENT", "AUTH", "SELECT"})


def round_trips(run: Run) -> dict[str, Any]:
    """Who sent the client commands of a MONITOR run: the broker's ``dispatch``, the limiter, handshakes.

    The limiter's are its scripts' EVALSHAs by name, plus every other command
    (so that nothing it might send escapes the count).
    """
    from dramatiq.brokers import redis as dramatiq_redis

    from dramatiq_resilience.backends import lua
    from dramatiq_resilience.backends.redis_base import script_source

    broker_sha = hashlib.sha1(dramatiq_redis._scripts["dispatch"]).hexdigest()
    names = [
        item.name[: -len(".lua")]
        for item in resources.files(lua).iterdir()
        if item.name.endswith(".lua") and not item.name.startswith("_")
    ]
    ours = {hashlib.sha1(script_source(name).encode()).hexdigest(): name for name in names}
    scripts: dict[str, int] = {}
    other: dict[str, int] = {}
    broker = 0
    for sha, calls in (run.by_script or {}).items():
        if sha == broker_sha:
            broker += calls
        elif sha in ours:
            scripts[ours[sha]] = scripts.get(ours[sha], 0) + calls
        else:
            other[f"EVALSHA {sha[:8]}"] = calls
    handshakes = 0
    for command, calls in (run.by_command or {}).items():
        if command in HANDSHAKES:
            handshakes += calls
        elif command != "EVALSHA":
            other[command] = calls
    return {
        "broker": broker,
        "scripts": scripts,
        "other": other,
        "handshakes": handshakes,
        "limiter": sum(scripts.values()) + sum(other.values()),
    }


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
    ours = int(backend.client.memory_usage(backend._rate_key(spec[0])) or 0)
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
    memory = int(backend.client.memory_usage(backend._rate_key(specs[0][0])) or 0)
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
    decisions = 500 if context.quick else 3_000
    result: dict[str, Any] = {}
    ratios = []
    for limit in (100, 10_000):
        # Interleaved pairs, the order swapped each time, judged on the median of the pairs'
        # ratios: both sides are one EVALSHA through redis-py, so both are bound by the same
        # client CPU, and a neighbour's load or the machine's drift must hit both alike.
        pairs = []
        for n in range(1 if context.quick else ROUNDS):
            if n % 2 == 0:
                ours, theirs = _ours(context, limit, decisions)[0], _theirs(context, limit, decisions)[0]
            else:
                theirs, ours = _theirs(context, limit, decisions)[0], _ours(context, limit, decisions)[0]
            pairs.append((ours, theirs))
        ratio = statistics.median(ours / theirs for ours, theirs in pairs)
        ratios.append(ratio)
        result[f"decisions_per_s_{limit}"] = round(statistics.median(ours for ours, _ in pairs))
        result[f"limits_decisions_per_s_{limit}"] = round(statistics.median(theirs for _, theirs in pairs))
        result[f"vs_limits_{limit}"] = round(ratio, 3)
        result[f"vs_limits_{limit}_pairs"] = [round(ours / theirs, 3) for ours, theirs in pairs]

    if not context.quick:  # 20 000 single decisions; the figure does not change between runs
        result["bytes_per_full_key_10000"], result["limits_bytes_per_full_key_10000"] = _memory(context)
    monitored: list[Run] = []
    result.update(cli_row(context, "limiter", counted=monitored))
    bare = context.results["bare"]["redis_commands_per_msg"]
    result["added_vs_bare_round_trips_per_msg"] = round(result["redis_commands_per_msg"] - bare, 3)
    [counted] = monitored
    trips = round_trips(counted)
    limiter_trips = round(trips["limiter"] / counted.count, 3)
    result.update(
        limiter_round_trips_per_msg=limiter_trips,
        limiter_scripts=trips["scripts"],
        limiter_other_commands=trips["other"],
        broker_round_trips_per_msg=round(trips["broker"] / counted.count, 3),
        broker_extra_vs_bare_per_msg=round(trips["broker"] / counted.count - bare, 3),
        connection_handshakes=trips["handshakes"],
    )
    problems = [
        f"{r:.2f}x limits at {limit}" for r, limit in zip(ratios, (100, 10_000), strict=True) if r < 1.0
    ]
    if limiter_trips > TARGET_ROUND_TRIPS:
        problems.append(f"{limiter_trips} limiter round trips per message > {TARGET_ROUND_TRIPS}")
    result["verdict"] = (
        "FAIL: " + ", ".join(problems)
        if problems
        else f"pass: {min(ratios):.2f}x limits or better, {limiter_trips} limiter round trips per message "
        f"(<= {TARGET_ROUND_TRIPS})"
    )
    return result
