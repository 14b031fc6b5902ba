"""``dramatiq-resilience scheduler MODULE``: a standalone scheduler process.

It imports MODULE (which sets up the broker and calls ``dr.install()``, as
for ``dramatiq MODULE``), then sends the cron jobs and recovery scans of that
broker until SIGTERM or SIGINT, and shuts down cleanly: a send in progress
finishes and is confirmed.  Run as many as you like, next to worker
processes that run a scheduler too or not (``Scheduling(run_scheduler=False)``):
each occurrence is sent once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import dramatiq

from ..install import installed
from .common import import_app

__all__ = ["register", "run_scheduler"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scheduler",
        help="run a standalone scheduler for MODULE's cron jobs and scans",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "module",
        metavar="MODULE",
        help="the app module (MODULE or MODULE:BROKER, as for the dramatiq command)",
    )
    parser.add_argument(
        "--path", action="append", default=[], help="add a directory to the module search path"
    )
    parser.set_defaults(handler=run_scheduler)


def run_scheduler(args: argparse.Namespace) -> int:
    from ..scheduling.scheduler import Scheduler

    sys.path[:0] = args.path
    module_name, _, attribute = args.module.partition(":")
    try:
        module = import_app(module_name)
    except ImportError as exc:
        print(f"Cannot import {module_name!r}: {exc}", file=sys.stderr)
        return 1
    broker = getattr(module, attribute) if attribute else dramatiq.get_broker()
    stack = installed(broker)
    if stack is None:
        print(
            f"{module_name!r} set up a broker without the resilience stack: call "
            "dr.install(broker, backend=...) there.",
            file=sys.stderr,
        )
        return 1
    settings: Any = stack.middleware.get("scheduling")
    options: dict[str, Any] = {}
    if settings is not None:
        options = {"poll_interval": settings.poll_interval, "send_lease": settings.send_lease}
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheduler = Scheduler(broker, **options).start()
    try:
        names = ", ".join(sorted(scheduler.jobs)) or "none"
        print(f"Scheduler ready with {len(scheduler.jobs)} job(s): {names}.", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        scheduler.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        broker.close()
    print("Scheduler stopped.", flush=True)
    return 0
