"""Limit and Concurrency: construction, parsing and clear errors."""

from __future__ import annotations

import datetime

import pytest

import dramatiq_resilience as dr


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [
        ("100/minute", 100, 60_000),
        ("100/min", 100, 60_000),
        ("10 per second", 10, 1_000),
        ("10/s", 10, 1_000),
        ("5/30 seconds", 5, 30_000),
        ("5 per 30 seconds", 5, 30_000),
        ("1000/hour", 1_000, 3_600_000),
        ("2/day", 2, 86_400_000),
        ("3 / 250 ms", 3, 250),
        (" 7/HOURS ", 7, 3_600_000),
    ],
)
def test_parse_reads_the_common_spellings(text: str, count: int, per: int) -> None:
    """Limit.parse turns 'COUNT/UNIT' and 'COUNT per N UNITS' into count and per (ms)."""
    limit = dr.Limit.parse(text)
    assert (limit.count, limit.per, limit.key, limit.name) == (count, per, None, None)


@pytest.mark.parametrize(
    "text", ["", "100", "100/fortnight", "ten/minute", "-1/second", "100/0 seconds", "/s"]
)
def test_parse_explains_a_bad_rate(text: str) -> None:
    """A string that is not a rate is a ConfigurationError saying what is expected."""
    with pytest.raises(dr.ConfigurationError) as info:
        dr.Limit.parse(text)
    assert info.value.option == "rate_limits"
    assert "e.g. '100/minute'" in str(info.value) or "empty window" in str(info.value)


def test_parse_rejects_a_zero_count() -> None:
    """'0/second' allows nothing: the count must be >= 1."""
    with pytest.raises(dr.ConfigurationError, match="Option 'count': must be a positive integer, got 0"):
        dr.Limit.parse("0/second")


def test_parse_passes_key_and_name() -> None:
    """Key function and name given to parse end up on the limit."""

    def tenant(tenant: str, **_: object) -> str:
        return tenant

    limit = dr.Limit.parse("10/second", key=tenant, name="stripe-api")
    assert (limit.key, limit.name) == (tenant, "stripe-api")


def test_limit_takes_a_timedelta_and_describes_itself() -> None:
    """per may be a timedelta; describe() says it in milliseconds."""
    limit = dr.Limit(10, per=datetime.timedelta(minutes=1))
    assert (limit.per, limit.describe()) == (60_000, "10 per 60000 ms")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0, "per": 1_000}, "Option 'count': must be a positive integer, got 0"),
        ({"count": 1.5, "per": 1_000}, "Option 'count': must be a positive integer, got 1.5"),
        ({"count": 10, "per": 0}, "Option 'per': must be a duration in milliseconds >= 1, got 0"),
        ({"count": 10, "per": 1_000, "key": "tenant"}, "Option 'key': a limit key must be a function"),
        ({"count": 10, "per": 1_000, "name": "a:b"}, "Option 'name': a limit name must be"),
        ({"count": 10, "per": 1_000, "name": ""}, "Option 'name': a limit name must be"),
    ],
)
def test_limit_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    """Bad count, per, key or name: a ConfigurationError naming the field."""
    with pytest.raises(dr.ConfigurationError, match=message):
        dr.Limit(**kwargs)  # type: ignore[arg-type]


def test_concurrency_defaults_and_checks() -> None:
    """Concurrency(n) leases for 30 s by default; n, lease and name are checked."""
    assert dr.Concurrency(2) == dr.Concurrency(2, lease=30_000)
    assert dr.Concurrency(3, name="db", lease=datetime.timedelta(seconds=2)).describe() == (
        "3 at once (lease 2000 ms)"
    )
    with pytest.raises(dr.ConfigurationError, match="Option 'n': must be a positive integer, got 0"):
        dr.Concurrency(0)
    with pytest.raises(
        dr.ConfigurationError, match="Option 'lease': must be a duration in milliseconds >= 10"
    ):
        dr.Concurrency(1, lease=5)


def test_limits_compare_by_definition_not_key_function() -> None:
    """Two limits with the same count, per and name are equal whatever their key functions."""
    assert dr.Limit(5, per=1_000, key=lambda t: t, name="x") == dr.Limit(5, per=1_000, name="x")
    assert dr.Limit(5, per=1_000) != dr.Limit(5, per=2_000)
