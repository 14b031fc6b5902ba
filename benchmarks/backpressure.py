"""Backpressure: what a producer's ``send`` costs with a warm depth cache, and the enqueue rate vs bare.

* Sends: one process sends 10 000 messages (2 000 with ``--quick``) to a
  RedisBroker queue, bare and with Backpressure (guard + backpressure,
  thresholds never reached), alternately, the best of 6 runs each (2 with
  ``--quick``).  The Redis commands per
  send are counted in separate MONITOR runs: a bare send is one EVALSHA;
  what Backpressure adds is its depth reads (a pipelined ``LLEN`` + ``HLEN``
  per queue per ``cache_ms``).
* Workers: the usual RedisBroker CLI run with the piece installed (its
  worker-side hook only looks for a delayed-enqueue option).

Target (issue 9): at most 0.05 Redis commands per send with a warm cache.
The enqueue rate is reported against bare, without a target.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.testing import RedisServer

from .bare import cli_row
from .harness import OWN_CLIENT_NAME, RoundTripMonitor, Run
from .runner import Context, row

#: The issue's target: Redis commands per send added by Backpressure with a warm cache.
MAX_COMMANDS_PER_SEND = 0.05

#: Thresholds that are never reached: the row measures the cost of checking.
NEVER = dr.Thresholds(warning=10**9)


def send_run(
    server: RedisServer, *, backpressure: bool, count: int, monitor: bool = False, cache_ms: int = 1_000
) -> Run:
    """Send ``count`` no-op messages from this process, with or without Backpressure, after a warm-up send."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=server.url, namespace=f"{namespace}-broker")
    if backpressure:
        pieces = ("scheduling", "metrics", "health", "sentry", "breaker", "dedup", "limiter", "dead_letters")
        dr.install(
            broker,
            backend=dr.RedisBackend(url=server.url, namespace=namespace),
            backpressure={"default": NEVER, "cache_ms": cache_ms},
            **dict.fromkeys(pieces, False),
        )

    @dramatiq.actor(broker=broker, max_retries=0)
    def noop(n: int) -> None: ...

    own = server.client(client_name=OWN_CLIENT_NAME)
    noop.send(0)  # connections, the dispatch script, the first depth read
    watcher = RoundTripMonitor(server, own).__enter__() if monitor else None
    try:
        started = time.perf_counter()
        for n in range(count):
            noop.send(n)
        seconds = time.perf_counter() - started
    finally:
        if watcher is not None:
            watcher.__exit__(None, None, None)
        broker.flush_all()
        broker.close()
        broker.client.close()
        own.close()
    return Run(
        count=count,
        seconds=seconds,
        round_trips=None if watcher is None else watcher.total,
        by_command=None if watcher is None else dict(watcher.by_command),
    )


@row("backpressure")
def backpressure(context: Context) -> dict[str, Any]:
    """Guard + Backpressure: sends per second and Redis commands per send vs bare; then the CLI worker run."""
    count = 2_000 if context.quick else 10_000
    bare_runs: list[Run] = []
    ours_runs: list[Run] = []
    for n in range(2 * context.repeats):  # alternate (and swap who goes first): noise hits both alike
        for with_it in (False, True) if n % 2 == 0 else (True, False):
            run = send_run(context.server, backpressure=with_it, count=count)
            (ours_runs if with_it else bare_runs).append(run)
    bare = max(run.msgs_per_s for run in bare_runs)
    ours = max(run.msgs_per_s for run in ours_runs)
    median_ratio = statistics.median(r.msgs_per_s for r in ours_runs) / statistics.median(
        r.msgs_per_s for r in bare_runs
    )
    bare_counted = send_run(context.server, backpressure=False, count=count, monitor=True)
    ours_counted = send_run(context.server, backpressure=True, count=count, monitor=True)
    per_send = {
        name: round((run.round_trips or 0) / run.count, 4)
        for name, run in (("bare", bare_counted), ("ours", ours_counted))
    }
    depth_reads = sum((ours_counted.by_command or {}).get(c, 0) for c in ("LLEN", "HLEN"))
    extra = round(per_send["ours"] - per_send["bare"], 4)

    result = cli_row(context, "backpressure")
    result.update(
        sends=count,
        send_msgs_per_s=round(ours, 1),
        send_msgs_per_s_bare=round(bare, 1),
        send_ratio_vs_bare=round(ours / bare, 3),
        send_ratio_vs_bare_median=round(median_ratio, 3),
        redis_commands_per_send=per_send["ours"],
        redis_commands_per_send_bare=per_send["bare"],
        extra_redis_commands_per_send=extra,
        depth_read_commands=depth_reads,
    )
    verdict = "pass" if extra <= MAX_COMMANDS_PER_SEND else "FAIL"
    result["verdict"] = (
        f"{verdict}: {extra:+.4f} Redis commands per send with a warm cache "
        f"(target <= {MAX_COMMANDS_PER_SEND}; {depth_reads} depth-read commands in {count} sends); "
        f"enqueue rate {ours / bare:.2f}x bare, best of {len(ours_runs)} "
        f"(median {median_ratio:.2f}x; no target)"
    )
    return result
