"""When a job's occurrences are: 5-field cron expressions in a time zone, and fixed intervals.

Occurrences are UNIX times in milliseconds.  Every scheduler instance
computes the same occurrences from the same schedule, whatever its start time:
cron occurrences follow the wall clock of the job's time zone, and interval
occurrences are multiples of the interval since the epoch (``every=60_000``
fires at every UTC minute), so the claim on an occurrence means the same
thing in every process.

Cron expressions are the classic five fields (minute, hour, day of month,
month, day of week) with Vixie cron's meaning, computed by APScheduler 3.x's
``CronTrigger`` with two corrections:

* day of week ``0`` and ``7`` are Sunday, ``1`` is Monday (APScheduler 3.x
  counts from Monday); names (``mon-fri``) work as well;
* when both day of month and day of week are restricted (neither starts with
  ``*``), a day matches if *either* matches, as in cron (APScheduler alone
  requires both).

Daylight saving time (see the README for the table):

* **skipped hour** (Europe/Paris, 2026-03-29, 02:00 -> 03:00): a job whose
  time falls in the hour that does not exist runs once that day, one hour
  later on the wall clock (``30 2 * * *`` runs at 03:30 CEST), the same
  instant as 02:30 in winter time.  Wildcard-hour jobs (``*/15 * * * *``)
  simply have no occurrences in the missing hour.
* **repeated hour** (2026-10-25, 03:00 -> 02:00): a job with a fixed hour
  runs once, on the first pass (``30 2 * * *`` runs at 02:30 CEST, not again
  at 02:30 CET).  A job whose hour field starts with ``*`` follows elapsed
  time and runs on both passes (``0 * * * *`` runs at 02:00 CEST and 02:00
  CET), so its interval never stretches to two hours.
"""

from __future__ import annotations

import abc
import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

__all__ = ["MACROS", "CronSchedule", "IntervalSchedule", "Schedule", "ScheduleError", "parse_timezone"]

#: Cron's shorthand expressions.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_FIELD_LABELS = {
    "minute": "minute",
    "hour": "hour",
    "day": "day of month",
    "month": "month",
    "day_of_week": "day of week",
}
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_TOKEN = re.compile(r"^(\*|[a-z]{3}|\d+)(?:-([a-z]{3}|\d+))?(?:/(\d+))?$")

#: The most occurrences :meth:`Schedule.between` lists (the latest are kept).
MAX_OCCURRENCES = 10_000

_UTC = timezone.utc


class ScheduleError(ValueError):
    """A bad schedule.  ``field`` names the part that was wrong (``"minute"``, ``"tz"``...)."""

    def __init__(self, problem: str, *, field: str) -> None:
        super().__init__(problem)
        self.field = field


def parse_timezone(tz: str | tzinfo) -> tuple[str, tzinfo]:
    """The IANA name and ``tzinfo`` of ``tz`` (a name such as ``"Europe/Paris"`` or a ``ZoneInfo``)."""
    if isinstance(tz, ZoneInfo):
        return tz.key, tz
    if tz is _UTC:
        return "UTC", _UTC
    if not isinstance(tz, str) or not tz:
        raise ScheduleError(f"must be an IANA time zone name such as 'Europe/Paris', got {tz!r}", field="tz")
    try:
        return tz, ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {tz!r} (use an IANA name such as 'Europe/Paris')", field="tz"
        ) from None


def _ms(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=_UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _datetime(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=_UTC) + timedelta(milliseconds=ms)


class Schedule(abc.ABC):
    """The occurrences of a job, in milliseconds since the epoch."""

    @abc.abstractmethod
    def next_after(self, ms: int) -> int | None:
        """The first occurrence strictly after ``ms``, or ``None`` if there is none."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The schedule as a user wrote it (``"*/5 * * * *"``, ``"every 1000 ms"``)."""

    @property
    def timezone(self) -> str:
        return "UTC"

    def between(self, after: int, upto: int) -> list[int]:
        """Occurrences in ``(after, upto]``, oldest first (at most the latest :data:`MAX_OCCURRENCES`)."""
        found: list[int] = []
        moment = self.next_after(after)
        while moment is not None and moment <= upto:
            found.append(moment)
            if len(found) > MAX_OCCURRENCES:
                del found[0]
            moment = self.next_after(moment)
        return found


class IntervalSchedule(Schedule):
    """Every ``every_ms`` milliseconds, at multiples of the interval since the epoch.

    Parameters:
      every_ms: the interval in milliseconds (>= 1000).
    """

    def __init__(self, every_ms: int) -> None:
        if isinstance(every_ms, bool) or not isinstance(every_ms, int) or every_ms < 1000:
            raise ScheduleError(
                f"must be an interval in milliseconds >= 1000, got {every_ms!r}", field="every"
            )
        self.every_ms = every_ms

    def next_after(self, ms: int) -> int:
        return (ms // self.every_ms + 1) * self.every_ms

    def between(self, after: int, upto: int) -> list[int]:
        first = self.next_after(after)
        if first > upto:
            return []
        last = upto // self.every_ms * self.every_ms
        first = max(first, last - (MAX_OCCURRENCES - 1) * self.every_ms)
        return list(range(first, last + 1, self.every_ms))

    def describe(self) -> str:
        return f"every {self.every_ms} ms"

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.every_ms})"


def _day_of_week(value: str) -> str:
    """Translate a cron day-of-week field (0 or 7 = Sunday) into APScheduler's day names."""
    if value == "*":
        return "*"
    days: set[int] = set()
    for token in value.lower().split(","):
        match = _DOW_TOKEN.match(token)
        if not match:
            raise ScheduleError(
                f"cannot read {token!r} (use 0-7 or sun-sat, ranges and steps)", field="day_of_week"
            )
        start, end, step = match.groups()

        def number(text: str) -> int:
            if text.isdigit():
                day = int(text)
                if day > 7:
                    raise ScheduleError(
                        f"{day} is not a day of week (0-7, 0 and 7 are Sunday)", field="day_of_week"
                    )
                return day
            if text not in _DAY_NAMES:
                raise ScheduleError(f"{text!r} is not a day name (sun-sat)", field="day_of_week")
            return _DAY_NAMES.index(text)

        if start == "*":
            if end is not None:
                raise ScheduleError(f"cannot read {token!r}", field="day_of_week")
            first, last = 0, 6
        else:
            first = number(start)
            last = number(end) if end is not None else (6 if step else first)
            if end is not None and last == 0 and first > 0:
                last = 7  # "5-0" and "fri-sun" mean Friday to Sunday
            if last < first:
                raise ScheduleError(f"range {token!r} runs backwards", field="day_of_week")
        stride = int(step) if step else 1
        if stride < 1:
            raise ScheduleError(f"step in {token!r} must be >= 1", field="day_of_week")
        days.update(day % 7 for day in range(first, last + 1, stride))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


class CronSchedule(Schedule):
    """A 5-field cron expression in a time zone.  See the module docstring for its rules.

    Parameters:
      expression: ``"minute hour day month day-of-week"`` or a macro such as ``"@daily"``.
      tz: an IANA time zone name (default ``"UTC"``) or a ``ZoneInfo``.

    Raises:
      ScheduleError: naming the bad field (``minute``, ``hour``, ``day``,
        ``month``, ``day_of_week``, ``tz`` or ``cron`` for the whole expression).
    """

    def __init__(self, expression: str, tz: str | tzinfo = "UTC") -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise ScheduleError(f"must be a 5-field cron expression, got {expression!r}", field="cron")
        self.expression = expression.strip()
        self.tz_name, self.tz = parse_timezone(tz)
        text = MACROS.get(self.expression.lower(), self.expression)
        values = text.split()
        if len(values) != 5:
            raise ScheduleError(
                f"must have 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(values)} in {self.expression!r}",
                field="cron",
            )
        fields = dict(zip(_FIELDS, values, strict=True))
        fields["day_of_week"] = _day_of_week(fields["day_of_week"])
        for name, value in fields.items():
            try:
                CronTrigger(**{name: value}, timezone=self.tz)
            except ValueError as exc:
                raise ScheduleError(
                    f"{_FIELD_LABELS[name]} field {values[_FIELDS.index(name)]!r} is invalid: {exc}",
                    field=name,
                ) from None
        # Cron's rule: with both day fields restricted, either one matching is enough.
        if not values[2].startswith("*") and not values[4].startswith("*"):
            variants = [{**fields, "day_of_week": "*"}, {**fields, "day": "*"}]
        else:
            variants = [fields]
        self.triggers = [CronTrigger(**variant, timezone=self.tz) for variant in variants]
        #: A fixed-hour job runs once in a repeated hour; a ``*``-hour job follows elapsed time.
        self.follows_elapsed_time = values[1].startswith("*")

    @property
    def timezone(self) -> str:
        return self.tz_name

    def describe(self) -> str:
        return self.expression

    def _repeated_pass(self, moment: datetime) -> bool:
        """Whether ``moment`` is the second pass of a wall time that happens twice."""
        if moment.fold != 1:
            return False
        first = moment.replace(fold=0)
        return first.utcoffset() != moment.utcoffset()

    def next_after(self, ms: int) -> int | None:
        start = _datetime(ms) + timedelta(microseconds=1)
        while True:
            candidates = [
                t for t in (trigger.get_next_fire_time(None, start) for trigger in self.triggers) if t
            ]
            if not candidates:
                return None
            moment = min(candidates, key=lambda t: t.astimezone(_UTC))
            if not self.follows_elapsed_time and self._repeated_pass(moment.astimezone(self.tz)):
                start = moment.astimezone(_UTC) + timedelta(microseconds=1)
                continue
            return _ms(moment.astimezone(_UTC))

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, tz={self.tz_name!r})"
