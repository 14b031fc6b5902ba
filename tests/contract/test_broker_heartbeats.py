"""Contract: RedisBroker worker liveness (``broker_heartbeats_observe``), on StubBackend and RedisBackend."""

from __future__ import annotations

from dramatiq_resilience import FakeClock, StateBackend
from dramatiq_resilience.backends.broker_heartbeats import score_text


def observe(backend: StateBackend, scores: dict[str, str], namespace: str = "dramatiq") -> dict[str, int]:
    return backend.broker_heartbeats_observe(namespace, scores)


def test_an_unchanged_score_is_silent_since_it_was_first_seen(
    backend: StateBackend, clock: FakeClock
) -> None:
    """Silence starts when a score is first seen, on the backend's clock, whatever the score says."""
    assert observe(backend, {"w1": "1", "w2": "99999999999999"}) == {}  # first seen: a score is no time
    clock.advance(9_999)
    assert observe(backend, {"w1": "1", "w2": "99999999999999"}) == {"w1": 9_999, "w2": 9_999}
    clock.advance(2_501)
    assert observe(backend, {"w2": "99999999999999", "w1": "1"}) == {"w1": 12_500, "w2": 12_500}


def test_a_changed_score_restarts_the_silence(backend: StateBackend, clock: FakeClock) -> None:
    """Any other score (later, earlier) means the worker spoke: not returned, its silence starts again."""
    observe(backend, {"w": "5000", "v": "1"})
    clock.advance(9_000)
    assert observe(backend, {"w": "4000", "v": "1"}) == {"v": 9_000}  # w's clock went back: still a change
    clock.advance(1_000)
    assert observe(backend, {"w": "4000", "v": "2"}) == {"w": 1_000}


def test_workers_gone_from_the_heartbeats_are_forgotten(backend: StateBackend, clock: FakeClock) -> None:
    """A worker missing from one observation is forgotten: seen again, its silence starts afresh."""
    observe(backend, {"w1": "7", "w2": "7"})
    clock.advance(10_000)
    assert observe(backend, {"w2": "7"}) == {"w2": 10_000}
    assert observe(backend, {"w1": "7", "w2": "7"}) == {"w2": 10_000}  # w1 first seen again now
    clock.advance(10_000)
    assert observe(backend, {}) == {}
    assert observe(backend, {"w1": "7", "w2": "7"}) == {}


def test_brokers_namespaces_are_tracked_apart(backend: StateBackend, clock: FakeClock) -> None:
    """Two broker namespaces sharing a backend do not forget each other's workers."""
    observe(backend, {"w": "1"}, namespace="a")
    observe(backend, {"v": "1"}, namespace="b")
    clock.advance(10_000)
    assert observe(backend, {"w": "1"}, namespace="a") == {"w": 10_000}
    assert observe(backend, {"v": "1"}, namespace="b") == {"v": 10_000}


def test_score_text_is_the_same_for_the_same_score() -> None:
    """Integral scores print without a fraction (as Redis does); others keep every digit."""
    assert [score_text(1_800_000_000_000.0), score_text(1.5), score_text(3)] == ["1800000000000", "1.5", "3"]
