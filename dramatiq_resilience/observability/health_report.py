"""Health inputs and the report (:func:`.health_score.score` fills it, per actor, queue and overall)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..backends.health import ProcessSeen
from .health_policy import HEALTHY, HealthPolicy, Penalty

__all__ = ["BreakerView", "HealthInputs", "HealthReport", "QueueDepth", "ScopeScore"]


@dataclass(frozen=True)
class BreakerView:
    """A breaker as health sees it; ``state`` is effective (open past its cooldown counts as half-open)."""

    name: str
    state: str
    stored_state: str
    actors: tuple[str, ...] = ()
    retry_after_ms: int = 0


@dataclass(frozen=True)
class QueueDepth:
    """Messages in the broker for one queue: ready, delayed (``.DQ``) and dead (``.XQ``)."""

    ready: int = 0
    delayed: int = 0
    dead: int = 0


@dataclass
class HealthInputs:
    """Everything the formula reads, cluster-wide (see :mod:`.health_inputs`)."""

    now_ms: int
    window_ms: int
    breakers: list[BreakerView] = field(default_factory=list)
    counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    actors: dict[str, str] = field(default_factory=dict)  # actor -> queue
    depths: dict[str, QueueDepth] = field(default_factory=dict)
    depth_source: str = "none"
    dead_letters: dict[str, int] | None = None  # the store's dead / claimed / requeued / recent
    processes: tuple[ProcessSeen, ...] = ()
    alive: int = 0
    errors: list[str] = field(default_factory=list)
    backend_ok: bool = True


@dataclass
class ScopeScore:
    """The score of one scope (``overall``, ``queue`` or ``actor``) and how it was reached."""

    scope: str
    name: str
    queue_name: str
    actor_name: str
    score: float
    status: str
    penalties: list[Penalty]
    attempts: int = 0
    failures: int = 0
    dead_letters: int = 0

    @property
    def failure_rate(self) -> float | None:
        return None if self.attempts == 0 else self.failures / self.attempts

    def to_dict(self) -> dict[str, Any]:
        rate = self.failure_rate
        return {
            "score": self.score,
            "status": self.status,
            "queue_name": self.queue_name,
            "actor_name": self.actor_name,
            "attempts": self.attempts,
            "failures": self.failures,
            "failure_rate": None if rate is None else round(rate, 4),
            "dead_letters": self.dead_letters,
            "penalties": [penalty.to_dict() for penalty in self.penalties],
        }


@dataclass
class HealthReport:
    """The scores of every scope, with the inputs' summary; ``to_dict()`` is the ``/health`` body."""

    overall: ScopeScore
    queues: dict[str, ScopeScore]
    actors: dict[str, ScopeScore]
    inputs: HealthInputs
    policy: HealthPolicy

    @property
    def score(self) -> float:
        return self.overall.score

    @property
    def status(self) -> str:
        return self.overall.status

    @property
    def http_status(self) -> int:
        """200 when healthy, 503 otherwise."""
        return 200 if self.status == HEALTHY else 503

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 degraded, 2 unhealthy."""
        return {"healthy": 0, "degraded": 1}.get(self.status, 2)

    def scores(self) -> list[ScopeScore]:
        return [self.overall, *self.queues.values(), *self.actors.values()]

    def to_dict(self) -> dict[str, Any]:
        inputs = self.inputs
        return {
            "status": self.status,
            "score": self.score,
            "evaluated_at": inputs.now_ms,
            "window_ms": inputs.window_ms,
            "overall": self.overall.to_dict(),
            "queues": {name: item.to_dict() for name, item in sorted(self.queues.items())},
            "actors": {name: item.to_dict() for name, item in sorted(self.actors.items())},
            "breakers": {
                b.name: {
                    "state": b.state,
                    "stored_state": b.stored_state,
                    "actors": list(b.actors),
                    "retry_after_ms": b.retry_after_ms,
                }
                for b in inputs.breakers
            },
            "queue_depths": {name: vars(depth).copy() for name, depth in sorted(inputs.depths.items())},
            "queue_depth_source": inputs.depth_source,
            "dead_letters": inputs.dead_letters,
            "workers": {"alive": inputs.alive, "known": len(inputs.processes)},
            "errors": list(inputs.errors),
            "policy": self.policy.to_dict(),
        }
