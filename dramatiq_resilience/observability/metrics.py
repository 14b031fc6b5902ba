"""Every Prometheus metric of dramatiq-resilience: name, type, labels, meaning.

Names are ``dramatiq_resilience_<thing>_<unit or total>``; queue names are
canonical (no ``.DQ``/``.XQ`` suffix).  Two sources fill them:

* **worker metrics** (``source="worker"``): counted by each process that
  makes the decision (the :class:`~dramatiq_resilience.observability.metrics_middleware.Metrics`
  middleware and its event listeners) and added up across processes;
* **cluster metrics** (``source="cluster"``): read from the state backend and
  the broker when ``/metrics`` is scraped (breaker states, queue depths, the
  dead-letter store, health scores), the same on every host.

This module only describes them (no prometheus_client import): the README
table, the shipped alerts and dashboard, and the tests read :data:`METRICS`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DURATION_BUCKETS",
    "METRICS",
    "OUTCOMES",
    "PREFIX",
    "MetricSpec",
    "metric",
    "sample_names",
]

#: The prefix of every metric name.
PREFIX = "dramatiq_resilience_"

#: Outcomes of a delivery (``dramatiq_resilience_messages_total{outcome}``), exactly one per delivery.
OUTCOMES = ("success", "retried", "failed", "rejected", "deferred", "skipped")

#: Upper bounds (seconds) of the processing-duration histogram.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

#: Upper bounds (seconds) of the scan-duration histogram.
SCAN_BUCKETS = (0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    Attributes:
      name: the family name (counters without ``_total``: it is added to the sample).
      kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
      help: what it means.
      labels: label names, in order.
      source: ``"worker"`` or ``"cluster"`` (see the module docstring).
      mode: for worker gauges, how processes combine (prometheus_client's
        multiprocess modes: ``"livesum"``, ``"mostrecent"``).
      buckets: histogram upper bounds.
    """

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    source: str = "worker"
    mode: str = ""
    buckets: tuple[float, ...] = ()


QA = ("queue_name", "actor_name")

METRICS: tuple[MetricSpec, ...] = (
    # -- messages ------------------------------------------------------------------
    MetricSpec(
        PREFIX + "messages",
        "counter",
        "Deliveries by outcome: success, retried (failed, retry enqueued), failed (failed for good), "
        "rejected (dead-lettered without running), deferred, skipped (duplicate or other skip).",
        (*QA, "outcome"),
    ),
    MetricSpec(
        PREFIX + "message_duration_seconds",
        "histogram",
        "Time from the first middleware to the last after-hook of deliveries that ran (or failed in a hook).",
        QA,
        buckets=DURATION_BUCKETS,
    ),
    MetricSpec(
        PREFIX + "messages_in_progress",
        "gauge",
        "Deliveries being processed now.",
        QA,
        mode="livesum",
    ),
    MetricSpec(PREFIX + "messages_deferred", "counter", "Deferrals by reason.", (*QA, "reason")),
    MetricSpec(
        PREFIX + "messages_rejected",
        "counter",
        "Messages dead-lettered without running, by reason (circuit_open, too_many_deferrals...).",
        (*QA, "reason"),
    ),
    MetricSpec(
        PREFIX + "deferrals_failed",
        "counter",
        "Deferred copies that could not be enqueued (the message went to the retry path).",
        (*QA, "reason"),
    ),
    # -- breakers ------------------------------------------------------------------
    MetricSpec(
        PREFIX + "breaker_transitions",
        "counter",
        "Breaker transitions, counted by the process that made them.",
        ("breaker", "from_state", "to_state", "reason"),
    ),
    MetricSpec(
        PREFIX + "breaker_state",
        "gauge",
        "1 for the state each breaker is in, 0 for the others.",
        ("breaker", "state"),
        source="cluster",
    ),
    # -- limits and deduplication -----------------------------------------------------
    MetricSpec(
        PREFIX + "rate_limit_refusals",
        "counter",
        "Messages refused (and deferred) by a rate or concurrency limit, per limit.",
        (*QA, "limit", "kind"),
    ),
    MetricSpec(
        PREFIX + "rate_limit_disagreements",
        "counter",
        "Times this process found other processes defining one of its limits differently.",
        ("limit", "kind"),
    ),
    MetricSpec(
        PREFIX + "dedup_hits",
        "counter",
        "Duplicates caught: completed (skipped), in_progress (deferred), conflict (other arguments), "
        "refused (unique enqueue).",
        (*QA, "kind"),
    ),
    # -- dead letters ----------------------------------------------------------------
    MetricSpec(
        PREFIX + "dead_letters_captured",
        "counter",
        "Final failures recorded in the dead-letter store, by category.",
        (*QA, "category"),
    ),
    MetricSpec(
        PREFIX + "dead_letter_capture_failures",
        "counter",
        "Final failures the store could not record (they wait in the broker's dead-letter queue).",
        (*QA, "reason"),
    ),
    MetricSpec(
        PREFIX + "dead_letters_requeued",
        "counter",
        "Dead letters requeued, by reason (manual, policy:NAME).",
        (*QA, "reason"),
    ),
    MetricSpec(
        PREFIX + "dead_letters_removed",
        "counter",
        "Dead letters removed by retention (age, count) or purge.",
        ("reason",),
    ),
    MetricSpec(
        PREFIX + "dead_letters_imported",
        "counter",
        "Messages imported from a broker's own dead-letter queue.",
        ("queue_name",),
    ),
    MetricSpec(
        PREFIX + "dead_letters",
        "gauge",
        "Records in the dead-letter store, by status (dead, claimed, requeued).",
        ("status",),
        source="cluster",
    ),
    # -- queues, health, workers --------------------------------------------------------
    MetricSpec(
        PREFIX + "queue_depth",
        "gauge",
        "Messages in the broker: ready (the queue), delayed (.DQ) and dead (.XQ).",
        ("queue_name", "kind"),
        source="cluster",
    ),
    MetricSpec(
        PREFIX + "health_score",
        "gauge",
        "Health score 0-100 (overall, per queue, per actor); >= 80 healthy, >= 50 degraded.",
        ("scope", *QA),
        source="cluster",
    ),
    MetricSpec(
        PREFIX + "health_failure_rate",
        "gauge",
        "Failed attempts / attempts in the health window, cluster-wide (throws failures: attempts only).",
        ("scope", *QA),
        source="cluster",
    ),
    MetricSpec(
        PREFIX + "workers_alive",
        "gauge",
        "Worker processes that reported within the liveness timeout.",
        source="cluster",
    ),
    # -- scheduler and scans -----------------------------------------------------------
    MetricSpec(
        PREFIX + "cron_runs",
        "counter",
        "Deliveries of cron runs by status (succeeded, retrying, deferred, failed, rejected, skipped).",
        ("job", "status"),
    ),
    MetricSpec(
        PREFIX + "cron_occurrences",
        "counter",
        "Cron occurrences by decision (fired, skipped_disabled, skipped_overlap, missed, send_failed).",
        ("job", "decision"),
    ),
    MetricSpec(
        PREFIX + "scans", "counter", "Recovery scan runs by status (completed, failed).", ("scan", "status")
    ),
    MetricSpec(
        PREFIX + "scan_duration_seconds",
        "histogram",
        "How long recovery scans ran.",
        ("scan",),
        buckets=SCAN_BUCKETS,
    ),
    MetricSpec(
        PREFIX + "scan_result",
        "gauge",
        "The counts the latest run of each scan returned.",
        ("scan", "count"),
        mode="mostrecent",
    ),
    MetricSpec(
        PREFIX + "messages_stalled",
        "counter",
        "Reports of messages running longer than stalled_after (one per stalled scan that saw them).",
        QA,
    ),
    MetricSpec(
        PREFIX + "dead_worker_messages_requeued",
        "counter",
        "Messages of dead RedisBroker workers put back on their queue.",
        ("queue_name",),
    ),
    # -- backend and backpressure --------------------------------------------------------
    MetricSpec(PREFIX + "backend_errors", "counter", "State backend errors, by component.", ("component",)),
    MetricSpec(
        PREFIX + "backend_outages",
        "counter",
        "State backend outages (a first error after a success), by component.",
        ("component",),
    ),
    MetricSpec(
        PREFIX + "backpressure_events",
        "counter",
        "Backpressure decisions: level changes (level_<level>), slowed sends (slowed_wait, "
        "slowed_delay), refused sends (refused_emergency, refused_breaker_open), depth_failed.",
        ("queue_name", "event"),
    ),
)

_BY_NAME = {spec.name: spec for spec in METRICS}


def metric(name: str) -> MetricSpec:
    """The spec of metric ``name`` (with or without the prefix)."""
    return _BY_NAME[name if name.startswith(PREFIX) else PREFIX + name]


def sample_names(spec: MetricSpec) -> tuple[str, ...]:
    """The sample names a metric produces in the Prometheus text format."""
    if spec.kind == "counter":
        return (spec.name + "_total",)
    if spec.kind == "histogram":
        return (spec.name + "_bucket", spec.name + "_sum", spec.name + "_count")
    return (spec.name,)
