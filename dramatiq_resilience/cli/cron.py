"""``dramatiq-resilience cron``: list cron jobs, enable, disable, run now.

Jobs are listed as the schedulers registered them in the state backend, with
their next run, last run, last status and last error.  ``enable``/``disable``
are honoured by every scheduler at its next occurrence; ``run-now`` is taken
by one running scheduler within its poll interval (2 s by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any

from ..errors import BackendError, UnknownJob
from ..scheduling.admin import CronJobs
from .common import add_backend_arguments, backend_from_args

__all__ = ["format_jobs", "register"]


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def format_jobs(states: list[Any]) -> str:
    """A readable table of job states."""
    header = ("JOB", "SCHEDULE", "ENABLED", "NEXT RUN", "LAST RUN", "STATUS", "LAST ERROR")
    rows = [header]
    for state in states:
        schedule = state.schedule or "?"
        if state.timezone and state.timezone != "UTC":
            schedule = f"{schedule} ({state.timezone})"
        status = state.last_status or "-"
        if state.run_requested:
            status += " (run requested)"
        error = state.last_error or "-"
        rows.append(
            (
                state.name,
                schedule,
                "yes" if state.enabled else "no",
                _when(state.next_run_ms),
                _when(state.last_run_ms),
                status,
                error if len(error) <= 60 else error[:57] + "...",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cron",
        help="list cron jobs; enable, disable or run one now",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="every job with its next run, last run, status and error")
    add_backend_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=run_list)
    for action, text in (
        ("enable", "let schedulers send the job's occurrences again"),
        ("disable", "make every scheduler skip the job's occurrences"),
        ("run-now", "ask a running scheduler to send the job now, once"),
    ):
        command = actions.add_parser(action, help=text)
        command.add_argument("job", metavar="JOB", help="the job's name (see `cron list`)")
        add_backend_arguments(command)
        command.add_argument("--json", action="store_true", help="print the job's state as JSON")
        command.set_defaults(handler=run_action, action=action)


def run_list(args: argparse.Namespace) -> int:
    try:
        states = CronJobs(backend_from_args(args)).list()
    except BackendError as exc:
        print(f"Cannot read cron jobs: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([state.as_dict() for state in states], indent=2, sort_keys=True))
    elif not states:
        print("No cron jobs registered (a scheduler registers its jobs when it starts).")
    else:
        print(format_jobs(states))
    return 0


def run_action(args: argparse.Namespace) -> int:
    jobs = CronJobs(backend_from_args(args))
    done = {"enable": "Enabled", "disable": "Disabled", "run-now": "Requested a run of"}[args.action]
    try:
        {"enable": jobs.enable, "disable": jobs.disable, "run-now": jobs.run_now}[args.action](args.job)
        state = jobs.get(args.job)
    except UnknownJob as exc:
        print(exc, file=sys.stderr)
        return 1
    except BackendError as exc:
        print(f"Cannot {args.action} cron job {args.job!r}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(state.as_dict(), indent=2, sort_keys=True))
    else:
        suffix = "; a running scheduler sends it within its poll interval" if args.action == "run-now" else ""
        print(f"{done} cron job {args.job!r}{suffix}.")
    return 0
