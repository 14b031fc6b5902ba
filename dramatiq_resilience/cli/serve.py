"""``dramatiq-resilience serve``: the HTTP endpoint, ``GET /metrics`` and ``GET /health``.

  serve [--app MODULE | --redis URL] [--dir DIR]... [--pid PID]... [--host 127.0.0.1] [--port 9192]

``/metrics`` serves the worker metrics that ``dramatiq`` processes on this
host wrote (by default every running ``dramatiq`` command's run directory,
found again at each scrape; ``--pid`` picks the commands by their main
process id, ``--dir`` names directories), and the cluster gauges (breakers,
queue depths, dead letters, health) read from the state backend at each
scrape.  ``/health`` answers the health report as JSON, 200 when healthy and
503 otherwise.  Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Any

from ..observability.collectors import exposition_registry
from ..observability.http import ObservabilityServer
from ..observability.metrics_middleware import DEFAULT_HOST, DEFAULT_PORT, MULTIPROC_ENV, Metrics
from ..observability.runs import base_directory, find_runs, run_of
from .health import add_source_arguments, scorer_from

__all__ = ["register"]


def _directories(args: argparse.Namespace, broker: Any) -> Any:
    """What the worker metrics are read from: fixed directories, or a function finding live runs."""
    if args.dir:
        return list(args.dir)
    if args.pid:
        runs = [run_of(pid) for pid in args.pid]
        gone = [pid for pid, run in zip(args.pid, runs, strict=True) if run is None]
        if gone:
            raise SystemExit(f"no running process with pid {', '.join(map(str, gone))}")
        return [run.directory for run in runs if run is not None]
    fixed = [os.environ[MULTIPROC_ENV]] if os.environ.get(MULTIPROC_ENV) else []
    metrics = next((m for m in getattr(broker, "middleware", ()) if isinstance(m, Metrics)), None)
    if metrics is not None and metrics.directory:
        fixed.append(metrics.directory)

    def live() -> list[str]:
        return [*fixed, *(run.directory for run in find_runs())]

    return live


def run(args: argparse.Namespace) -> int:
    scorer, broker = scorer_from(args)
    directories = _directories(args, broker)
    registry = exposition_registry(directories=directories, scorer=scorer, broker=broker)
    server = ObservabilityServer(
        registry=registry, health=lambda: scorer.report(broker), host=args.host, port=args.port
    )
    where = (
        ", ".join(directories)
        if isinstance(directories, list)
        else f"every live run under {base_directory()}"
    )
    print(f"Serving {server.url}/metrics and {server.url}/health (worker metrics: {where}).", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        server.serve_forever()
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve /metrics (Prometheus) and /health (JSON) over HTTP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help="the interface to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the port (default %(default)s)")
    parser.add_argument(
        "--dir", action="append", default=[], help="a metrics directory to serve (repeatable)"
    )
    parser.add_argument(
        "--pid", action="append", type=int, default=[], help="a dramatiq main process's pid (repeatable)"
    )
    parser.set_defaults(handler=run)
