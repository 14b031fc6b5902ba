"""Per-run metric directories for ``dramatiq --processes N``.

The ``dramatiq`` command's main process forks the worker processes (and the
``forks`` of middleware) but never imports the application, so nothing of
this package runs in it.  Every process it starts has it as parent, so the
parent's pid, with its start time, names the *run*: every worker of one
``dramatiq`` command writes into the same directory, and a later command
(another pid, or the same pid reused later) gets a fresh one.

``<base>/run-<main pid>-<main start time>``, where ``<base>`` is
``$DRAMATIQ_RESILIENCE_METRICS_DIR`` or ``<tmp>/dramatiq-resilience-metrics-<uid>``
(one per user, mode 0700).  A run directory whose main process is gone is
stale: the first worker of each run deletes the stale ones, and
``dramatiq-resilience serve`` ignores them.  A reload (``SIGHUP``: the main
process re-executes itself, same pid and start time) keeps the directory,
so counters keep counting across it, as they would across a worker restart.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass

__all__ = [
    "BASE_ENV",
    "Run",
    "base_directory",
    "current_run",
    "find_runs",
    "in_dramatiq_worker",
    "process_start_time",
    "remove_stale_runs",
    "run_of",
]

#: The environment variable naming the base directory of run directories.
BASE_ENV = "DRAMATIQ_RESILIENCE_METRICS_DIR"

_RUN = re.compile(r"^run-(\d+)-(\d+)$")


@dataclass(frozen=True)
class Run:
    """A ``dramatiq`` command's metric directory: its main process's pid and start time."""

    pid: int
    started: int
    directory: str

    @property
    def alive(self) -> bool:
        """Whether the main process still runs (the same process: pid and start time match)."""
        return process_start_time(self.pid) == self.started


def base_directory() -> str:
    """Where run directories live (see the module docstring)."""
    configured = os.environ.get(BASE_ENV)
    if configured:
        return configured
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"dramatiq-resilience-metrics-{uid}")


def process_start_time(pid: int) -> int | None:
    """A number that tells a process apart from a later one with the same pid; ``None`` if it is gone.

    On Linux: its start time in clock ticks since boot (``/proc/<pid>/stat``).
    Elsewhere: 0 while a process with that pid exists.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
        return 0
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def run_of(pid: int, base: str | None = None) -> Run | None:
    """The run whose main process is ``pid`` (``None`` if that process is gone)."""
    started = process_start_time(pid)
    if started is None:
        return None
    return Run(pid, started, os.path.join(base or base_directory(), f"run-{pid}-{started}"))


def in_dramatiq_worker() -> bool:
    """Whether this process was started by the ``dramatiq`` command (a worker or a fork)."""
    return multiprocessing.parent_process() is not None and "dramatiq.cli" in sys.modules


def current_run(base: str | None = None) -> Run | None:
    """The run of this process (its parent is the ``dramatiq`` main process), or ``None`` outside one."""
    if not in_dramatiq_worker():
        return None
    return run_of(os.getppid(), base)


def find_runs(base: str | None = None, *, alive: bool = True) -> list[Run]:
    """Run directories under ``base``: the live ones (or, with ``alive=False``, the stale ones)."""
    base = base or base_directory()
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    runs = []
    for name in names:
        match = _RUN.match(name)
        if match is None:
            continue
        run = Run(int(match[1]), int(match[2]), os.path.join(base, name))
        if run.alive == alive:
            runs.append(run)
    return runs


def remove_stale_runs(base: str | None = None) -> list[str]:
    """Delete the directories of runs whose main process is gone; return them."""
    removed = []
    for run in find_runs(base, alive=False):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(run.directory)
            removed.append(run.directory)
    return removed


def prepare_run(run: Run) -> None:
    """Create ``run``'s directory (and the base, mode 0700) and delete stale runs beside it."""
    base = os.path.dirname(run.directory)
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.makedirs(run.directory, mode=0o700, exist_ok=True)
    remove_stale_runs(base)
