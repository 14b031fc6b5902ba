"""Options and helpers shared by CLI commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..backends.base import DEFAULT_NAMESPACE
from ..backends.redis import RedisBackend

__all__ = ["add_backend_arguments", "backend_from_args", "import_app"]

#: Environment variable that supplies ``--redis``.
REDIS_URL_ENV = "DRAMATIQ_RESILIENCE_REDIS_URL"

#: Environment variable that supplies ``--namespace``.
NAMESPACE_ENV = "DRAMATIQ_RESILIENCE_NAMESPACE"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--redis URL`` and ``--namespace NS`` (with environment defaults)."""
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
        help=f"the state backend's Redis URL (env {REDIS_URL_ENV}; default %(default)s)",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get(NAMESPACE_ENV, DEFAULT_NAMESPACE),
        help=f"the state backend's key namespace (env {NAMESPACE_ENV}; default %(default)s)",
    )


def backend_from_args(args: argparse.Namespace) -> RedisBackend:
    return RedisBackend(url=args.redis, namespace=args.namespace)


def import_app(module: str) -> object:
    """Import the user's module, with the current directory on the path (as ``dramatiq`` does)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module)
