"""Observability: what counting every delivery (Metrics) and scoring health (HealthScorer) cost.

``Metrics`` writes each outcome, duration and in-progress change into the
process's memory-mapped files (no I/O beyond the page cache, no round trip);
``HealthScorer`` counts outcomes in memory and sends them once per flush
interval (5 s) per process.  So throughput should stay close to the guard's
(RetryGuard alone), with no extra Redis round trip per message.
"""

from __future__ import annotations

from typing import Any

from .bare import cli_row, versus_guard
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
    return versus_guard(
        context, result, min_ratio=MIN_RATIO_VS_GUARD, max_extra_round_trips=MAX_EXTRA_ROUND_TRIPS
    )
