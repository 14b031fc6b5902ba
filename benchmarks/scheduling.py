"""The Scheduling piece: what a scheduler in every worker process costs the message path.

``Scheduling`` (on by default in ``install()``) tracks every delivery in
memory for the stalled scan and talks to the backend only for cron messages
and in the background (claims, a run-now poll every 2 s, an in-flight
snapshot every 10 s).  So plain messages should go as fast as with the guard
alone, with no extra round trip per message.
"""

from __future__ import annotations

from typing import Any

from .bare import cli_row, versus_guard
from .runner import Context, row

#: The least throughput, relative to the guard-only row, that passes.
MIN_RATIO_VS_GUARD = 0.9

#: The most state-backend round trips per message that pass (the background work of a
#: scheduler in each process, spread over the messages of the run).
MAX_BACKEND_ROUND_TRIPS = 0.02

#: The client name of the benchmark app's state-backend connections (``apps/noop.py``).
CLIENT_NAME = "dramatiq-resilience-scheduling"


@row("scheduling")
def scheduling(context: Context) -> dict[str, Any]:
    """RetryGuard + Scheduling (a scheduler in each of the 2 worker processes) through the CLI run."""
    result = cli_row(context, "scheduling", paired="guard")
    # Judged on the piece's own connection: the difference with the guard row's total is
    # dominated by Dramatiq's fetch polling, which moves by a few hundredths between runs.
    backend = result.get("redis_commands_by_client_per_msg", {}).get(CLIENT_NAME, 0.0)
    result["backend_round_trips_per_msg"] = backend
    return versus_guard(
        context,
        result,
        min_ratio=MIN_RATIO_VS_GUARD,
        max_extra_round_trips=MAX_BACKEND_ROUND_TRIPS,
        round_trips=("state-backend round trips per message", backend),
    )
