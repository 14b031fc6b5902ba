"""Health inputs and the report: the formula of :mod:`.health_policy` applied per actor, queue and overall."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..backends.health import ProcessSeen
from .health_policy import HEALTHY, HealthPolicy, Penalty

__all__ = ["BreakerView", "HealthInputs", "HealthReport", "QueueDepth", "ScopeScore", "score"]

#: Breaker states that cost points, and which weight.
_COSTS = {"open": "open_breaker", "forced_open": "open_breaker", "half_open": "half_open_breaker"}


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


def _tally(counts: Iterable[dict[str, int]]) -> tuple[int, int, int]:
    attempts = failures = dead = 0
    for kinds in counts:
        failures += kinds.get("failure", 0)
        attempts += kinds.get("success", 0) + kinds.get("failure", 0) + kinds.get("expected", 0)
        dead += kinds.get("dead_lettered", 0)
    return attempts, failures, dead


def _failure_rate(
    policy: HealthPolicy, attempts: int, failures: int, where: str = "", subject: str = ""
) -> list[Penalty]:
    rate = failures / attempts if attempts else 0.0
    if attempts < policy.min_attempts or rate <= policy.failure_rate_threshold:
        return []
    points = min(policy.failure_rate_max, rate * policy.failure_rate_points)
    detail = f"failure rate {rate:.0%}{where} ({failures} of {attempts} attempts)"
    return [Penalty("failure_rate", float(round(points, 1)), detail, subject)]


def _common(
    policy: HealthPolicy,
    breakers: Iterable[BreakerView],
    attempts: int,
    failures: int,
    dead: int,
    *,
    rates: list[Penalty] | None = None,
) -> list[Penalty]:
    penalties = []
    for breaker in breakers:
        weight = _COSTS.get(breaker.state)
        if weight is not None:
            state = breaker.state.replace("_", "-")
            kind = "breaker_half_open" if breaker.state == "half_open" else "breaker_open"
            points = float(getattr(policy, weight))
            penalties.append(Penalty(kind, points, f"breaker {breaker.name!r} {state}", breaker.name))
    penalties += _failure_rate(policy, attempts, failures) if rates is None else rates
    if dead:
        points = min(policy.dead_letters_max, dead * policy.dead_letter_points)
        penalties.append(Penalty("dead_letters", float(round(points, 1)), f"{dead} new dead letter(s)"))
    return penalties


def _depth_penalty(policy: HealthPolicy, queue_name: str, depth: QueueDepth | None) -> list[Penalty]:
    threshold = policy.threshold(queue_name)
    if depth is None or depth.ready <= threshold:
        return []
    points = min(policy.queue_depth_max, (depth.ready - threshold) / policy.queue_depth_divisor)
    detail = f"queue {queue_name!r} holds {depth.ready} ready messages (threshold {threshold})"
    return [Penalty("queue_depth", float(round(points, 1)), detail, queue_name)]


def _scope(
    policy: HealthPolicy,
    penalties: list[Penalty],
    tally: tuple[int, int, int],
    *,
    scope: str,
    name: str = "",
    queue: str = "",
    actor: str = "",
) -> ScopeScore:
    value = round(max(0.0, 100.0 - sum(p.points for p in penalties)), 1)
    attempts, failures, dead = tally
    status = policy.band(value)
    return ScopeScore(scope, name, queue, actor, value, status, penalties, attempts, failures, dead)


def score(inputs: HealthInputs, policy: HealthPolicy) -> HealthReport:
    """Apply ``policy`` to ``inputs``: the scores of every actor, every queue, and overall."""
    actors = dict(inputs.actors)
    for queue_name, actor_name in inputs.counts:
        actors.setdefault(actor_name, queue_name)
    queues = sorted({*actors.values(), *inputs.depths})
    by_actor: dict[str, list[BreakerView]] = {}
    for breaker in inputs.breakers:
        for actor_name in breaker.actors:
            by_actor.setdefault(actor_name, []).append(breaker)

    actor_scores = {}
    for actor_name, queue_name in sorted(actors.items()):
        tally = _tally(kinds for (_, a), kinds in inputs.counts.items() if a == actor_name)
        penalties = _common(policy, by_actor.get(actor_name, []), *tally)
        actor_scores[actor_name] = _scope(
            policy, penalties, tally, scope="actor", name=actor_name, queue=queue_name, actor=actor_name
        )

    queue_scores = {}
    for queue_name in queues:
        members = {a for a, q in actors.items() if q == queue_name}
        breakers = {b.name: b for a in sorted(members) for b in by_actor.get(a, [])}
        tally = _tally(kinds for (q, _), kinds in inputs.counts.items() if q == queue_name)
        penalties = _common(policy, breakers.values(), *tally)
        penalties += _depth_penalty(policy, queue_name, inputs.depths.get(queue_name))
        queue_scores[queue_name] = _scope(
            policy, penalties, tally, scope="queue", name=queue_name, queue=queue_name
        )

    attempts, failures, dead = _tally(inputs.counts.values())
    if inputs.dead_letters is not None:  # the store knows every dead letter, imported ones too
        dead = int(inputs.dead_letters.get("recent", dead))
    # Overall, the worst queue's failure rate counts: a busy healthy queue must not hide a failing one.
    worst = max(
        (
            _failure_rate(policy, q.attempts, q.failures, f" on queue {q.name!r}", q.name)
            for q in queue_scores.values()
        ),
        key=lambda found: found[0].points if found else 0.0,
        default=[],
    )
    penalties = _common(policy, inputs.breakers, attempts, failures, dead, rates=worst)
    for queue_name in queues:
        penalties += _depth_penalty(policy, queue_name, inputs.depths.get(queue_name))
    if inputs.processes and inputs.alive == 0:
        penalties.append(Penalty("no_workers", float(policy.no_workers), "no worker process is alive"))
    if not inputs.backend_ok:
        penalties.append(
            Penalty(
                "backend_unavailable", float(policy.backend_unavailable), "the state backend cannot be read"
            )
        )
    overall = _scope(policy, penalties, (attempts, failures, dead), scope="overall")
    return HealthReport(overall, queue_scores, actor_scores, inputs, policy)
