"""``dramatiq-resilience backpressure``: each queue's depth, level and thresholds, read from the broker now.

  backpressure --app MODULE [--queue Q]... [--json]
  backpressure --broker-url URL [--broker-namespace NS] [--queue Q]... [--json]

With ``--app`` (the module that builds your broker and installs
``Backpressure``), the app supplies the broker and the thresholds;
``--broker-url`` reads another broker (with the app's thresholds, if given).
Without thresholds, depths are shown without levels.  Queues default to
those named in the thresholds plus every queue the broker knows (declared
queues; on Redis, also every queue holding messages).

Exit codes: 0 no queue at its emergency level; 1 a queue is at emergency or
a depth could not be read; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import dramatiq

from ..errors import ConfigurationError
from ..middleware.backpressure import Backpressure
from ..queue_depth import depth_reader
from ..thresholds import EMERGENCY, QueueStatus, queue_statuses
from .breakers import format_table
from .common import import_app
from .dlq import UsageError, broker_from

__all__ = ["register"]

HEADERS = ["QUEUE", "DEPTH", "READY", "DELAYED", "LEVEL", "WARNING", "CRITICAL", "EMERGENCY"]


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _row(status: QueueStatus) -> list[str]:
    reading, thresholds = status.depth, status.thresholds
    limits = thresholds.to_dict() if thresholds is not None else {}
    return [
        status.queue_name,
        "unreadable" if reading is None else str(reading.depth),
        _cell(reading and reading.ready),
        _cell(reading and reading.delayed),
        "unchecked" if thresholds is None else _cell(status.level),
        *(_cell(limits.get(name)) for name in ("warning", "critical", "emergency")),
    ]


def _statuses(args: argparse.Namespace) -> list[QueueStatus]:
    app_broker = None
    if args.app:
        import_app(args.app)
        app_broker = dramatiq.get_broker()
    if not (args.broker_url or app_broker):
        raise UsageError("this command needs the broker: give --app MODULE or --broker-url URL")
    broker = broker_from(args) if args.broker_url else app_broker
    backpressure = next(
        (m for m in getattr(app_broker, "middleware", ()) if isinstance(m, Backpressure)), None
    )
    reader = depth_reader(broker)  # type: ignore[arg-type]
    try:
        return queue_statuses(
            reader.read, reader.queues, backpressure.table if backpressure else None, args.queue or None
        )
    finally:
        reader.close()


def run(args: argparse.Namespace) -> int:
    try:
        rows = _statuses(args)
    except (UsageError, ConfigurationError) as exc:
        print(f"dramatiq-resilience backpressure: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([status.to_dict() for status in rows], indent=2, sort_keys=True))
    elif rows:
        print(format_table([HEADERS, *(_row(status) for status in rows)]))
    else:
        print("No queues found: name them with --queue.")
    for error in sorted({status.error for status in rows if status.error}):
        print(f"dramatiq-resilience backpressure: {error}", file=sys.stderr)
    return 1 if any(status.error or status.level == EMERGENCY for status in rows) else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backpressure",
        help="each queue's depth, level and thresholds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--app", metavar="MODULE", help="import MODULE (your broker set-up) for its broker and thresholds"
    )
    parser.add_argument("--broker-url", metavar="URL", help="the broker: redis://... or amqp://...")
    parser.add_argument(
        "--broker-namespace", default="dramatiq", help="RedisBroker namespace (default %(default)s)"
    )
    parser.add_argument(
        "--queue", action="append", default=[], help="a queue to show (repeatable; default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list of queues")
    parser.set_defaults(handler=run)
