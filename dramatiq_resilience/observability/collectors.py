"""What ``/metrics`` serves: worker metrics merged from run directories, cluster gauges read when scraped."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .metrics import metric

__all__ = ["BREAKER_STATES", "ClusterCollector", "DirectoryCollector", "exposition_registry"]

logger = logging.getLogger(__name__)

#: Every state the breaker-state gauge reports (1 for the current one).
BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "forced_closed")


class DirectoryCollector:
    """Worker metrics of every process that wrote into ``directories``, added up.

    Several directories (several ``dramatiq`` commands on one host) are merged
    into one family per metric, as one ``MultiProcessCollector`` does for one.
    ``directories`` may be a function, called at each scrape (runs come and go).
    """

    def __init__(self, directories: Sequence[str] | Callable[[], Sequence[str]]) -> None:
        self.directories = directories

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        for _ in range(3):  # a file may vanish mid-read (a worker exiting, a stale run removed)
            directories = self.directories() if callable(self.directories) else self.directories
            files = [path for d in directories for path in sorted(glob.glob(os.path.join(d, "*.db")))]
            try:
                return list(MultiProcessCollector.merge(files, accumulate=True))
            except FileNotFoundError:
                continue
        return []


class ClusterCollector:
    """Gauges read from the state backend and the broker when scraped (through a ``HealthScorer``).

    Breaker states, queue depths, the dead-letter store's size, health scores
    and failure rates, live workers: the same on every host.  The report is
    reused for the scorer's ``cache_ms``, so concurrent scrapes cost one reading.
    """

    def __init__(self, scorer: Any, broker: Any = None) -> None:
        self.scorer = scorer
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            report = self.scorer.report(self.broker)
        except Exception:
            logger.exception("Could not evaluate health for /metrics.")
            return

        def family(name: str) -> Any:
            spec = metric(name)
            return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)

        inputs = report.inputs
        breakers = family("breaker_state")
        for breaker in inputs.breakers:
            for state in BREAKER_STATES:
                breakers.add_metric([breaker.name, state], 1.0 if breaker.state == state else 0.0)
        yield breakers
        depths = family("queue_depth")
        for queue_name, depth in sorted(inputs.depths.items()):
            for kind in ("ready", "delayed", "dead"):
                depths.add_metric([queue_name, kind], float(getattr(depth, kind)))
        yield depths
        if inputs.dead_letters is not None:
            store = family("dead_letters")
            for status in ("dead", "claimed", "requeued"):
                store.add_metric([status], float(inputs.dead_letters.get(status, 0)))
            yield store
        scores, rates = family("health_score"), family("health_failure_rate")
        for item in report.scores():
            labels = [item.scope, item.queue_name, item.actor_name]
            scores.add_metric(labels, item.score)
            if item.failure_rate is not None:
                rates.add_metric(labels, round(item.failure_rate, 6))
        yield scores
        yield rates
        alive = family("workers_alive")
        alive.add_metric([], float(inputs.alive))
        yield alive


def exposition_registry(
    *,
    directories: Sequence[str] | Callable[[], Sequence[str]] = (),
    registries: Sequence[Any] = (),
    scorer: Any = None,
    broker: Any = None,
) -> Any:
    """A ``CollectorRegistry`` with the worker metrics of ``directories`` and of in-process
    ``registries``, and the cluster gauges of ``scorer`` (if given)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    if directories:
        registry.register(DirectoryCollector(directories))
    for other in registries:
        registry.register(other)
    if scorer is not None:
        registry.register(ClusterCollector(scorer, broker))
    return registry
