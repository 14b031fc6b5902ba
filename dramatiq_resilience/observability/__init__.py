"""Observability: Prometheus metrics, the health score, the HTTP endpoint, Sentry reporting.

* :mod:`.metrics`: every metric's name, type, labels and meaning.
* :mod:`.metrics_middleware`: ``Metrics``, counting outcomes and decisions per process.
* :mod:`.sinks`, :mod:`.runs`: in-process counts, or per-process files in a per-run directory.
* :mod:`.outcomes`: how a delivery ended (once per delivery).
* :mod:`.listeners`: resilience events turned into metrics.
* :mod:`.health_policy`, :mod:`.health_score`, :mod:`.health_report`, :mod:`.health_inputs`,
  :mod:`.health_scan`, :mod:`.health`: the formula's settings, the formula, the report, its
  inputs, the scan, and the ``HealthScorer`` middleware.
* :mod:`.collectors`, :mod:`.http`, :mod:`.fork`: what ``/metrics`` serves and the endpoint.
* :mod:`.sentry`, :mod:`.sentry_context`, :mod:`.sentry_events`: ``SentryReporter``, what it
  says of a failure, and what it sends.

Nothing here imports prometheus_client or sentry_sdk until it is used.
"""

from __future__ import annotations

from .collectors import exposition_registry
from .health import HealthScorer
from .health_policy import HealthPolicy
from .health_report import HealthReport, ScopeScore
from .http import ObservabilityServer
from .metrics import METRICS, MetricSpec
from .metrics_middleware import Metrics
from .sentry import SentryReporter

__all__ = [
    "METRICS",
    "HealthPolicy",
    "HealthReport",
    "HealthScorer",
    "MetricSpec",
    "Metrics",
    "ObservabilityServer",
    "ScopeScore",
    "SentryReporter",
    "exposition_registry",
]
