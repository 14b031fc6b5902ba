"""Observability: what counting every delivery (Metrics) and scoring health (HealthScorer) cost.

``Metrics`` writes each outcome, duration and in-progress change into the
process's memory-mapped files (no I/O beyond the page cache, no round trip);
``HealthScorer`` counts outcomes in memory and sends them once per flush
interval (5 s) per process.  So throughput should stay close to the guard's
(RetryGuard alone), with no extra Redis round trip per message.
"""

from __future__ import annotations

from typing import Any

from .bare import cli_row
from .runner import Context, row

#: The least throughput, relative to the guard-only row, that passes.
MIN_RATIO_VS_GUARD = 0.9

#: The most extra Redis round trips per message, relative to the guard-only row, that pass.
#: Per message there is none: each process flushes its health counts once per 5 s (and once
#: more when it stops), a fixed cost that a short MONITOR run spreads over few messages.
MAX_EXTRA_ROUND_TRIPS = 0.02


@row("metrics")
def metrics(context: Context) -> dict[str, Any]:
    """RetryGuard + Metrics + HealthScorer through the CLI run (2 processes counting into one run)."""
    result = cli_row(context, "metrics")
    guard = context.results.get("guard")
    if guard is None:
        result["verdict"] = "no guard row to compare with (run it too)"
        return result
    ratio = result["msgs_per_s"] / guard["msgs_per_s"]
    extra = result["redis_commands_per_msg"] - guard["redis_commands_per_msg"]
    result["ratio_vs_guard"] = round(ratio, 3)
    result["extra_round_trips_per_msg"] = round(extra, 3)
    ok = ratio >= MIN_RATIO_VS_GUARD and extra <= MAX_EXTRA_ROUND_TRIPS
    result["verdict"] = (
        f"{'pass' if ok else 'FAIL'}: {ratio:.2f}x the guard's throughput (target >= {MIN_RATIO_VS_GUARD}), "
        f"{extra:+.3f} round trips per message (target <= {MAX_EXTRA_ROUND_TRIPS})"
    )
    return result
