"""The endpoint and the CLI: /health is 503 while a breaker is open, 200 once it closes; exit codes follow."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.cli import main
from dramatiq_resilience.observability.fork import endpoint_for


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def clock() -> dr.FakeClock:
    # Near real time: the CLI below reads the same Redis with the server's clock.
    return dr.FakeClock(start_ms=int(time.time() * 1000))


@pytest.fixture
def app(stub_broker: StubBroker, redis_backend: dr.RedisBackend) -> Iterator[Any]:
    stack = dr.install(
        stub_broker,
        backend=redis_backend,
        scheduling=False,
        breaker={"consecutive_failures": 3, "failure_rate": None, "cooldown": 60_000, "cache_ms": 0},
        health={"cache_ms": 0, "flush_ms": 100},
    )
    worker = Worker(stub_broker, worker_timeout=50)
    worker.start()
    server = endpoint_for(stub_broker, port=0).start()
    yield stack, server
    server.close()
    worker.stop()


def health_cli(
    redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    code = main(["health", "--redis", redis_url, "--namespace", namespace, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_health_follows_a_breaker(
    stub_broker: StubBroker,
    app: Any,
    clock: dr.FakeClock,
    redis_url: str,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """503 and exit 1 while the breaker is open (its penalty in the breakdown); 200 and exit 0 once closed."""
    stack, server = app
    up = {"ok": False}

    @dramatiq.actor(max_retries=0)
    def call() -> None:
        if not up["ok"]:
            raise ConnectionError("down")

    def process() -> None:
        stub_broker.join("default", fail_fast=False)
        time.sleep(0.05)  # the worker flushes its counts every 100 ms

    status, kind, body = get(f"{server.url}/health")
    assert (status, kind, json.loads(body)["status"]) == (200, "application/json", "healthy")
    assert health_cli(redis_url, namespace, capsys)[0] == 0

    for _ in range(3):
        call.send()
    process()
    stack.health.flush()
    assert stack.breaker.status("call").state == "open"
    status, _, body = get(f"{server.url}/health")
    report = json.loads(body)
    assert (status, report["status"], report["score"]) == (503, "degraded", 67.0)
    assert [(p["kind"], p["points"], p["detail"]) for p in report["overall"]["penalties"]] == [
        ("breaker_open", 30.0, "breaker 'call' open"),
        ("dead_letters", 3.0, "3 new dead letter(s)"),
    ]
    assert report["actors"]["call"]["penalties"][0]["subject"] == "call"
    assert report["breakers"]["call"]["state"] == "open"
    code, printed = health_cli(redis_url, namespace, capsys)
    assert (code, printed["status"], printed["score"]) == (1, "degraded", 67.0)

    up["ok"] = True
    clock.advance(60_000)  # the cooldown ends: the next message is the probe that closes it
    call.send()
    process()
    stack.health.flush()
    assert stack.breaker.status("call").state == "closed"
    status, _, body = get(f"{server.url}/health")
    assert (status, json.loads(body)["status"], json.loads(body)["score"]) == (200, "healthy", 97.0)
    code, printed = health_cli(redis_url, namespace, capsys)
    assert (code, printed["status"]) == (0, "healthy")

    dr.Breakers(dr.RedisBackend(url=redis_url, namespace=namespace)).force_open("call")
    assert get(f"{server.url}/health")[0] == 503
    assert main(["health", "--redis", redis_url, "--namespace", namespace]) == 1
    table = capsys.readouterr().out
    assert table.startswith("HEALTH degraded 67  (window 5 min, 1 of 1 worker processes alive")
    assert re.search(r"\nactor +call +degraded +67 +3/4 \(75%\) +3 +- +breaker 'call' forced-open -30", table)


def test_metrics_and_the_other_paths(stub_broker: StubBroker, app: Any) -> None:
    """/metrics answers Prometheus text (worker and cluster metrics); unknown paths 404; / lists the paths."""
    _, server = app

    @dramatiq.actor(max_retries=0)
    def ok() -> None:
        pass

    ok.send()
    stub_broker.join("default", fail_fast=False)
    time.sleep(0.05)
    status, kind, text = get(f"{server.url}/metrics")
    assert (status, kind.split(";")[0]) == (200, "text/plain")
    assert (
        'dramatiq_resilience_messages_total{actor_name="ok",outcome="success",queue_name="default"} 1.0'
        in text
    )
    assert 'dramatiq_resilience_health_score{actor_name="",queue_name="",scope="overall"} 100.0' in text
    assert 'dramatiq_resilience_queue_depth{kind="ready",queue_name="default"} 0.0' in text
    assert get(f"{server.url}/nope")[0] == 404
    assert "GET /metrics" in get(f"{server.url}/")[2]
    assert server.host == "127.0.0.1"


def test_health_without_backend_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable Redis: exit 2, the error named."""
    from dramatiq_resilience.testing.redis_server import free_port

    code = main(["health", "--redis", f"redis://127.0.0.1:{free_port()}/0"])
    out = capsys.readouterr().out
    assert code == 2
    assert out.startswith("HEALTH unhealthy 40")
    assert "could not read state backend: Redis is unavailable" in out


def test_health_watch_evaluates_until_interrupted(
    redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--watch prints a report per interval; interrupted, it exits with the last report's code."""
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", nap)
    code = main(["health", "--redis", redis_url, "--namespace", namespace, "--watch", "0.5"])
    assert (code, naps) == (0, [0.5, 0.5])
    assert capsys.readouterr().out.count("HEALTH healthy 100") == 2
