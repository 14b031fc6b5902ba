"""The baseline: Dramatiq alone on a no-op actor."""

from __future__ import annotations

import statistics
from typing import Any

from .harness import Run, measure_cli, measure_stub
from .runner import Context, row


def cli_row(
    context: Context,
    stack: str,
    *,
    paired: str | None = None,
    counted: list[Run] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Time ``stack`` on the RedisBroker CLI run, then count its round trips in a MONITOR run.

    The timed run is repeated ``context.repeats`` times and the best is kept:
    on a small machine the best run is the one least disturbed by neighbours.

    With ``paired`` (a baseline stack: ``"bare"`` or ``"guard"``), each timed
    run of ``stack`` is paired with a run of the baseline right before or
    after it (the order alternates), ``context.pairs`` times, and
    ``paired_ratio_vs_<baseline>`` is the median of the pairs' ratios: a
    neighbour's load or a drift of the machine's speed over the minutes the
    benchmark takes then hits both sides of a pair alike.

    ``counted``, if given, receives the MONITOR run (for rows that look closer at it).
    """
    runs: list[Run] = []
    baseline_runs: list[Run] = []
    if context.quick and paired is not None:
        # Quick: one run, compared with the baseline row's (indicative, as every quick ratio).
        baseline_runs.append(Run(count=1, seconds=1 / context.results[paired]["msgs_per_s"]))
        paired_quick, paired = paired, None
    else:
        paired_quick = None
    for n in range(context.pairs if paired else context.repeats):
        order = [stack] if paired is None else [stack, paired] if n % 2 == 0 else [paired, stack]
        for name in order:
            run = measure_cli(
                context.server, stack=name, count=context.cli_count, settle=context.settle, **kwargs
            )
            (runs if name == stack else baseline_runs).append(run)
    timed = max(runs, key=lambda run: run.msgs_per_s)
    monitored = measure_cli(
        context.server, stack=stack, count=context.count_count, monitor=True, settle=context.settle, **kwargs
    )
    if counted is not None:
        counted.append(monitored)
    result = {
        "msgs_per_s": timed.msgs_per_s,
        "redis_commands_per_msg": round(monitored.round_trips_per_msg or 0, 3),
        "redis_commands_incl_scripts_per_msg": round(timed.commands_per_msg or 0, 3),
        "messages": timed.count,
        "runs_msgs_per_s": [round(run.msgs_per_s) for run in runs],
    }
    paired = paired or paired_quick
    if paired is not None:
        ratios = [mine.msgs_per_s / base.msgs_per_s for mine, base in zip(runs, baseline_runs, strict=True)]
        result[f"{paired}_runs_msgs_per_s"] = [round(run.msgs_per_s) for run in baseline_runs]
        result[f"paired_ratios_vs_{paired}"] = [round(ratio, 3) for ratio in ratios]
        result[f"paired_ratio_vs_{paired}"] = round(statistics.median(ratios), 3)
    named = {name: calls for name, calls in (monitored.by_client or {}).items() if name}
    if named:  # round trips of connections a piece named (e.g. its state backend's)
        result["redis_commands_by_client_per_msg"] = {
            n: round(c / monitored.count, 4) for n, c in named.items()
        }
    return result


def versus_guard(
    context: Context,
    result: dict[str, Any],
    *,
    min_ratio: float,
    max_extra_round_trips: float,
    round_trips: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """Add the ratio and the extra round trips against the guard, and a verdict.

    The ratio is the median of paired runs when the row was timed with
    ``paired="guard"`` (see :func:`cli_row`), else against the guard row's best run.
    ``round_trips`` (what, per message) judges a piece's own round trips instead of the
    difference with the guard's (which the broker's fetch polling makes noisy).
    """
    guard = context.results.get("guard")
    if guard is None:
        result["verdict"] = "no guard row to compare with (run it too)"
        return result
    paired = result.get("paired_ratio_vs_guard")
    ratio = paired if paired is not None else result["msgs_per_s"] / guard["msgs_per_s"]
    extra = result["redis_commands_per_msg"] - guard["redis_commands_per_msg"]
    result["ratio_vs_guard"] = round(ratio, 3)
    result["extra_round_trips_per_msg"] = round(extra, 3)
    what, judged = round_trips or ("round trips per message", extra)
    ok = ratio >= min_ratio and judged <= max_extra_round_trips
    how = " (median of paired runs)" if paired is not None else ""
    result["verdict"] = (
        f"{'pass' if ok else 'FAIL'}: {ratio:.2f}x the guard's throughput{how} (target >= {min_ratio}), "
        f"{judged:+.3f} {what} (target <= {max_extra_round_trips})"
    )
    return result


@row("bare")
def bare(context: Context) -> dict[str, Any]:
    """RedisBroker through the dramatiq CLI (2 processes x 8 threads), and StubBroker in-process."""
    result = cli_row(context, "bare")
    result["stub_msgs_per_s"] = round(measure_stub(count=context.stub_count).msgs_per_s, 1)
    return result


@row("guard")
def guard(context: Context) -> dict[str, Any]:
    """The foundation's always-on piece (RetryGuard) through the same CLI run."""
    return cli_row(context, "guard")


@row("full_stack")
def full_stack(context: Context) -> dict[str, Any]:
    """Every piece installed and working on each message (no target: what the whole stack costs)."""
    result = cli_row(context, "full_stack")
    bare_trips = context.results["bare"]["redis_commands_per_msg"]
    result["added_round_trips_per_msg"] = round(result["redis_commands_per_msg"] - bare_trips, 3)
    return result
