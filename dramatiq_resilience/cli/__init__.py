"""The ``dramatiq-resilience`` command.

Each topic lives in its own module with a ``register(subparsers)`` function;
:data:`COMMANDS` lists them.  Exit codes: 0 success, 1 failure, 2 bad usage
(``health`` uses 0/1/2 for healthy/degraded/unhealthy, as documented there).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["COMMANDS", "main"]

#: Modules of ``dramatiq_resilience.cli`` that register a subcommand.
COMMANDS = [
    "demo",
    "backpressure",
    "breakers",
    "cron",
    "dedup",
    "dlq",
    "health",
    "limits",
    "scheduler",
    "serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dramatiq-resilience",
        description=(
            "Operate dramatiq-resilience: breakers, deduplication keys, limits, dead letters, "
            "backpressure, cron jobs and the scheduler, health and metrics, and the demo."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeat for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`dramatiq-resilience dlq list | head`): stop quietly, as Unix
        # tools do, and keep Python's own flush at exit from failing on the same pipe.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
