"""The endpoint in a fork of the ``dramatiq`` main process (``Metrics(expose=True)``).

Dramatiq starts the ``forks`` of middleware as children of its main process,
once every worker process has booted.  The main process never imports the
application, so the fork imports it the way a worker does (the broker module
named on the ``dramatiq`` command line, found in ``sys.argv``): that gives it
the broker, the ``Metrics`` settings (host, port) and the ``HealthScorer``.
It runs no worker and counts nothing; it reads the run's directory (its
parent is the main process, so :func:`~.runs.current_run` is the workers' run).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from .collectors import exposition_registry
from .health import scorer_of
from .http import ObservabilityServer
from .metrics_middleware import Metrics

__all__ = ["endpoint_for", "serve_metrics_fork"]

logger = logging.getLogger(__name__)


def endpoint_for(
    broker: Any, *, directories: list[str] | None = None, host: str | None = None, port: int | None = None
) -> ObservabilityServer:
    """An (unstarted) endpoint for ``broker``'s app.

    ``/metrics``: the worker metrics of ``directories`` (default: this
    process's run, or the in-process registry of the broker's ``Metrics``),
    and the cluster gauges of its ``HealthScorer``; ``/health``: its report.
    """
    metrics = next((m for m in broker.middleware if isinstance(m, Metrics)), None)
    registries = []
    if directories is None:
        directories = []
        if metrics is not None:
            directory = metrics.multiprocess_directory()
            if directory is not None:
                directories.append(directory)
            elif metrics.started_registry is not None:
                registries.append(metrics.started_registry)
    scorer = scorer_of(broker)
    registry = exposition_registry(
        directories=directories, registries=registries, scorer=scorer, broker=broker
    )
    health = (lambda: scorer.report(broker)) if scorer is not None else None
    return ObservabilityServer(
        registry=registry,
        health=health,
        host=host or (metrics.host if metrics is not None else "127.0.0.1"),
        port=port if port is not None else (metrics.port if metrics is not None else 9192),
    )


def serve_metrics_fork() -> int:
    """Entry point of the fork: import the app, serve until SIGTERM."""
    from dramatiq.cli import import_broker, make_argument_parser

    try:
        args = make_argument_parser().parse_args(sys.argv[1:])
        for path in args.path:
            sys.path.insert(0, path)
        _, broker = import_broker(args.broker)
        for module in args.modules:
            __import__(module)
    except (Exception, SystemExit):
        logger.exception("The metrics endpoint could not import the app from %r.", sys.argv)
        return 1
    server = endpoint_for(broker)
    logger.info("Serving /metrics and /health on %s.", server.url)
    with contextlib.suppress(SystemExit):
        server.serve_forever()
    return 0
