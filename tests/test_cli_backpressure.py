"""``dramatiq-resilience backpressure``: depths, levels and thresholds from the app or a broker URL."""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import dramatiq_resilience as dr
from dramatiq_resilience.cli import main
from dramatiq_resilience.testing import DramatiqProcess

APP = "tests.apps.backpressure"


@pytest.fixture
def app(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Import the test app afresh on the private Redis, in this test's namespace."""

    def load(cache_ms: int = 1_000) -> Any:
        monkeypatch.setenv("TEST_REDIS_URL", redis_url)
        monkeypatch.setenv("TEST_NAMESPACE", namespace)
        monkeypatch.setenv("TEST_CACHE_MS", str(cache_ms))
        monkeypatch.delitem(sys.modules, APP, raising=False)
        return importlib.import_module(APP)

    return load


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["backpressure", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_app_supplies_broker_and_thresholds(capsys: pytest.CaptureFixture[str], app: Any) -> None:
    """A table of every queue with depth, ready, delayed, level and thresholds; exit 1 at emergency."""
    backpressure = app()
    for n in range(5):
        backpressure.job.send_with_options(args=(n,), backpressure_exempt=True)
    backpressure.job.send_with_options(args=(9,), delay=60_000, backpressure_exempt=True)
    backpressure.email.send()
    code, out, err = run(capsys, "--app", APP)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "QUEUE   DEPTH  READY  DELAYED  LEVEL      WARNING  CRITICAL  EMERGENCY",
        "emails  1      1      0        normal     100      -         -",
        "work    6      5      1        emergency  2        4         6",
    ]
    code, out, _ = run(capsys, "--app", APP, "--queue", "emails", "--json")
    assert code == 0
    [status] = json.loads(out)
    assert {k: v for k, v in status.items() if k != "read_at_ms"} == {
        "queue_name": "emails",
        "depth": 1,
        "ready": 1,
        "delayed": 0,
        "level": "normal",
        "thresholds": {"warning": 100, "critical": None, "emergency": None},
        "error": None,
    }


def test_a_broker_url_shows_depths_without_levels(
    capsys: pytest.CaptureFixture[str], app: Any, redis_url: str, namespace: str
) -> None:
    """--broker-url alone finds queues holding messages and shows them unchecked; a bad URL is usage."""
    app().job.send_with_options(args=(1,), backpressure_exempt=True)
    url = ["--broker-url", redis_url, "--broker-namespace", f"{namespace}-broker"]
    code, out, err = run(capsys, *url)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "QUEUE  DEPTH  READY  DELAYED  LEVEL      WARNING  CRITICAL  EMERGENCY",
        "work   1      1      0        unchecked  -        -         -",
    ]
    code, out, err = run(capsys, "--broker-url", "http://nowhere")
    assert code == 2
    assert "--broker-url must be a redis:// or amqp:// URL" in err
    code, out, err = run(capsys)
    assert code == 2
    assert err.endswith("this command needs the broker: give --app MODULE or --broker-url URL\n")


@pytest.mark.parametrize(
    ("url", "name"), [("redis://127.0.0.1:1/0", "Redis"), ("amqp://guest:guest@127.0.0.1:1/", "RabbitMQ")]
)
def test_an_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str], url: str, name: str) -> None:
    """Depths that cannot be read are shown as unreadable, the error on stderr, exit 1."""
    code, out, err = run(capsys, "--broker-url", url, "--queue", "work")
    assert code == 1
    assert out.splitlines()[1] == "work   unreadable  -      -        unchecked  -        -         -"
    assert f"cannot read the depth of queue(s) work from {name}" in err


@pytest.mark.slow
def test_real_workers_drain_an_overloaded_queue_and_sends_pass_again(
    app: Any, redis_url: str, namespace: str
) -> None:
    """Real worker processes: past emergency a send is refused, a retry runs, drained a send passes."""
    backpressure = app(cache_ms=100)
    for n in range(6):
        backpressure.job.send_with_options(args=(n,), backpressure_exempt=True)
    time.sleep(0.15)
    with pytest.raises(dr.QueueOverloaded):
        backpressure.job.send(99)
    env = {"TEST_REDIS_URL": redis_url, "TEST_NAMESPACE": namespace, "TEST_CACHE_MS": "100"}
    workers = DramatiqProcess(APP, processes=2, threads=2, env=env, queues=("work",))
    client = backpressure.client
    try:
        workers.start(timeout=60)
        deadline = time.monotonic() + 60
        while sum(int(v) for v in client.hvals(f"{namespace}:runs")) < 7:
            assert time.monotonic() < deadline, workers.log()
            time.sleep(0.05)
        time.sleep(0.15)  # the producer's cached reading expires
        backpressure.job.send(7)
        while client.hget(f"{namespace}:runs", "7") is None:
            assert time.monotonic() < deadline, workers.log()
            time.sleep(0.05)
    finally:
        workers.close()
    runs = {k.decode(): int(v) for k, v in client.hgetall(f"{namespace}:runs").items()}
    assert runs == {"0": 2, "1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "7": 1}
