"""``dramatiq-resilience health``: the score and its breakdown; exit 0 healthy, 1 degraded, 2 unhealthy.

  health [--app MODULE | --redis URL] [--json] [--watch [SECONDS]]

With ``--app`` the app's ``HealthScorer`` scores (its policy; queue depths from
its broker).  With ``--redis`` alone, a scorer on that backend uses the policy
and the queue depths of the latest report the ``health`` scan published.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any, TextIO

from ..observability.health import HealthScorer, scorer_of
from ..observability.health_report import HealthReport
from .breakers import format_duration, format_table
from .common import add_backend_arguments, backend_from_args, import_app

__all__ = ["add_source_arguments", "register", "render", "scorer_from"]


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--app MODULE`` or ``--redis URL`` (``--namespace NS``): where the health inputs come from."""
    add_backend_arguments(parser)
    # None means "not given": --app then supplies the backend (its default stays in default_redis).
    parser.set_defaults(default_redis=parser.get_default("redis"), redis=None)
    parser.add_argument(
        "--app", metavar="MODULE", help="import MODULE (your broker set-up): its scorer and broker"
    )


def scorer_from(args: argparse.Namespace) -> tuple[HealthScorer, Any]:
    """The scorer and the broker (or ``None``) that ``--app`` / ``--redis`` name."""
    if args.app and not args.redis:
        import dramatiq

        from ..install import installed

        import_app(args.app)
        broker = dramatiq.get_broker()
        scorer = scorer_of(broker)
        if scorer is None:
            stack = installed(broker)
            if stack is None:
                raise SystemExit(f"the app {args.app!r} did not call dr.install(); give --redis URL instead")
            scorer = HealthScorer(backend=stack.backend)
        return scorer, broker
    if not args.redis:
        args.redis = args.default_redis
    backend = backend_from_args(args)
    policy = None
    try:
        snapshot = backend.health_snapshot()
        if snapshot is not None:
            policy = snapshot.report().get("policy")
    except Exception:
        policy = None  # the report below names the backend error
    return HealthScorer(backend=backend, policy=policy), None


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _penalties(penalties: list[Any]) -> str:
    return "; ".join(f"{p.detail} -{p.points:g}" for p in penalties) or "-"


def render(report: HealthReport, out: TextIO) -> None:
    """The human-readable report."""
    inputs = report.inputs
    depths = {"broker": "from the broker", "snapshot": "from the last health scan", "none": "unknown"}
    print(
        f"HEALTH {report.status} {report.score:g}  (window {format_duration(inputs.window_ms)}, "
        f"{inputs.alive} of {len(inputs.processes)} worker processes alive, queue depths "
        f"{depths[inputs.depth_source]}, at {_when(inputs.now_ms)})",
        file=out,
    )
    for penalty in report.overall.penalties:
        print(f"  -{penalty.points:g}  {penalty.detail}", file=out)
    rows = [("SCOPE", "NAME", "STATUS", "SCORE", "FAILED", "DEAD LETTERS", "DEPTH", "PENALTIES")]
    for item in [*report.queues.values(), *report.actors.values()]:
        rate = item.failure_rate
        failed = "-" if rate is None else f"{item.failures}/{item.attempts} ({rate:.0%})"
        depth = inputs.depths.get(item.name) if item.scope == "queue" else None
        rows.append(
            (
                item.scope,
                item.name,
                item.status,
                f"{item.score:g}",
                failed,
                str(item.dead_letters),
                "-" if depth is None else str(depth.ready),
                _penalties(item.penalties),
            )
        )
    if len(rows) > 1:
        print(file=out)
        print(format_table(rows), file=out)
    for error in inputs.errors:
        print(f"could not read {error}", file=out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    scorer, broker = scorer_from(args)
    code = 2
    try:
        while True:
            report = scorer.evaluate(broker)
            code = report.exit_code
            if args.json:
                print(json.dumps(report.to_dict(), indent=2, sort_keys=True), file=out, flush=True)
            else:
                render(report, out)
            if args.watch is None:
                return code
            print(file=out, flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return code


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health",
        help="the health score and its breakdown (exit 0 healthy, 1 degraded, 2 unhealthy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON (the /health body)")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        metavar="SECONDS",
        help="evaluate again every SECONDS (default 5) until interrupted",
    )
    parser.set_defaults(handler=run)
