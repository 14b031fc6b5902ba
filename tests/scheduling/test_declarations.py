"""Declaring cron jobs: what is accepted, and errors that name the job and the field."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.scheduling import CronSchedule, IntervalSchedule, jobs


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture
def actor(stub_broker: StubBroker) -> Any:
    @dramatiq.actor
    def report() -> None:
        pass

    return report


def test_cron_stacks_on_an_actor_and_registers_the_job(stub_broker: StubBroker) -> None:
    """@dr.cron above @dramatiq.actor returns the actor and records the job on its broker."""

    @dr.cron("*/5 * * * *", tz="Europe/Paris", args=(1,), kwargs={"full": True}, jitter=500)
    @dramatiq.actor
    def report(n: int, full: bool = False) -> None:
        pass

    assert isinstance(report, dramatiq.Actor)
    job = jobs(stub_broker)["report"]
    assert (job.actor, job.args, job.kwargs, job.jitter, job.overlap) == (
        report,
        (1,),
        {"full": True},
        500,
        "skip",
    )
    assert job.spec() == {
        "actor_name": "report",
        "queue_name": "default",
        "schedule": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "overlap": "skip",
    }


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "Job 'report', option 'cron': minute field '61' is invalid"),
        ("* 24 * * *", "Job 'report', option 'cron': hour field '24' is invalid"),
        ("* * 32 * *", "Job 'report', option 'cron': day of month field '32' is invalid"),
        ("* * * 13 *", "Job 'report', option 'cron': month field '13' is invalid"),
        ("* * * * 8", "Job 'report', option 'cron': 8 is not a day of week \\(0-7, 0 and 7 are Sunday\\)"),
        ("* * * * funday", "Job 'report', option 'cron': cannot read 'funday'"),
        ("*/5 * * *", "Job 'report', option 'cron': must have 5 fields .* got 4 in '\\*/5 \\* \\* \\*'"),
        ("", "Job 'report', option 'cron': must be a 5-field cron expression"),
    ],
)
def test_bad_cron_expressions_name_the_job_and_the_field(actor: Any, expression: str, message: str) -> None:
    """A bad field fails at declaration with ConfigurationError naming the job and the field."""
    with pytest.raises(dr.ConfigurationError, match=message) as info:
        dr.schedule(actor, expression)
    assert (info.value.job, info.value.option) == ("report", "cron")
    assert jobs(actor.broker) == {}


def test_a_bad_time_zone_names_the_job(actor: Any) -> None:
    """An unknown time zone fails at declaration, option 'tz'."""
    with pytest.raises(
        dr.ConfigurationError, match="Job 'nightly', option 'tz': unknown time zone 'Europe/Pariss'"
    ):
        dr.schedule(actor, "0 3 * * *", tz="Europe/Pariss", name="nightly")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 500}, "option 'every': must be an interval in milliseconds >= 1000, got 500"),
        ({"every": 1000, "tz": "Europe/Paris"}, "option 'tz': a time zone only applies to cron expressions"),
        ({}, "option 'cron': give either a cron expression or every=milliseconds"),
        (
            {"every": 1000, "overlap": "never"},
            "option 'overlap': must be one of 'skip', 'allow', got 'never'",
        ),
        ({"every": 1000, "jitter": -1}, "option 'jitter': must be a duration in milliseconds >= 0, got -1"),
        (
            {"every": 1000, "misfire_grace": 10},
            "option 'misfire_grace': must be a duration in milliseconds >= 1000",
        ),
        ({"every": 1000, "args": {1}}, "option 'args': must be a tuple or list"),
        ({"every": 1000, "args": (object(),)}, "option 'args': args and kwargs must be serializable"),
        ({"every": 1000, "name": "a b"}, "Option 'name': must be a non-empty name"),
    ],
)
def test_bad_job_options_are_refused(actor: Any, kwargs: dict[str, Any], message: str) -> None:
    """Every option is checked at declaration."""
    with pytest.raises(dr.ConfigurationError, match=message):
        dr.schedule(actor, **kwargs)


def test_cron_must_stack_above_the_actor_decorator(stub_broker: StubBroker) -> None:
    """@dr.cron under @dramatiq.actor gets a function, not an actor: a clear error."""
    with pytest.raises(dr.ConfigurationError, match=r"stack @cron above @dramatiq\.actor"):

        @dramatiq.actor
        @dr.cron("* * * * *")
        def wrong() -> None:
            pass


def test_one_actor_scheduled_twice_needs_names(actor: Any) -> None:
    """A second schedule on the same actor without its own name is refused."""
    dr.schedule(actor, "0 * * * *")
    with pytest.raises(dr.ConfigurationError, match="Job 'report', option 'name': is already scheduled"):
        dr.schedule(actor, "30 * * * *")
    dr.schedule(actor, "30 * * * *", name="report-half")
    assert sorted(jobs(actor.broker)) == ["report", "report-half"]


def test_cron_days_of_week_count_from_sunday_and_either_day_field_matches() -> None:
    """Day of week 0 and 7 are Sunday; with day of month and day of week both set, either matches."""
    sundays = CronSchedule("0 0 * * 0")
    assert sundays.between(utc(2026, 1, 1), utc(2026, 1, 15)) == [utc(2026, 1, 4), utc(2026, 1, 11)]
    assert CronSchedule("0 0 * * 7").between(utc(2026, 1, 1), utc(2026, 1, 8)) == [utc(2026, 1, 4)]
    weekdays = CronSchedule("0 0 * * 1-5")
    assert len(weekdays.between(utc(2026, 1, 4), utc(2026, 1, 11))) == 5
    either = CronSchedule("0 0 13 * fri")  # Fridays and the 13th
    assert either.between(utc(2026, 1, 1), utc(2026, 1, 17)) == [
        utc(2026, 1, 2), utc(2026, 1, 9), utc(2026, 1, 13), utc(2026, 1, 16)
    ]  # fmt: skip
    assert CronSchedule("@daily").describe() == "@daily"
    assert CronSchedule("@hourly").next_after(utc(2026, 1, 1, 0, 30)) == utc(2026, 1, 1, 1)


def test_interval_occurrences_are_epoch_aligned() -> None:
    """every=ms occurs at multiples of the interval since the epoch, the same in every process."""
    schedule = IntervalSchedule(60_000)
    assert schedule.next_after(utc(2026, 1, 1, 0, 0) + 1) == utc(2026, 1, 1, 0, 1)
    assert schedule.between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 3)) == [
        utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2), utc(2026, 1, 1, 0, 3)
    ]  # fmt: skip
