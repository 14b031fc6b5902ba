"""The ``health`` recovery scan: evaluate, publish the report (queue depths included), announce changes."""

from __future__ import annotations

from typing import Any

from dramatiq.broker import Broker

from ..scheduling.scans import ScanContext, register_scan

__all__ = ["register_health_scan"]


def _has_scorer(broker: Broker) -> bool:
    from .health import scorer_of

    return scorer_of(broker) is not None


def _health(context: ScanContext) -> dict[str, int]:
    from .health import scorer_of

    scorer: Any = scorer_of(context.broker)
    report = scorer.evaluate(context.broker)
    scorer.publish(report)
    return {
        "score": int(report.score),
        "queues_not_healthy": sum(1 for s in report.queues.values() if s.status != "healthy"),
        "breakers_not_closed": sum(
            1 for b in report.inputs.breakers if b.state not in ("closed", "forced_closed")
        ),
        "workers_alive": report.inputs.alive,
    }


def register_health_scan(every: int) -> None:
    """Register (or re-register with a new interval) the ``health`` scan."""
    register_scan(
        "health",
        _health,
        every=every,
        applies=_has_scorer,
        description="score health, publish it (with queue depths) and announce status changes",
    )
