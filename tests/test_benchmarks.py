"""The benchmark runner: every row runs in ``--quick`` mode and reports what it measures.

Throughput ratios are noise at this size and on a busy CI machine, so only what
does not depend on speed is asserted exactly: the fields each row reports and
the Redis round trips, which are counted, not timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROWS = [
    "bare",
    "guard",
    "breaker",
    "dedup",
    "limiter",
    "dead_letters",
    "dlq_writes",
    "dlq_list",
    "dlq_requeue",
    "scheduling",
    "backpressure",
    "metrics",
    "full_stack",
]


@pytest.fixture(scope="module")
def rows() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Exit 1 when a verdict fails, which a noisy quick ratio may do; never a crash.
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.slow
def test_every_row_reports_throughput_against_bare(rows: dict[str, Any]) -> None:
    """Every row is there, each with msgs/s and its ratio to bare."""
    assert set(rows) == set(ROWS)
    for name, row in rows.items():
        assert row["msgs_per_s"] > 0, name
        assert row["ratio_vs_bare"] == round(row["msgs_per_s"] / rows["bare"]["msgs_per_s"], 3), name
    bare = rows["bare"]
    assert (bare["ratio_vs_bare"], bare["messages"]) == (1.0, 3_000)
    # Dramatiq acks each message with one EVALSHA and fetches in batches: just over 1.
    assert 1.0 <= bare["redis_commands_per_msg"] < 1.5


@pytest.mark.slow
def test_round_trips_are_counted_exactly(rows: dict[str, Any]) -> None:
    """Counted, not timed: dedup 2 and 1, the limiter 1, no state-backend trip per message elsewhere."""
    dedup = rows["dedup"]
    assert dedup["happy_path_scripts"] == {"dedup_claim": 1_000, "dedup_complete": 1_000}
    assert dedup["skipped_scripts"] == {"dedup_claim": 1_000}
    limiter = rows["limiter"]
    assert (limiter["limiter_round_trips_per_msg"], limiter["limiter_scripts"]) == (
        1.0,
        {"window_acquire": 1_000},
    )
    assert limiter["limiter_other_commands"] == {}
    assert rows["breaker"]["breaker_commands_per_msg"] <= 0.1
    assert rows["metrics"]["backend_round_trips_per_msg"] <= 0.01
    assert rows["scheduling"]["backend_round_trips_per_msg"] <= 0.02
    assert rows["backpressure"]["extra_redis_commands_per_send"] <= 0.05
    requeue = rows["dlq_requeue"]
    assert (requeue["requeued"], requeue["queued"]) == (4_000, 4_000)
