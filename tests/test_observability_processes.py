"""Metrics with real ``dramatiq --processes 2`` workers: exact counts, served by the fork and by ``serve``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.testing import DramatiqProcess
from dramatiq_resilience.testing.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and wanted <= found)


def outcomes(samples: Samples) -> dict[str, float]:
    names = ("success", "retried", "failed", "rejected", "deferred", "skipped")
    return {o: total(samples, "dramatiq_resilience_messages_total", outcome=o) for o in names}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def reachable(url: str) -> bool:
    try:
        scrape(url)
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_two_processes_count_exactly(
    dramatiq_processes: Callable[..., DramatiqProcess], redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """/metrics of 2 dramatiq processes equals the true counts (retries once), from the fork and serve."""
    port = free_port()
    env = {
        "TEST_REDIS_URL": redis_url,
        "TEST_NAMESPACE": namespace,
        "TEST_METRICS_PORT": str(port),
        "DRAMATIQ_RESILIENCE_METRICS_DIR": str(tmp_path / "metrics"),
    }
    workers = dramatiq_processes("tests.apps.observability", processes=2, threads=4, env=env)
    fork = f"http://127.0.0.1:{port}"
    wait_for(lambda: reachable(fork), 30, "the fork's endpoint")
    broker = RedisBroker(url=redis_url, namespace=f"{namespace}-broker")

    def send(actor: str, n: int, **options: object) -> None:
        broker.enqueue(Message(queue_name="default", actor_name=actor, args=(n,), kwargs={}, options=options))

    for n in range(20):
        send("ok", n)
    for n in range(10):
        send("flaky", n)
        send("warming_up", n)
    for n in range(5):
        send("doomed", n)
        send("declined", n)
        send("dup", n)
        send("ok", 100 + n, max_age=1)  # expired: rejected by AgeLimit
    wait_for(
        lambda: total(scrape(fork), "dramatiq_resilience_messages_total", actor_name="dup") == 5, 60, "dups"
    )
    for n in range(5):
        send("dup", n)  # completed keys: skipped
    expected = {"success": 45, "retried": 20, "failed": 10, "rejected": 5, "deferred": 10, "skipped": 5}
    wait_for(lambda: outcomes(scrape(fork)) == expected, 60, f"the counts {expected}")
    time.sleep(1.0)  # nothing more may arrive
    samples = scrape(fork)
    assert outcomes(samples) == expected
    assert total(samples, "dramatiq_resilience_messages_total", actor_name="doomed", outcome="retried") == 10
    assert total(samples, "dramatiq_resilience_messages_deferred_total", reason="warming_up") == 10
    assert total(samples, "dramatiq_resilience_message_duration_seconds_count") == 75
    assert total(samples, "dramatiq_resilience_messages_in_progress") == 0
    assert total(samples, "dramatiq_resilience_dedup_hits_total", kind="completed") == 5
    captured = {
        c: total(samples, "dramatiq_resilience_dead_letters_captured_total", category=c)
        for c in ("transient", "permanent", "expired")
    }
    assert captured == {"transient": 5, "permanent": 5, "expired": 5}
    # Queue names are canonical: no series under default.DQ (Dramatiq's own middleware has them).
    assert not [labels for (_, labels) in samples if ("queue_name", "default.DQ") in labels]
    # Cluster gauges come from the backend (flushed every 500 ms, cached by the endpoint for 1 s).
    wait_for(lambda: total(scrape(fork), "dramatiq_resilience_workers_alive") == 2, 10, "2 live workers")
    cluster = scrape(fork)
    assert total(cluster, "dramatiq_resilience_dead_letters", status="dead") == 15
    depth = {
        k: total(cluster, "dramatiq_resilience_queue_depth", queue_name="default", kind=k)
        for k in ("ready", "dead")
    }
    assert depth == {"ready": 0, "dead": 15}  # the broker keeps its own dead letters in default.XQ
    assert (
        total(cluster, "dramatiq_resilience_health_failure_rate", scope="actor", actor_name="doomed") == 1.0
    )

    # Both processes counted: each wrote its own files into the run's directory.
    [run] = [p for p in (tmp_path / "metrics").iterdir()]
    assert run.name.startswith(f"run-{workers.pid}-")
    assert len({p.name.rsplit("-", 1)[1] for p in run.glob("counter_*.db")}) == 2

    serve_port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "dramatiq_resilience.cli", "serve", "--pid", str(workers.pid),
         "--port", str(serve_port), "--redis", redis_url, "--namespace", namespace],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        served = f"http://127.0.0.1:{serve_port}"
        wait_for(lambda: reachable(served), 20, "dramatiq-resilience serve")
        other = scrape(served)
        assert outcomes(other) == expected
        assert total(other, "dramatiq_resilience_message_duration_seconds_count") == 75
    finally:
        serve.terminate()
        serve.wait(10)

    workers.stop()
    broker.close()
    assert not list(run.glob("gauge_live*")), "live gauges are removed when a worker exits"
    assert dr.DeadLetterStore(dr.RedisBackend(url=redis_url, namespace=namespace)).stats().dead == 15
