"""Real dramatiq CLI worker processes that tests can kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["DramatiqProcess"]


class DramatiqProcess:
    """One ``dramatiq`` CLI invocation (``python -m dramatiq MODULE ...``).

    It runs in its own process group, so :meth:`kill` SIGKILLs the CLI's main
    process *and* its worker processes at once, like a host that dies (the
    ``dramatiq`` main process would otherwise stop its siblings when one of
    its workers is killed).

    Parameters:
      module: the module to load (it must set up the broker).
      processes, threads: as for the ``dramatiq`` CLI.
      env: environment variables added to this process's environment.
      cwd: where to run (default: the current directory); it is put on the
        module search path.
      queues: only consume these queues.
      extra_args: more CLI arguments.
    """

    def __init__(
        self,
        module: str,
        *,
        processes: int = 1,
        threads: int = 4,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        queues: Sequence[str] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.module = module
        self.processes = processes
        self.threads = threads
        self.env = dict(env or {})
        self.cwd = Path(cwd or os.getcwd())
        self.queues = list(queues)
        self.extra_args = list(extra_args)
        self.log_path = Path(tempfile.mkstemp(prefix="dramatiq-worker-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> DramatiqProcess:
        """Start the CLI; with ``wait``, return once every worker process is ready."""
        args = [
            sys.executable, "-m", "dramatiq", self.module,
            "--processes", str(self.processes),
            "--threads", str(self.threads),
            "--path", str(self.cwd),
            "--worker-shutdown-timeout", "5000",
        ]  # fmt: skip
        if self.queues:
            args += ["--queues", *self.queues]
        args += self.extra_args
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        try:
            self.process = subprocess.Popen(
                args, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything the CLI printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every worker process logged that it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count("is ready for action") >= self.processes:
                return
            if not self.running:
                raise RuntimeError(f"dramatiq {self.module} exited early:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"dramatiq {self.module} was not ready in {timeout} s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean shutdown, nothing requeued."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop cleanly (SIGTERM, as a deploy would); SIGKILL after ``timeout`` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def close(self) -> None:
        """Stop if running (killing stragglers) and remove the log file."""
        if self.running:
            self.stop(timeout=10)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> DramatiqProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
