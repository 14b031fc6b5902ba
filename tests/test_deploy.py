"""The shipped alerts and dashboard parse, and reference only metrics the code exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import dramatiq_resilience as dr
from dramatiq_resilience.observability.collectors import ClusterCollector
from dramatiq_resilience.observability.health_report import BreakerView, HealthInputs, QueueDepth
from dramatiq_resilience.observability.health_score import score
from dramatiq_resilience.observability.metrics import METRICS
from dramatiq_resilience.observability.sinks import MemorySink

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NAME = re.compile(r"\bdramatiq_resilience_[a-z_]+\b")


class _Scorer:
    """Stands in for a HealthScorer: a report with one of everything."""

    def report(self, broker: Any) -> Any:
        inputs = HealthInputs(
            now_ms=0,
            window_ms=300_000,
            breakers=[BreakerView("gw", "open", "open", ("charge",))],
            counts={("payments", "charge"): {"success": 3, "failure": 1}},
            depths={"payments": QueueDepth(1, 2, 3)},
            dead_letters={"dead": 1, "claimed": 0, "requeued": 0, "recent": 1},
            alive=1,
        )
        return score(inputs, dr.HealthPolicy())


def exposed_names() -> set[str]:
    """Every sample name the code exposes: each worker metric once, and the cluster gauges."""
    sink = MemorySink()
    for spec in METRICS:
        if spec.source != "worker":
            continue
        labels = ["x"] * len(spec.labels)
        if spec.kind == "histogram":
            sink.observe(spec, labels, 1.0)
        elif spec.kind == "counter" or spec.mode == "livesum":
            sink.inc(spec, labels)
        else:
            sink.set(spec, labels, 1.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(sink.registry)
    registry.register(ClusterCollector(_Scorer()))
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_declared_metric_is_exposed() -> None:
    """The metric table and what the code exposes agree."""
    names = exposed_names()
    for spec in METRICS:
        assert any(name == spec.name or name.startswith(spec.name + "_") for name in names), spec.name


def test_alert_rules_parse_and_use_existing_metrics() -> None:
    """Each rule has a name, an expression, a severity and a summary; its metrics exist."""
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())["groups"][0]["rules"]
    names = exposed_names()
    alerts = {rule["alert"] for rule in rules}
    assert alerts == {
        "DramatiqFailureRateHigh",
        "DramatiqDeadLettersGrowing",
        "DramatiqDeadLetterCaptureFailing",
        "DramatiqBreakerOpen",
        "DramatiqHealthLow",
        "DramatiqQueueBacklog",
        "DramatiqMessagesStalled",
        "DramatiqNoLiveWorkers",
        "DramatiqStateBackendErrors",
    }
    for rule in rules:
        expr = rule["expr"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert expr.count("(") == expr.count(")"), rule["alert"]
        used = set(NAME.findall(expr))
        assert used and used <= names, (rule["alert"], used - names)


def test_dashboard_parses_and_uses_existing_metrics() -> None:
    """Every panel's queries reference exposed metrics; panels do not overlap."""
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    names = exposed_names()
    used: set[str] = set()
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found = set(NAME.findall(target["expr"]))
            assert found and found <= names, (panel["title"], found - names)
            used |= found
        pos = panel["gridPos"]
        area = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area
    assert len(used) >= 20
