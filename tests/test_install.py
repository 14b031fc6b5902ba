"""install(): pieces in the right places, once, with a switch each."""

from __future__ import annotations

import sys
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, Retries

import dramatiq_resilience as dr
from dramatiq_resilience.install import PIECES, Piece

install_module = sys.modules["dramatiq_resilience.install"]


def names(broker: Any) -> list[str]:
    return [type(m).__name__ for m in broker.middleware]


def test_install_puts_the_guard_first(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """RetryGuard first, Scheduling second, then Metrics and HealthScorer; the checks, then
    SentryReporter and DeadLetters, before Retries."""
    before = names(stub_broker)
    stack = dr.install(stub_broker, backend=stub_backend)
    retries = before.index("Retries")
    assert names(stub_broker) == [
        "RetryGuard",
        "Scheduling",
        "Metrics",
        "HealthScorer",
        *before[:retries],
        "CircuitBreaker",
        "Deduplication",
        "SlidingWindowLimiter",
        "SentryReporter",
        "DeadLetters",
        *before[retries:],
    ]
    assert isinstance(stack.guard, dr.RetryGuard)
    assert dr.installed(stub_broker) is stack


def test_install_is_idempotent(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """Installing twice adds nothing the second time and returns the same middleware."""
    first = dr.install(stub_broker, backend=stub_backend)
    count = len(stub_broker.middleware)
    second = dr.install(stub_broker, backend=stub_backend)
    assert len(stub_broker.middleware) == count
    assert second.guard is first.guard


def test_install_switches_pieces_off(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """guard=False and breaker=False leave them out."""
    before = names(stub_broker)
    stack = dr.install(
        stub_broker,
        backend=stub_backend,
        guard=False,
        scheduling=False,
        breaker=False,
        dedup=False,
        limiter=False,
        dead_letters=False,
        metrics=False,
        health=False,
        sentry=False,
    )
    assert names(stub_broker) == before
    with pytest.raises(AttributeError, match="the 'guard' piece is not installed"):
        stack.guard  # noqa: B018


def test_install_takes_a_ready_middleware(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """A middleware instance given as the switch is used as is."""
    guard = dr.RetryGuard()
    assert dr.install(stub_broker, backend=stub_backend, guard=guard).guard is guard


def test_install_rejects_unknown_pieces_and_bad_switches(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """Typos and bad switch values are ConfigurationErrors that say what is known."""
    with pytest.raises(dr.ConfigurationError, match=r"unknown piece\(s\) 'gaurd'; known: .*guard"):
        dr.install(stub_broker, backend=stub_backend, gaurd=True)
    with pytest.raises(dr.ConfigurationError, match="Option 'guard': must be True, False"):
        dr.install(stub_broker, backend=stub_backend, guard="yes")
    with pytest.raises(dr.ConfigurationError, match="Option 'backend'"):
        dr.install(stub_broker, backend=None)  # type: ignore[arg-type]


class _Checks(Middleware):
    pass


class _SeesFailure(Middleware):
    pass


def test_registered_pieces_go_before_retries_in_registry_order(
    stub_broker: StubBroker, stub_backend: dr.StubBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces that check, then pieces that must see the final failure, all before Retries."""
    monkeypatch.setattr(
        install_module,
        "PIECES",
        [
            *PIECES,
            Piece("checks", _Checks, lambda backend, **kw: _Checks()),
            Piece("sees_failure", _SeesFailure, lambda backend, **kw: _SeesFailure()),
        ],
    )
    dr.install(stub_broker, backend=stub_backend)
    order = names(stub_broker)
    assert order.index("_Checks") + 1 == order.index("_SeesFailure")
    assert order.index("_SeesFailure") + 1 == order.index("Retries")


def test_install_without_retries_appends(
    stub_backend: dr.StubBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a broker without Retries, pieces are appended."""
    broker = StubBroker(middleware=[])
    monkeypatch.setattr(install_module, "PIECES", [Piece("checks", _Checks, lambda backend, **kw: _Checks())])
    dr.install(broker, backend=stub_backend)
    assert names(broker) == ["_Checks"]
    assert not any(isinstance(m, Retries) for m in broker.middleware)


def test_actor_declared_after_install_sees_the_options(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """Dramatiq accepts our actor options only once the stack is installed."""
    dr.install(stub_broker, backend=stub_backend)

    @dramatiq.actor(max_retries=0)
    def noop() -> None: ...

    assert noop.options == {"max_retries": 0}
