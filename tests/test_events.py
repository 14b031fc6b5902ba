"""Events: listeners hear what they subscribed to; a failing listener breaks nothing."""

from __future__ import annotations

import logging

import pytest

import dramatiq_resilience as dr


def test_listeners_receive_their_events_and_wildcards_receive_all() -> None:
    """A named listener hears its event; a "*" listener hears every event."""
    named: list[dr.Event] = []
    everything: list[dr.Event] = []
    dr.subscribe("thing_happened", named.append)
    dr.subscribe("*", everything.append)
    try:
        dr.emit("thing_happened", size=3)
        dr.emit("other_thing")
    finally:
        dr.unsubscribe("thing_happened", named.append)
        dr.unsubscribe("*", everything.append)
    dr.emit("thing_happened", size=4)
    assert [(e.name, e.fields) for e in named] == [("thing_happened", {"size": 3})]
    assert [e.name for e in everything] == ["thing_happened", "other_thing"]


def test_a_failing_listener_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises does not stop the emitter or the other listeners."""
    heard: list[dr.Event] = []

    def broken(event: dr.Event) -> None:
        raise RuntimeError("listener bug")

    dr.subscribe("thing_happened", broken)
    dr.subscribe("thing_happened", heard.append)
    try:
        with caplog.at_level(logging.ERROR, logger="dramatiq_resilience.events"):
            dr.emit("thing_happened")
    finally:
        dr.unsubscribe("thing_happened", broken)
        dr.unsubscribe("thing_happened", heard.append)
    assert len(heard) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"Event listener {broken!r} failed on event 'thing_happened'."
    ]
