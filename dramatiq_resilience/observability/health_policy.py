"""The health formula: one 0-100 score per actor, per queue and overall, from the inputs.

Each scope starts at 100 and loses points for what is wrong in it, floored at 0:

==========================  ================================================  ===========
what                        points lost (defaults)                            scopes
==========================  ================================================  ===========
an open breaker             ``open_breaker`` (30) each                        all
a half-open breaker         ``half_open_breaker`` (15) each                   all
failure rate above 10 %     ``min(30, rate x 100)``, with >= 10 attempts      all (*)
new dead letters            ``min(20, count)``, in the window                 all
a queue past its threshold  ``min(20, (depth - threshold) / 10)`` each        queue, all
no live worker process      ``no_workers`` (50)                               overall
backend unreachable         ``backend_unavailable`` (60)                      overall
==========================  ================================================  ===========

(*) Overall, the failure rate is the worst queue's (among queues with enough
attempts): a busy healthy queue does not hide a failing one.  A failed attempt
with an exception in the actor's ``throws`` is an attempt, not a failure (as
for the breaker).  A breaker counts for the actors that name it, their
queues, and overall.
An open breaker whose cooldown has passed counts as half-open (the next
message probes it).  Bands: >= 80 healthy, >= 50 degraded, else unhealthy.
The queue-depth penalty grows with the excess over the threshold (DESIGN
said ``depth / 10``, which costs the full 20 points the moment a queue of
threshold 200 or more crosses it): a queue just past its threshold loses
little, 200 messages past it loses all 20.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError

__all__ = ["DEFAULT_WINDOW", "DEGRADED", "HEALTHY", "UNHEALTHY", "HealthPolicy", "Penalty", "band"]

#: Milliseconds over which failure rates and new dead letters are counted.
DEFAULT_WINDOW = 300_000

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"


@dataclass(frozen=True)
class HealthPolicy:
    """The weights and thresholds of the health formula (see the module docstring).

    Parameters:
      window: milliseconds of history for failure rates and dead letters (default 300 000).
      open_breaker, half_open_breaker: points per breaker (30, 15).
      failure_rate_threshold: rates above it cost points (0.10).
      failure_rate_points: points per unit of rate, i.e. per 1 % (100), capped at
        ``failure_rate_max`` (30).
      min_attempts: attempts a scope needs before its failure rate counts (10).
      dead_letter_points: points per new dead letter (1), capped at ``dead_letters_max`` (20).
      queue_threshold: ready messages a queue may hold (1 000); ``queue_thresholds``
        per queue name.
      queue_depth_divisor: messages past the threshold per point (10), capped at
        ``queue_depth_max`` (20).
      no_workers: points when worker processes reported before but none is alive now (50).
      backend_unavailable: points when the state backend cannot be read (60).
      healthy, degraded: the lowest scores of the bands (80, 50).
    """

    window: int = DEFAULT_WINDOW
    open_breaker: float = 30
    half_open_breaker: float = 15
    failure_rate_threshold: float = 0.10
    failure_rate_points: float = 100
    failure_rate_max: float = 30
    min_attempts: int = 10
    dead_letter_points: float = 1
    dead_letters_max: float = 20
    queue_threshold: int = 1_000
    queue_thresholds: Mapping[str, int] = field(default_factory=dict)
    queue_depth_divisor: float = 10
    queue_depth_max: float = 20
    no_workers: float = 50
    backend_unavailable: float = 60
    healthy: float = 80
    degraded: float = 50

    def __post_init__(self) -> None:
        for name in ("window", "min_attempts", "queue_threshold"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (1 if name == "window" else 0)
            ):
                raise ConfigurationError(f"must be a non-negative integer, got {value!r}", option=name)
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.type == "float" and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            ):
                raise ConfigurationError(f"must be a non-negative number, got {value!r}", option=item.name)
        if self.queue_depth_divisor <= 0:
            raise ConfigurationError("must be > 0", option="queue_depth_divisor")
        if not 0 <= self.degraded <= self.healthy <= 100:
            raise ConfigurationError(
                f"bands need 0 <= degraded <= healthy <= 100, got {self.degraded} and {self.healthy}",
                option="healthy",
            )
        for queue_name, threshold in dict(self.queue_thresholds).items():
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
                raise ConfigurationError(
                    f"must map queue names to non-negative integers, got {queue_name!r}: {threshold!r}",
                    option="queue_thresholds",
                )
        object.__setattr__(self, "queue_thresholds", dict(self.queue_thresholds))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | HealthPolicy | None) -> HealthPolicy:
        """A policy from keyword values (unknown names are a ``ConfigurationError``)."""
        if isinstance(values, HealthPolicy):
            return values
        values = dict(values or {})
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}",
                option="policy",
            )
        return cls(**values)

    def threshold(self, queue_name: str) -> int:
        """The depth threshold of ``queue_name``."""
        return int(self.queue_thresholds.get(queue_name, self.queue_threshold))

    def band(self, score: float) -> str:
        return band(score, healthy=self.healthy, degraded=self.degraded)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def band(score: float, *, healthy: float = 80, degraded: float = 50) -> str:
    """``"healthy"``, ``"degraded"`` or ``"unhealthy"`` for ``score``."""
    return HEALTHY if score >= healthy else DEGRADED if score >= degraded else UNHEALTHY


@dataclass(frozen=True)
class Penalty:
    """Points a scope lost, and why: ``kind`` (``breaker_open``, ``breaker_half_open``,
    ``failure_rate``, ``dead_letters``, ``queue_depth``, ``no_workers``,
    ``backend_unavailable``), the ``subject`` (breaker or queue name), and a readable ``detail``."""

    kind: str
    points: float
    detail: str
    subject: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "points": self.points, "detail": self.detail, "subject": self.subject}
