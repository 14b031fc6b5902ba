"""Measuring tools shared by benchmark rows."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker

from dramatiq_resilience.testing import DramatiqProcess, RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Run:
    """One measured run: ``count`` messages in ``seconds``, costing ``redis_commands`` commands."""

    count: int
    seconds: float
    redis_commands: int | None = None
    round_trips: int | None = None
    by_command: dict[str, int] | None = None
    #: EVALSHA round trips by script SHA-1 (MONITOR runs only).
    by_script: dict[str, int] | None = None
    by_client: dict[str, int] | None = None

    @property
    def msgs_per_s(self) -> float:
        return self.count / self.seconds

    @property
    def commands_per_msg(self) -> float | None:
        """``INFO commandstats`` delta per message, commands inside scripts included."""
        return None if self.redis_commands is None else self.redis_commands / self.count

    @property
    def round_trips_per_msg(self) -> float | None:
        """Client commands per message (an EVALSHA counts once)."""
        return None if self.round_trips is None else self.round_trips / self.count


class CommandCounter:
    """Counts commands a Redis server executed, minus the ones we sent it ourselves."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.own = 0

    def reset(self) -> None:
        self.client.config_resetstat()
        self.own = 0

    def total(self) -> int:
        stats = self.client.info("commandstats")
        self.own += 1  # this INFO
        return sum(int(entry["calls"]) for entry in stats.values())

    def others(self) -> int:
        """Commands executed by everyone but us since the last reset."""
        return self.total() - self.own


#: The client name of every connection the benchmark itself opens.
OWN_CLIENT_NAME = "benchmark-runner"


class RoundTripMonitor:
    """Counts client round trips with MONITOR: each command a client sends counts 1.

    Commands run inside Lua scripts (MONITOR shows them with client ``lua``) do
    not count: an EVALSHA is one round trip however much its script does.
    Commands on the benchmark's own connections (named ``OWN_CLIENT_NAME``) do
    not count either.
    """

    def __init__(self, server: RedisServer, own: redis.Redis) -> None:
        self.server = server
        self.own = own
        self._by_port: Counter[tuple[str, str]] = Counter()
        self._connection = server.client(socket_timeout=None)
        self._ready = threading.Event()
        self._sentinel = f"benchmark-monitor-end-{uuid.uuid4().hex}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.by_command: Counter[str] = Counter()
        self._scripts_by_port: Counter[tuple[str, str]] = Counter()
        self.by_script: Counter[str] = Counter()
        #: Round trips by client name (CLIENT SETNAME; "" for unnamed connections such as the broker's).
        self.by_client: Counter[str] = Counter()

    def _run(self) -> None:
        with self._connection.monitor() as monitor:
            self._ready.set()
            for entry in monitor.listen():
                # MONITOR's stream may lag behind the server on a busy machine: read on until
                # the sentinel that __exit__ sends, so that no command before it is missed.
                if self._sentinel in str(entry.get("command", "")):
                    return
                if entry.get("client_type") == "lua":
                    continue
                command = str(entry["command"]).split(" ", 1)[0].upper()
                self._by_port[(str(entry.get("client_port")), command)] += 1
                if command == "EVALSHA":
                    sha = str(entry["command"]).split(" ", 2)[1].lower()
                    self._scripts_by_port[(str(entry.get("client_port")), sha)] += 1

    def __enter__(self) -> RoundTripMonitor:
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.2)  # MONITOR is registered once the server has answered it
        return self

    def __exit__(self, *exc_info: object) -> None:
        names = {
            str(client["addr"]).rsplit(":", 1)[1]: str(client.get("name") or "")
            for client in self.own.client_list()
        }
        own_ports = {port for port, name in names.items() if name == OWN_CLIENT_NAME}
        # The sentinel, on the connection that just listed the clients: a new connection's
        # handshake (HELLO) would be counted as somebody else's command.
        self.own.echo(self._sentinel)
        self._thread.join(60)
        for (port, command), calls in self._by_port.items():
            if port not in own_ports:
                self.by_command[command] += calls
                self.by_client[names.get(port, "")] += calls
        for (port, sha), calls in self._scripts_by_port.items():
            if port not in own_ports:
                self.by_script[sha] += calls

    @property
    def total(self) -> int:
        return sum(self.by_command.values())


@contextmanager
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def preload(
    client: redis.Redis, namespace: str, actor_name: str, count: int, counter: CommandCounter
) -> None:
    """Put ``count`` messages on the RedisBroker queue ``default`` in one transaction.

    The workers see all of them at once, so the clock can start at EXEC.
    """
    pipe = client.pipeline(transaction=True)
    queue = f"{namespace}-broker:default"
    for n in range(count):
        message_id = str(uuid.uuid4())
        message: Message[Any] = Message(
            queue_name="default",
            actor_name=actor_name,
            args=(n,),
            kwargs={},
            options={"redis_message_id": message_id},
        )
        pipe.hset(f"{queue}.msgs", message_id, message.encode())
        pipe.rpush(queue, message_id)
    pipe.execute()
    counter.own += 2 * count + 2  # the HSETs, the RPUSHes, MULTI and EXEC


def wait_drained(client: redis.Redis, namespace: str, counter: CommandCounter, timeout: float) -> None:
    """Poll until no message of ``default`` (or its delay queue) is left, acked included."""
    queue = f"{namespace}-broker:default"
    deadline = time.monotonic() + timeout
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.hlen(f"{queue}.msgs")
        pipe.hlen(f"{queue}.DQ.msgs")
        remaining = sum(pipe.execute())
        counter.own += 2
        if remaining == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{remaining} messages left after {timeout} s")
        time.sleep(0.01)


def measure_cli(
    server: RedisServer,
    *,
    stack: str,
    count: int,
    processes: int = 2,
    threads: int = 8,
    timeout: float = 600,
    actor_name: str = "noop",
    module: str = "benchmarks.apps.noop",
    extra_env: dict[str, str] | None = None,
    monitor: bool = False,
    settle: float = 0.5,
) -> Run:
    """Process ``count`` no-op messages with real ``dramatiq`` workers running ``stack``.

    Without ``monitor`` the run is timed and ``redis_commands`` is the
    ``INFO commandstats`` delta (script internals included).  With ``monitor``
    (slower: do not use its time), ``round_trips`` counts client commands only.
    """
    server.flush()
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"BENCH_REDIS_URL": server.url, "BENCH_NAMESPACE": namespace, "BENCH_STACK": stack}
    env.update(extra_env or {})
    client = server.client(client_name=OWN_CLIENT_NAME)
    counter = CommandCounter(client)
    workers = DramatiqProcess(module, processes=processes, threads=threads, env=env, cwd=ROOT)
    watcher: RoundTripMonitor | None = None
    try:
        workers.start(timeout=120)
        # Warm up (connections, imports, script loads) with an untimed batch.
        preload(client, namespace, actor_name, min(500, count // 4), counter)
        wait_drained(client, namespace, counter, timeout)
        time.sleep(settle)  # let consumers settle back into their idle polling
        if monitor:
            watcher = RoundTripMonitor(server, client).__enter__()
        counter.reset()
        started = time.perf_counter()
        preload(client, namespace, actor_name, count, counter)
        wait_drained(client, namespace, counter, timeout)
        seconds = time.perf_counter() - started
        commands = counter.others()
    finally:
        if watcher is not None:
            watcher.__exit__(None, None, None)
        # Everything is measured and every message acked: a clean shutdown (about 3 s of
        # worker threads finishing their polls) would only make the benchmark slower.
        workers.kill()
        workers.close()
        client.close()
    return Run(
        count=count,
        seconds=seconds,
        redis_commands=commands,
        round_trips=None if watcher is None else watcher.total,
        by_command=None if watcher is None else dict(watcher.by_command),
        by_script=None if watcher is None else dict(watcher.by_script),
        by_client=None if watcher is None else dict(watcher.by_client),
    )


def measure_stub(*, count: int, threads: int = 8, setup: Any = None) -> Run:
    """Process ``count`` no-op messages in-process on a StubBroker (``setup(broker)`` may install a stack)."""
    broker = StubBroker()
    broker.emit_after("process_boot")
    options = setup(broker) if setup is not None else {}

    @dramatiq.actor(broker=broker, max_retries=0, **(options or {}))
    def noop(n: int) -> None:
        pass

    for n in range(count):
        noop.send(n)
    worker = Worker(broker, worker_threads=threads, worker_timeout=10)
    started = time.perf_counter()
    worker.start()
    broker.join(noop.queue_name)
    worker.join()
    seconds = time.perf_counter() - started
    worker.stop()
    broker.close()
    return Run(count=count, seconds=seconds)
