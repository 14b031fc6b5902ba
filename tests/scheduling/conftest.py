"""Helpers for the scheduler tests: a recorder of enqueued messages and event capture."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.middleware import Middleware

import dramatiq_resilience as dr


class Sent(Middleware):
    """Records every message enqueued on the broker (id, options, delay)."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, Any]] = []

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.messages.append((message, delay))

    def of(self, actor_name: str) -> list[Any]:
        return [message for message, _ in self.messages if message.actor_name == actor_name]

    def occurrences(self, actor_name: str) -> list[int]:
        return [message.options["cron_occurrence"] for message in self.of(actor_name)]

    def by_job(self, actor_name: str) -> dict[str, list[int]]:
        """Occurrences sent for ``actor_name``, by cron job name."""
        found: dict[str, list[int]] = {}
        for message in self.of(actor_name):
            found.setdefault(message.options["cron_job"], []).append(message.options["cron_occurrence"])
        return found


@pytest.fixture
def sent(stub_broker: Any) -> Sent:
    recorder = Sent()
    stub_broker.add_middleware(recorder)
    return recorder


@pytest.fixture
def captured() -> Iterator[list[dr.Event]]:
    """Every event emitted during the test."""
    seen: list[dr.Event] = []
    dr.subscribe("*", seen.append)
    yield seen
    dr.unsubscribe("*", seen.append)


def named(events: list[dr.Event], name: str) -> list[dict[str, Any]]:
    return [event.fields for event in events if event.name == name]
