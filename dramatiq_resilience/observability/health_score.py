"""The formula of :mod:`.health_policy` applied to the inputs: per actor, per queue and overall."""

from __future__ import annotations

from collections.abc import Iterable

from .health_policy import HealthPolicy, Penalty
from .health_report import BreakerView, HealthInputs, HealthReport, QueueDepth, ScopeScore

__all__ = ["score"]

#: Breaker states that cost points, and which weight.
_COSTS = {"open": "open_breaker", "forced_open": "open_breaker", "half_open": "half_open_breaker"}


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
