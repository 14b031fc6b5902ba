"""Thresholds, their levels, and the table of thresholds by queue."""

from __future__ import annotations

from typing import Any

import pytest

import dramatiq_resilience as dr
from dramatiq_resilience.thresholds import ThresholdTable


@pytest.mark.parametrize(
    ("depth", "level"),
    [
        (0, "normal"),
        (9, "normal"),
        (10, "warning"),
        (49, "warning"),
        (50, "critical"),
        (99, "critical"),
        (100, "emergency"),
        (10**9, "emergency"),
    ],
)
def test_a_level_is_reached_at_its_threshold(depth: int, level: str) -> None:
    """A queue is at the highest level whose threshold its depth has reached (depth >= threshold)."""
    assert dr.Thresholds(warning=10, critical=50, emergency=100).level(depth) == level


def test_a_level_set_to_none_is_off() -> None:
    """Without a critical threshold a deep queue goes from warning straight to emergency."""
    thresholds = dr.Thresholds(warning=10, emergency=100)
    assert [thresholds.level(d) for d in (9, 10, 99, 100)] == ["normal", "warning", "warning", "emergency"]
    assert dr.Thresholds().level(10**9) == "normal"
    assert (
        thresholds.threshold("critical"),
        thresholds.threshold("emergency"),
        thresholds.threshold("normal"),
    ) == (
        None,
        100,
        None,
    )


def test_equal_thresholds_give_the_higher_level() -> None:
    """critical == emergency: the queue is at emergency from that depth."""
    assert dr.Thresholds(critical=5, emergency=5).level(5) == "emergency"


@pytest.mark.parametrize(
    ("kwargs", "option", "problem"),
    [
        ({"warning": 0}, "warning", "must be a positive integer, got 0 (a depth in messages, or None)"),
        ({"critical": -3}, "critical", "must be a positive integer, got -3 (a depth in messages, or None)"),
        (
            {"emergency": 2.5},
            "emergency",
            "must be a positive integer, got 2.5 (a depth in messages, or None)",
        ),
        (
            {"emergency": True},
            "emergency",
            "must be a positive integer, got True (a depth in messages, or None)",
        ),
        ({"warning": "10"}, "warning", "must be a positive integer, got '10' (a depth in messages, or None)"),
        (
            {"warning": 100, "critical": 50},
            "warning",
            "warning=100 is above critical=50; thresholds must rise: warning <= critical <= emergency",
        ),
        (
            {"warning": 100, "emergency": 50},
            "warning",
            "warning=100 is above emergency=50; thresholds must rise: warning <= critical <= emergency",
        ),
    ],
)
def test_bad_thresholds_are_configuration_errors(kwargs: dict[str, Any], option: str, problem: str) -> None:
    """Each bad threshold names the level and says what was wrong."""
    with pytest.raises(dr.ConfigurationError) as info:
        dr.Thresholds(**kwargs)
    assert (info.value.option, info.value.problem) == (option, problem)


def test_a_float_that_is_an_integer_is_accepted() -> None:
    """100.0 is 100 messages."""
    assert dr.Thresholds(emergency=100.0).emergency == 100  # type: ignore[arg-type]


def test_the_table_strips_delay_queue_suffixes_and_falls_back_to_the_default() -> None:
    """Queues are named canonically; unnamed queues get the default; None leaves a named queue unchecked."""
    table = ThresholdTable(
        {"emails.DQ": {"warning": 5}, "reports": None}, default=dr.Thresholds(emergency=1_000)
    )
    assert table.get("emails") == dr.Thresholds(warning=5)
    assert table.get("reports") is None
    assert table.get("anything") == dr.Thresholds(emergency=1_000)
    assert table.named() == ["emails", "reports"]
    assert bool(table) is True
    assert bool(ThresholdTable({"reports": None})) is False


@pytest.mark.parametrize(
    ("thresholds", "default", "option", "problem"),
    [
        (
            {"a": {"warning": 0}},
            None,
            "thresholds",
            "queue 'a' warning: must be a positive integer, got 0 (a depth in messages, or None)",
        ),
        (
            {"a": {"warn": 3}},
            None,
            "thresholds",
            "queue 'a': unknown key(s) 'warn'; use warning, critical, emergency",
        ),
        (
            {"a": 5},
            None,
            "thresholds",
            "queue 'a': must be Thresholds(warning=..., critical=..., emergency=...) "
            "or a dict of them, got 5",
        ),
        (
            {"a": None, "a.DQ": None},
            None,
            "thresholds",
            "queue 'a' is given twice ('a.DQ' names the same queue)",
        ),
        ({"": None}, None, "thresholds", "queue names must be non-empty strings, got ''"),
        (["a"], None, "thresholds", "must be a dict of queue name to Thresholds, got ['a']"),
        (
            None,
            {"critical": 9, "emergency": 3},
            "default",
            "default critical: critical=9 is above emergency=3; thresholds must rise: "
            "warning <= critical <= emergency",
        ),
    ],
)
def test_a_bad_table_names_the_queue(thresholds: Any, default: Any, option: str, problem: str) -> None:
    """A bad entry names its queue (or the default) and what was wrong."""
    with pytest.raises(dr.ConfigurationError) as info:
        ThresholdTable(thresholds, default)
    assert (info.value.option, info.value.problem) == (option, problem)


def test_status_reports_depth_level_and_thresholds() -> None:
    """QueueStatus.to_dict() carries the reading, the level and the thresholds; unknown depth has no level."""
    reading = dr.QueueDepth("emails", ready=7, delayed=4, read_at_ms=1_000)
    status = dr.QueueStatus("emails", reading, dr.Thresholds(warning=10, critical=20))
    assert status.to_dict() == {
        "queue_name": "emails",
        "depth": 11,
        "ready": 7,
        "delayed": 4,
        "read_at_ms": 1_000,
        "level": "warning",
        "thresholds": {"warning": 10, "critical": 20, "emergency": None},
        "error": None,
    }
    assert dr.QueueStatus("emails", None, dr.Thresholds(warning=1), "down").level is None
    assert dr.QueueStatus("emails", reading, None).level is None
