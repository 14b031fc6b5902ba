"""Options: message > actor > middleware default, by presence; validated with clear errors."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.options import (
    Option,
    boolean,
    callable_,
    choice,
    exception_types,
    fraction,
    lookup,
    milliseconds,
    non_negative_int,
    optional,
    positive_int,
    string,
)

COOLDOWN = Option("demo_cooldown", "cooldown", milliseconds())
THRESHOLD = Option("demo_threshold", "threshold", optional(positive_int))
KEY = Option("demo_key", "key", optional(callable_), per_message=False)


class Demo(dr.ResilienceMiddleware):
    """A middleware with options, to test the base class through a real broker."""

    option_specs: ClassVar = (COOLDOWN, THRESHOLD, KEY)

    def __init__(self, *, backend: dr.StateBackend, cooldown: Any = 30_000, threshold: Any = 5) -> None:
        super().__init__(backend=backend, on_backend_error="allow")
        self.cooldown = cooldown
        self.threshold = threshold
        self.key = None
        self.check_defaults()
        self.seen: list[tuple[Any, Any]] = []

    def before_process_message(self, broker: Any, message: Any) -> None:
        self.seen.append(
            (self.option(broker, message, "demo_cooldown"), self.option(broker, message, "demo_threshold"))
        )


def test_lookup_prefers_message_then_actor_then_default() -> None:
    """The message's value wins over the actor's, which wins over the default."""
    assert lookup(COOLDOWN, message_options={}, actor_options={}, default=1) == 1
    assert lookup(COOLDOWN, message_options={}, actor_options={"demo_cooldown": 2}, default=1) == 2
    assert (
        lookup(COOLDOWN, message_options={"demo_cooldown": 3}, actor_options={"demo_cooldown": 2}, default=1)
        == 3
    )


def test_lookup_honours_explicit_zero_and_none() -> None:
    """An option present with 0 or None is used, not replaced by the default."""
    zero = Option("demo_delay", "delay", milliseconds(minimum=0))
    assert lookup(zero, message_options={"demo_delay": 0}, actor_options={}, default=500) == 0
    assert lookup(THRESHOLD, message_options={}, actor_options={"demo_threshold": None}, default=5) is None


def test_lookup_ignores_message_values_for_actor_only_options() -> None:
    """Callables are actor options only: a message cannot override them."""
    assert lookup(KEY, message_options={"demo_key": "x"}, actor_options={}, default=None) is None


def test_lookup_validates_message_values() -> None:
    """A bad message value raises a ConfigurationError naming actor and option."""
    with pytest.raises(dr.ConfigurationError) as info:
        lookup(COOLDOWN, message_options={"demo_cooldown": -1}, actor_options={}, default=1, actor_name="a")
    assert str(info.value) == (
        "Actor 'a', option 'demo_cooldown': must be a duration in milliseconds >= 1, got -1"
    )
    assert (info.value.actor_name, info.value.option) == ("a", "demo_cooldown")


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        (positive_int, 3, 3),
        (positive_int, 3.0, 3),
        (non_negative_int, 0, 0),
        (milliseconds(), datetime.timedelta(seconds=2), 2_000),
        (milliseconds(minimum=0), 0, 0),
        (fraction, 1, 1.0),
        (fraction, 0.25, 0.25),
        (boolean, False, False),
        (string, "x", "x"),
        (choice("allow", "defer"), "defer", "defer"),
        (exception_types, KeyError, (KeyError,)),
        (exception_types, [KeyError, OSError], (KeyError, OSError)),
        (optional(positive_int), None, None),
    ],
)
def test_checkers_accept_and_normalize(check: Any, value: Any, expected: Any) -> None:
    """Each checker returns the normalized value."""
    assert check(value) == expected


@pytest.mark.parametrize(
    ("check", "value", "problem"),
    [
        (positive_int, 0, "must be a positive integer, got 0"),
        (positive_int, True, "must be a positive integer, got True"),
        (positive_int, 1.5, "must be a positive integer, got 1.5"),
        (non_negative_int, -1, "must be an integer >= 0, got -1"),
        (milliseconds(), "30s", "must be a duration in milliseconds >= 1, got '30s'"),
        (milliseconds(), float("inf"), "must be a duration in milliseconds >= 1, got inf"),
        (fraction, 0, "must be a number greater than 0 and at most 1, got 0"),
        (fraction, 1.5, "must be a number greater than 0 and at most 1, got 1.5"),
        (boolean, 1, "must be True or False, got 1"),
        (string, "", "must be a non-empty string, got ''"),
        (choice("allow", "defer"), "deny", "must be one of 'allow', 'defer', got 'deny'"),
        (callable_, 3, "must be callable, got 3"),
        (exception_types, "KeyError", "must be an exception class or a tuple of them, got 'KeyError'"),
    ],
)
def test_checkers_reject_with_a_clear_problem(check: Any, value: Any, problem: str) -> None:
    """Each checker says exactly what was wrong."""
    with pytest.raises(ValueError) as info:
        check(value)
    assert str(info.value) == problem


def test_bad_actor_option_fails_at_declaration(stub_broker: StubBroker, stub_backend: dr.StubBackend) -> None:
    """Declaring an actor with a bad option raises, naming actor, option and problem; no actor is made."""
    stub_broker.add_middleware(Demo(backend=stub_backend))
    with pytest.raises(dr.ConfigurationError) as info:

        @dramatiq.actor(demo_cooldown=0)
        def charge() -> None: ...

    assert str(info.value) == (
        "Actor 'charge', option 'demo_cooldown': must be a duration in milliseconds >= 1, got 0"
    )
    assert "charge" not in stub_broker.actors


def test_actor_options_are_normalized_at_declaration(
    stub_broker: StubBroker, stub_backend: dr.StubBackend
) -> None:
    """A timedelta given to an actor is stored as milliseconds."""
    stub_broker.add_middleware(Demo(backend=stub_backend))

    @dramatiq.actor(demo_cooldown=datetime.timedelta(seconds=1))
    def charge() -> None: ...

    assert charge.options["demo_cooldown"] == 1_000


def test_bad_constructor_default_is_a_configuration_error(stub_backend: dr.StubBackend) -> None:
    """A bad default names the option."""
    with pytest.raises(dr.ConfigurationError) as info:
        Demo(backend=stub_backend, threshold=-2)
    assert info.value.option == "demo_threshold"
    assert "must be a positive integer, got -2" in str(info.value)


def test_middleware_requires_a_state_backend() -> None:
    """Passing something that is not a StateBackend is caught at construction."""
    with pytest.raises(dr.ConfigurationError, match="Option 'backend': must be a StateBackend"):
        Demo(backend="redis://localhost")  # type: ignore[arg-type]


def test_options_resolve_per_message_in_a_real_worker(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """Through a worker: default, actor value, message override, in that order of precedence."""
    demo = Demo(backend=stub_backend)
    stub_broker.add_middleware(demo)

    @dramatiq.actor(demo_threshold=7)
    def charge() -> None: ...

    charge.send()
    stub_broker.join(charge.queue_name)
    stub_worker.join()
    charge.send_with_options(demo_cooldown=10, demo_threshold=None)
    stub_broker.join(charge.queue_name)
    stub_worker.join()
    assert demo.seen == [(30_000, 7), (10, None)]


def test_bad_message_option_dead_letters_the_message(
    stub_broker: StubBroker, stub_worker: Worker, stub_backend: dr.StubBackend
) -> None:
    """A bad per-message value rejects the message with InvalidMessage; the actor never runs."""
    stub_broker.add_middleware(Demo(backend=stub_backend))
    runs = []

    @dramatiq.actor(max_retries=3)
    def charge() -> None:
        runs.append(1)

    charge.send_with_options(demo_cooldown="soon")
    stub_broker.join(charge.queue_name, fail_fast=False)
    stub_worker.join()
    assert runs == []
    [dead] = stub_broker.dead_letters
    error = dead._exception
    assert isinstance(error, dr.InvalidMessage)
    assert (error.option, error.problem) == (
        "demo_cooldown",
        "must be a duration in milliseconds >= 1, got 'soon'",
    )
