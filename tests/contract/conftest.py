"""The backend contract suite runs every test here on StubBackend and RedisBackend.

Each feature adds a ``test_<feature>.py`` whose tests take the ``backend``
fixture: the same assertions then hold for both implementations, on the same
injected clock, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dramatiq_resilience import FakeClock, RedisBackend, StateBackend, StubBackend


@pytest.fixture(params=["stub", "redis"])
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[StateBackend]:
    if request.param == "stub":
        yield StubBackend(clock=clock)
        return
    redis_url = request.getfixturevalue("redis_url")
    namespace = request.getfixturevalue("namespace")
    backend = RedisBackend(url=redis_url, namespace=namespace, clock=clock)
    yield backend
    backend.close()


@pytest.fixture(params=["stub", "redis"])
def down_backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[StateBackend]:
    """A backend that cannot be reached."""
    if request.param == "stub":
        backend = StubBackend(clock=clock)
        backend.unavailable = True
        yield backend
        return
    from dramatiq_resilience.testing.redis_server import free_port

    closed = RedisBackend(
        url=f"redis://127.0.0.1:{free_port()}/0", clock=clock, socket_connect_timeout=0.2, socket_timeout=0.2
    )
    yield closed
    closed.close()
