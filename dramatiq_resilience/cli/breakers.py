"""``dramatiq-resilience breakers``: list circuit breakers, force them open or closed, reset them.

Every command reads the state backend only (the registry of breaker names is
kept there by the workers), so it works from any host.  Forced states and
resets are published: every worker process drops its cached state at once.

  breakers list [--json]       state, counts, failure rate, time to half-open
  breakers history NAME        the latest transitions of one breaker
  breakers open NAME           force open until closed or reset
  breakers close NAME          force closed (nothing trips it) until reset
  breakers reset NAME          closed, empty counts, base cooldown
  breakers forget NAME         delete a breaker's state and registry entry
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..backends.breaker import BreakerStatus, BreakerTransition
from ..breakers import Breakers
from ..errors import BackendError
from .common import add_backend_arguments, backend_from_args

__all__ = ["format_duration", "format_table", "register"]


def format_duration(ms: int) -> str:
    """``850 ms``, ``12.5 s``, ``4 min 10 s``."""
    if ms < 1_000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _row(status: BreakerStatus) -> list[str]:
    rate = status.failure_rate
    return [
        status.name,
        status.state,
        str(status.calls),
        str(status.failures),
        "-" if rate is None else f"{rate:.0%}",
        str(status.consecutive),
        format_duration(status.cooldown_ms) if status.cooldown_ms else "-",
        format_duration(status.retry_after_ms) if status.state == "open" else "-",
        ",".join(status.actors) or "-",
    ]


def _when(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _describe(t: BreakerTransition) -> str:
    line = f"{_when(t.at_ms)}  {t.from_state} -> {t.to_state}  ({t.reason})"
    if t.to_state == "open":
        line += f"  for {format_duration(t.cooldown_ms)} after {t.failures} failures in {t.calls} calls"
    return line


def _list(args: argparse.Namespace, breakers: Breakers) -> int:
    statuses = breakers.list()
    if args.json:
        print(json.dumps([status.to_dict() for status in statuses], indent=2, sort_keys=True))
        return 0
    if not statuses:
        print(
            f"No breakers in namespace {args.namespace!r} yet "
            "(workers register them when they first use them)."
        )
        return 0
    header = ["NAME", "STATE", "CALLS", "FAILURES", "RATE", "STREAK", "COOLDOWN", "HALF-OPEN IN", "ACTORS"]
    print(format_table([header, *(_row(status) for status in statuses)]))
    return 0


def _history(args: argparse.Namespace, breakers: Breakers) -> int:
    transitions = breakers.history(args.name, limit=args.limit)
    if args.json:
        print(json.dumps([t.fields() for t in transitions], indent=2, sort_keys=True))
    elif not transitions:
        print(f"No transitions of breaker {args.name!r}.")
    else:
        print("\n".join(_describe(t) for t in transitions))
    return 0


def _act(args: argparse.Namespace, breakers: Breakers) -> int:
    known = breakers.names()
    if args.name not in known and not args.create:
        names = ", ".join(sorted(known)) or "none"
        print(
            f"No breaker named {args.name!r} in namespace {args.namespace!r} (known: {names}). "
            "Use --create to act on it before any worker has used it.",
            file=sys.stderr,
        )
        return 1
    if args.action == "forget":
        breakers.forget(args.name)
        print(f"Breaker {args.name!r} forgotten.")
        return 0
    action = {"open": breakers.force_open, "close": breakers.force_closed, "reset": breakers.reset}[
        args.action
    ]
    transition = action(args.name)
    print(f"Breaker {args.name!r}: {transition.from_state} -> {transition.to_state}.")
    return 0


def _run(args: argparse.Namespace) -> int:
    backend = backend_from_args(args)
    try:
        return int(args.run(args, Breakers(backend)))
    except BackendError as exc:
        print(f"Cannot reach the state backend at {args.redis}: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "breakers",
        help="list circuit breakers; force them open or closed; reset them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="breakers_command", metavar="ACTION")
    commands.required = True

    listing = commands.add_parser("list", help="every breaker with its state and counts")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)

    history = commands.add_parser("history", help="the latest transitions of one breaker, newest first")
    history.add_argument("name")
    history.add_argument("--limit", type=int, default=20, help="how many (default %(default)s)")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(run=_history)

    helps = {
        "open": "force a breaker open until it is closed or reset",
        "close": "force a breaker closed (nothing trips it) until it is reset",
        "reset": "close a breaker with empty counts and the base cooldown",
        "forget": "delete a breaker's state and registry entry",
    }
    for action, text in helps.items():
        command = commands.add_parser(action, help=text)
        command.add_argument("name")
        command.add_argument(
            "--create", action="store_true", help="act even if no worker has used the name yet"
        )
        command.set_defaults(run=_act, action=action)

    for command in (listing, history, *(commands.choices[action] for action in helps)):
        add_backend_arguments(command)
    parser.set_defaults(handler=_run)
