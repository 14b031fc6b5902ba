"""Run the benchmark rows and print a table (or JSON).

Every row is measured in the same run as ``bare`` (Dramatiq without
dramatiq-resilience), so ratios compare like with like on this machine.

Rows register with :func:`row`.  A row function takes the :class:`Context` and
returns a dict with at least ``msgs_per_s``; the runner adds ``ratio_vs_bare``.
Rows may add their own fields and a ``verdict`` ("pass"/"FAIL" and why).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .harness import private_redis

#: Modules holding rows, in the order they run (``bare`` first).
ROW_MODULES = [
    "benchmarks.bare",
    "benchmarks.breaker",
    "benchmarks.dedup",
    "benchmarks.limiter",
    "benchmarks.dead_letters",
    "benchmarks.scheduling",
    "benchmarks.backpressure",
    "benchmarks.metrics",
]
# benchmarks.bare also registers "guard" and "full_stack"; full_stack runs last.

RowFunction = Callable[["Context"], dict[str, Any]]
_rows: dict[str, RowFunction] = {}


def row(name: str) -> Callable[[RowFunction], RowFunction]:
    """Register a benchmark row called ``name``."""

    def register(function: RowFunction) -> RowFunction:
        _rows[name] = function
        return function

    return register


@dataclass
class Context:
    """What rows share: mode, sizes, the private Redis, and the results so far."""

    quick: bool
    server: Any
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def cli_count(self) -> int:
        """Messages per RedisBroker CLI run (20 000; 3 000 with --quick)."""
        return 3_000 if self.quick else 20_000

    @property
    def repeats(self) -> int:
        """Timed runs per CLI row, the best kept (3; 1 with --quick)."""
        return 1 if self.quick else 3

    @property
    def settle(self) -> float:
        """Seconds the CLI workers idle between the warm-up and the measured run (0.5; 0.2 quick)."""
        return 0.2 if self.quick else 0.5

    @property
    def pairs(self) -> int:
        """Pairs of timed runs (the row's stack, then bare, or the other way) for paired rows (5; 1 quick)."""
        return 1 if self.quick else 5

    @property
    def count_count(self) -> int:
        """Messages per MONITOR run that counts round trips (2 000; 1 000 with --quick)."""
        return 1_000 if self.quick else 2_000

    @property
    def stub_count(self) -> int:
        return 2_000 if self.quick else 20_000

    @property
    def bare_msgs_per_s(self) -> float:
        return float(self.results["bare"]["msgs_per_s"])


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'row':<16} {'msgs/s':>10} {'vs bare':>8} {'redis cmds/msg':>15}  details"]
    lines.append("(redis cmds/msg: client round trips per message, an EVALSHA counting once)")
    for name, result in results.items():
        cmds = result.get("redis_commands_per_msg")
        details = {
            k: v
            for k, v in result.items()
            if k not in {"msgs_per_s", "ratio_vs_bare", "redis_commands_per_msg", "verdict"}
        }
        detail = ", ".join(f"{k}={v}" for k, v in details.items())
        lines.append(
            f"{name:<16} {result['msgs_per_s']:>10.1f} {result['ratio_vs_bare']:>8.3f} "
            f"{'-' if cmds is None else f'{cmds:.3f}':>15}  {detail}"
        )
        if result.get("verdict"):
            lines.append(f"{'':<16} verdict: {result['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs; finishes in under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by row name")
    parser.add_argument("--only", action="append", default=[], help="run only these rows (bare always runs)")
    args = parser.parse_args(argv)

    for module in ROW_MODULES:
        importlib.import_module(module)
    chosen = [name for name in _rows if name != "bare" and (not args.only or name in args.only)]
    wanted = ["bare", *sorted(chosen, key=lambda name: name == "full_stack")]

    started = time.monotonic()
    failed = False
    with private_redis() as server:
        context = Context(quick=args.quick, server=server)
        for name in wanted:
            if not args.json:
                print(f"running {name}...", end="", file=sys.stderr, flush=True)
            row_started = time.monotonic()
            result = _rows[name](context)
            if not args.json:
                print(f" {time.monotonic() - row_started:.1f} s", file=sys.stderr, flush=True)
            bare_rate = result["msgs_per_s"] if name == "bare" else context.bare_msgs_per_s
            result["ratio_vs_bare"] = round(result["msgs_per_s"] / bare_rate, 3)
            context.results[name] = result
            failed = failed or str(result.get("verdict", "")).startswith("FAIL")

    if args.json:
        print(json.dumps(context.results, indent=2, sort_keys=True))
    else:
        print(format_table(context.results))
        mode = "quick: ratios are indicative only" if args.quick else "full"
        print(f"\n{len(context.results)} rows in {time.monotonic() - started:.0f} s ({mode})")
    return 1 if failed else 0
