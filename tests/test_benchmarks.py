"""The benchmark runner prints bare throughput and Redis commands per message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_bare_benchmark_reports_throughput_and_round_trips() -> None:
    """`python -m benchmarks --quick --json --only bare` gives the bare row with its fields."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", "--only", "bare"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert list(rows) == ["bare"]
    bare = rows["bare"]
    assert bare["ratio_vs_bare"] == 1.0
    assert bare["msgs_per_s"] > 100
    assert bare["messages"] == 3_000
    # Dramatiq acks each message with one EVALSHA and fetches in batches: just over 1.
    assert 1.0 <= bare["redis_commands_per_msg"] < 1.5


@pytest.mark.slow
def test_quick_dedup_benchmark_counts_its_own_round_trips() -> None:
    """The dedup row: exactly 2 round trips per message (claim, complete), 1 per skipped duplicate."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", "--only", "dedup"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    dedup = json.loads(result.stdout)["dedup"]
    assert dedup["happy_path_scripts"] == {"dedup_claim": 1_000, "dedup_complete": 1_000}
    assert dedup["skipped_scripts"] == {"dedup_claim": 1_000}
    assert (dedup["dedup_round_trips_per_msg"], dedup["dedup_round_trips_per_skipped_duplicate"]) == (
        2.0,
        1.0,
    )
    assert dedup["verdict"].startswith("pass: ")
    assert 0 < dedup["ratio_vs_bare"] < 2
