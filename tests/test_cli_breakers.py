"""``dramatiq-resilience breakers``: list, history, open, close, reset, forget."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dramatiq_resilience as dr
from dramatiq_resilience.cli import main
from dramatiq_resilience.cli.breakers import format_duration
from dramatiq_resilience.testing.redis_server import free_port

COMMAND = str(Path(sys.executable).parent / "dramatiq-resilience")


@pytest.fixture
def backend(redis_url: str, namespace: str) -> Iterator[dr.RedisBackend]:
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    yield backend
    backend.close()


def run(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str, *args: str
) -> tuple[int, str, str]:
    code = main(["breakers", *args, "--redis", redis_url, "--namespace", namespace])
    out, err = capsys.readouterr()
    return code, out, err


def used(backend: dr.RedisBackend, name: str, *, failures: int, calls: int, actors: list[str]) -> None:
    """What a worker does: register the breaker and record outcomes."""
    settings = dr.BreakerSettings()
    backend.breaker_register(name, {"settings": settings.to_dict(), "actors": actors})
    backend.breaker_record(name, settings=settings, epoch=0, calls=calls, failures=failures)


def test_list_says_when_there_is_nothing(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str
) -> None:
    """With no breaker registered, list says so and exits 0."""
    code, out, _ = run(capsys, redis_url, namespace, "list")
    assert code == 0
    assert (
        out
        == f"No breakers in namespace {namespace!r} yet (workers register them when they first use them).\n"
    )


def test_list_shows_state_counts_rate_and_time_to_half_open(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str, backend: dr.RedisBackend
) -> None:
    """A table: state, calls, failures, rate, streak, cooldown, time to half-open, actors."""
    used(backend, "payments-gateway", failures=5, calls=5, actors=["charge", "refund"])
    used(backend, "webhooks", failures=1, calls=4, actors=["deliver_webhook"])
    code, out, _ = run(capsys, redis_url, namespace, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATE",
        "CALLS",
        "FAILURES",
        "RATE",
        "STREAK",
        "COOLDOWN",
        "HALF-OPEN",
        "IN",
        "ACTORS",
    ]
    assert re.fullmatch(
        r"payments-gateway +open +0 +0 +- +0 +30\.0 s +(29\.\d|30\.0) s +charge,refund", lines[1]
    )
    assert re.fullmatch(r"webhooks +closed +4 +1 +25% +1 +30\.0 s +- +deliver_webhook", lines[2])
    assert len(lines) == 3


def test_list_json(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str, backend: dr.RedisBackend
) -> None:
    """--json gives every status field, with the failure rate and registered settings."""
    used(backend, "webhooks", failures=1, calls=4, actors=["deliver_webhook"])
    code, out, _ = run(capsys, redis_url, namespace, "list", "--json")
    assert code == 0
    [status] = json.loads(out)
    assert {
        k: status[k] for k in ("name", "state", "calls", "failures", "failure_rate", "consecutive", "actors")
    } == {
        "name": "webhooks",
        "state": "closed",
        "calls": 4,
        "failures": 1,
        "failure_rate": 0.25,
        "consecutive": 1,
        "actors": ["deliver_webhook"],
    }
    assert status["settings"]["cooldown"] == 30_000


def test_open_close_reset_and_history(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str, backend: dr.RedisBackend
) -> None:
    """open, close and reset force the state; history lists the transitions, newest first."""
    used(backend, "gw", failures=0, calls=1, actors=["charge"])
    assert run(capsys, redis_url, namespace, "open", "gw")[:2] == (
        0,
        "Breaker 'gw': closed -> forced_open.\n",
    )
    assert backend.breaker_status("gw", settings=dr.BreakerSettings()).state == "forced_open"
    assert run(capsys, redis_url, namespace, "close", "gw")[:2] == (
        0,
        "Breaker 'gw': forced_open -> forced_closed.\n",
    )
    assert run(capsys, redis_url, namespace, "reset", "gw")[:2] == (
        0,
        "Breaker 'gw': forced_closed -> closed.\n",
    )
    code, out, _ = run(capsys, redis_url, namespace, "history", "gw")
    assert code == 0
    assert [line.split("  ", 1)[1] for line in out.splitlines()] == [
        "forced_closed -> closed  (reset)",
        "forced_open -> forced_closed  (forced_closed)",
        "closed -> forced_open  (forced_open)",
    ]
    code, out, _ = run(capsys, redis_url, namespace, "history", "gw", "--json", "--limit", "1")
    assert [t["reason"] for t in json.loads(out)] == ["reset"]


def test_unknown_names_are_refused_unless_created(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str, backend: dr.RedisBackend
) -> None:
    """Acting on an unknown name exits 1 naming the known ones; --create acts anyway."""
    used(backend, "gw", failures=0, calls=1, actors=["charge"])
    code, out, err = run(capsys, redis_url, namespace, "open", "gq")
    assert (code, out) == (1, "")
    assert "No breaker named 'gq'" in err
    assert "(known: gw)" in err
    assert run(capsys, redis_url, namespace, "open", "gq", "--create")[0] == 0
    assert backend.breaker_names()["gq"] == {"settings": {}, "actors": []}
    assert backend.breaker_status("gq", settings=dr.BreakerSettings()).state == "forced_open"


def test_forget(
    capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str, backend: dr.RedisBackend
) -> None:
    """forget deletes the breaker's state and its registry entry."""
    used(backend, "gw", failures=5, calls=5, actors=["charge"])
    assert run(capsys, redis_url, namespace, "forget", "gw")[:2] == (0, "Breaker 'gw' forgotten.\n")
    assert backend.breaker_names() == {}
    assert backend.breaker_status("gw", settings=dr.BreakerSettings()).exists is False


def test_an_unreachable_backend_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """When Redis cannot be reached the command says so and exits 1."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    code = main(["breakers", "list", "--redis", url])
    assert code == 1
    assert f"Cannot reach the state backend at {url}" in capsys.readouterr().err


def test_a_missing_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`breakers` without an action exits 2."""
    with pytest.raises(SystemExit) as info:
        main(["breakers"])
    assert info.value.code == 2


def test_the_console_script(redis_url: str, namespace: str, backend: dr.RedisBackend) -> None:
    """The installed command lists breakers, as an operator runs it."""
    used(backend, "gw", failures=0, calls=2, actors=["charge"])
    result = subprocess.run(
        [COMMAND, "breakers", "list", "--json"],
        env={"DRAMATIQ_RESILIENCE_REDIS_URL": redis_url, "DRAMATIQ_RESILIENCE_NAMESPACE": namespace},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [(s["name"], s["calls"]) for s in json.loads(result.stdout)] == [("gw", 2)]


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0 ms"), (850, "850 ms"), (12_500, "12.5 s"), (240_000, "4 min"), (250_000, "4 min 10 s")],
)
def test_format_duration(ms: int, text: str) -> None:
    """Durations read naturally."""
    assert format_duration(ms) == text
