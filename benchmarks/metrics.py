"""Observability: what counting every delivery (Metrics) and scoring health (HealthScorer) cost.

``Metrics`` writes each outcome, duration and in-progress change into the
process's memory-mapped files (no I/O beyond the page cache, no round trip);
``HealthScorer`` counts outcomes in memory and sends them once per flush
interval (5 s) per process, on a state-backend connection named for the
MONITOR count.  So throughput should stay close to the guard's (RetryGuard
alone), with no state-backend round trip per message.
"""

from __future__ import annotations

from typing import Any

from .bare import cli_row, versus_guard
from .runner import Context, row

#: The least throughput, relative to the guard-only row, that passes.
MIN_RATIO_VS_GUARD = 0.9

#: The most state-backend round trips per message that pass: none per message, only the
#: health flush of each process every 5 s (and once more when it stops).
MAX_BACKEND_ROUND_TRIPS = 0.01

#: The client name of the benchmark app's state-backend connections (``apps/noop.py``).
CLIENT_NAME = "dramatiq-resilience-health"


@row("metrics")
def metrics(context: Context) -> dict[str, Any]:
    """RetryGuard + Metrics + HealthScorer through the CLI run (2 processes counting into one run)."""
    result = cli_row(context, "metrics", paired="guard")
    backend = result.get("redis_commands_by_client_per_msg", {}).get(CLIENT_NAME, 0.0)
    result["backend_round_trips_per_msg"] = backend
    return versus_guard(
        context,
        result,
        min_ratio=MIN_RATIO_VS_GUARD,
        max_extra_round_trips=MAX_BACKEND_ROUND_TRIPS,
        round_trips=("state-backend round trips per message", backend),
    )
