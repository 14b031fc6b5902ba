"""``dramatiq-resilience limits show``: each limit's current use and reset time per key.

Reads the state the ``SlidingWindowLimiter`` keeps in Redis.  Only keys with
something in their window (or messages waiting) are shown; a limit without a
name is called ``<actor>.rate_limits[<i>]`` (or ``.rate_concurrency[<i>]``).
Exit codes: 0 shown (or nothing in use), 1 the named limit or key has no
state or Redis cannot be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..backends.window import WindowUsage
from ..errors import BackendError
from .common import add_backend_arguments, backend_from_args

__all__ = ["format_usages", "register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "limits",
        help="show rate and concurrency limits in use",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="limits_command", metavar="COMMAND")
    commands.required = True
    show = commands.add_parser("show", help="current use and reset time of each limit, per key")
    show.add_argument("name", nargs="?", help="only this limit (its name=, or <actor>.rate_limits[<i>])")
    show.add_argument("--key", help="only this key (a tenant, a channel...)")
    show.add_argument("--json", action="store_true", help="print JSON (times in ms since the epoch)")
    add_backend_arguments(show)
    show.set_defaults(handler=show_limits)


def _in(moment: int | None, now: int) -> str:
    if moment is None:
        return "-"
    seconds = (moment - now) / 1000
    return "now" if seconds <= 0 else f"in {seconds:.2f} s"


def format_usages(usages: Sequence[WindowUsage]) -> str:
    """A table: limit, kind, key, used/capacity, window, next free slot, all free, waiters until."""
    header = ("LIMIT", "KIND", "KEY", "USED", "WINDOW", "NEXT SLOT", "ALL FREE", "WAITERS UNTIL")
    rows = [header]
    for usage in usages:
        window = f"{usage.window_ms} ms" if usage.kind == "rate" else f"lease {usage.window_ms} ms"
        rows.append(
            (
                usage.limit,
                usage.kind,
                usage.key or "(all)",
                f"{usage.used}/{usage.capacity}",
                window,
                _in(usage.next_free_ms, usage.now_ms) if usage.next_free_ms else "free",
                _in(usage.resets_at_ms, usage.now_ms),
                _in(usage.waiting_until_ms, usage.now_ms),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def show_limits(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    backend = backend_from_args(args)
    try:
        usages = backend.window_inspect(args.name, args.key)
    except BackendError as exc:
        print(f"Cannot read limits from {args.redis}: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    if args.json:
        print(json.dumps([dataclasses.asdict(usage) for usage in usages], indent=2), file=out)
    elif usages:
        print(format_usages(usages), file=out)
    else:
        what = " and ".join(
            part
            for part in (
                f"limit {args.name!r}" if args.name else "",
                f"key {args.key!r}" if args.key is not None else "",
            )
            if part
        )
        print(f"Nothing in use for {what}." if what else "No limit is in use.", file=out)
    return 1 if not usages and (args.name or args.key is not None) else 0
