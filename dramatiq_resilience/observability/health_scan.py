"""The ``health`` recovery scan: evaluate, publish the report (queue depths included), announce changes."""

from __future__ import annotations

from typing import Any

from dramatiq.broker import Broker

from ..scheduling.scans import ScanContext, register_scan

__all__ = ["DEFAULT_SCAN_EVERY", "register_health_scan", "scan_interval"]

#: Milliseconds between two runs of the ``health`` scan (``Scheduling(scan_every={"health": ms})``).
DEFAULT_SCAN_EVERY = 15_000


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


def scan_interval(broker: Broker | None) -> int:
    """The ``health`` scan's interval in milliseconds on ``broker`` (``Scheduling(scan_every=...)``)."""
    from ..scheduling.scans import _scheduling

    settings = _scheduling(broker) if broker is not None else None
    return int(getattr(settings, "scan_every", {}).get("health", DEFAULT_SCAN_EVERY))


def register_health_scan() -> None:
    """Register the ``health`` scan (it runs where a ``HealthScorer`` is on the broker)."""
    register_scan(
        "health",
        _health,
        every=DEFAULT_SCAN_EVERY,
        applies=_has_scorer,
        description="score health, publish it (with queue depths) and announce status changes",
    )


register_health_scan()
