"""``dramatiq-resilience demo``: run the example app and print what happened.

By default everything runs in this process on Dramatiq's ``StubBroker`` and
the in-memory ``StubBackend``: no Redis needed.  With ``--redis URL`` the same
scenes run on a ``RedisBroker`` and ``RedisBackend``, processed by real
``dramatiq`` worker processes started for the demo.

The scenes belong to the app (``actors/demo.py``); this module only runs them.
An app's demo module provides ``SCENES``, a list of callables taking a
:class:`DemoContext` and returning the lines of their summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from dramatiq import Worker

from .common import import_app

__all__ = ["DemoContext", "register", "run_demo"]


@dataclass
class DemoContext:
    """What a scene gets: the app's broker and stack, and ways to wait for work."""

    app: Any
    mode: str  # "in-process" or "redis"
    out: TextIO
    worker: Worker | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def broker(self) -> Any:
        return self.app.broker

    def say(self, text: str) -> None:
        """Print a progress line while the scene runs."""
        print(f"  {text}", file=self.out, flush=True)

    def join(self, *queue_names: str, timeout: float = 60.0) -> None:
        """Wait until ``queue_names`` (default: every queue) hold nothing, delayed messages included."""
        names = queue_names or tuple(sorted(self.broker.get_declared_queues()))
        deadline = time.monotonic() + timeout
        if self.mode == "in-process":
            for name in names:
                remaining = max(0.1, deadline - time.monotonic())
                self.broker.join(name, timeout=int(remaining * 1000), fail_fast=False)
            if self.worker is not None:
                self.worker.join()
            return
        for name in names:
            remaining = max(0.1, deadline - time.monotonic())
            self.broker.join(name, timeout=int(remaining * 1000))

    def wait_for(
        self, predicate: Callable[[], bool], *, timeout: float = 60.0, interval: float = 0.05
    ) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the example app (in-process by default; --redis for real workers)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="run on RedisBroker + RedisBackend at URL with real dramatiq worker processes",
    )
    parser.add_argument("--app", default="actors", help="the example app's package (default %(default)s)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes with --redis")
    parser.add_argument("--threads", type=int, default=8, help="worker threads per process")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not getattr(args, "verbose", 0):
        # Dramatiq logs every failed attempt with its traceback; the demo's
        # failures are on purpose, and the summary says what happened.
        logging.getLogger("dramatiq").setLevel(logging.CRITICAL)
    if args.redis:
        namespace = f"demo-{uuid.uuid4().hex[:8]}"
        os.environ["ACTORS_REDIS_URL"] = args.redis
        os.environ["ACTORS_NAMESPACE"] = namespace
    else:
        os.environ.pop("ACTORS_REDIS_URL", None)
    try:
        app: Any = import_app(args.app)
        demo_module: Any = import_app(f"{args.app}.demo")
        scenes = demo_module.SCENES
    except ImportError as exc:
        print(
            f"Cannot import the example app {args.app!r} ({exc}). Run the demo from the repository "
            "root, where the actors/ package is, or name your app with --app.",
            file=sys.stderr,
        )
        return 1

    mode = "redis" if args.redis else "in-process"
    where = (
        f"RedisBroker + RedisBackend at {args.redis} with {args.processes} dramatiq processes x "
        f"{args.threads} threads"
        if args.redis
        else "StubBroker + StubBackend, in this process"
    )
    print(f"dramatiq-resilience demo: {where}\n", file=out, flush=True)
    context = DemoContext(app=app, mode=mode, out=out)
    workers = None
    started = time.monotonic()
    try:
        if args.redis:
            from ..testing.processes import DramatiqProcess

            workers = DramatiqProcess(
                args.app,
                processes=args.processes,
                threads=args.threads,
                env={"ACTORS_REDIS_URL": args.redis, "ACTORS_NAMESPACE": os.environ["ACTORS_NAMESPACE"]},
            ).start(timeout=60)
        else:
            context.worker = Worker(app.broker, worker_threads=args.threads, worker_timeout=50)
            context.worker.start()

        summaries: list[tuple[str, list[str]]] = []
        for scene in scenes:
            title = (scene.__doc__ or scene.__name__).strip().splitlines()[0]
            print(f"== {title}", file=out, flush=True)
            scene_started = time.monotonic()
            lines = scene(context)
            context.timings[scene.__name__] = time.monotonic() - scene_started
            summaries.append((title, lines))
            print(file=out, flush=True)
    finally:
        if context.worker is not None:
            context.worker.stop()
        if workers is not None:
            workers.close()
        cleanup = getattr(app, "cleanup", None)
        if args.redis and callable(cleanup):
            cleanup()

    print("Summary", file=out)
    print("=======", file=out)
    for title, lines in summaries:
        print(f"{title}", file=out)
        for line in lines:
            print(f"  {line}", file=out)
    print(f"\nDone in {time.monotonic() - started:.1f} s.", file=out, flush=True)
    return 0
