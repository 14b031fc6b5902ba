"""`dramatiq-resilience limits show`: current use and reset time per limit and key."""

from __future__ import annotations

import json

import pytest

import dramatiq_resilience as dr
from dramatiq_resilience.backends.window import LeaseSpec, RateSpec
from dramatiq_resilience.cli import main
from dramatiq_resilience.testing.redis_server import free_port


@pytest.fixture
def state(redis_url: str, namespace: str) -> dr.RedisBackend:
    """Two tenants' webhook windows (acme full) and one concurrency pool, on server time."""
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    hook = "deliver_webhook.rate_limits[0]"
    for n in range(3):
        backend.window_acquire(f"a{n}", [RateSpec(hook, "acme", 2, 60_000)])
    backend.window_acquire("g", [RateSpec(hook, "globex", 2, 60_000)])
    backend.window_acquire("db", [], [LeaseSpec("db", "", 2, 30_000)])
    return backend


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["limits", "show", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_show_prints_every_limit_key_in_a_table(
    state: dr.RedisBackend, redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One row per limit and key: used/capacity, window, next slot, all free, waiters."""
    code, out, _ = run(capsys, "--redis", redis_url, "--namespace", namespace)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "LIMIT",
        "KIND",
        "KEY",
        "USED",
        "WINDOW",
        "NEXT",
        "SLOT",
        "ALL",
        "FREE",
        "WAITERS",
        "UNTIL",
    ]
    rows = [line.split() for line in lines[1:]]
    assert [row[:5] for row in rows] == [
        ["db", "concurrency", "(all)", "1/2", "lease"],
        ["deliver_webhook.rate_limits[0]", "rate", "acme", "2/2", "60000"],
        ["deliver_webhook.rate_limits[0]", "rate", "globex", "1/2", "60000"],
    ]
    acme = lines[2].split()
    # Next slot and all free: when the bucket of the first start leaves, about a minute away.
    assert (acme[6], acme[9], acme[12]) == ("in", "in", "in")
    assert 59 < float(acme[7]) <= 60.6 and float(acme[10]) == float(acme[7])
    assert float(acme[13]) == pytest.approx(float(acme[7]) + 30, abs=0.02)  # a waiter queued 30 s on
    assert lines[3].split()[6] == "free"


def test_show_filters_by_name_and_key_and_prints_json(
    state: dr.RedisBackend, redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """NAME and --key narrow the rows; --json gives every field with times in ms."""
    code, out, _ = run(
        capsys, "deliver_webhook.rate_limits[0]", "--key", "acme", "--json", "--redis", redis_url,
        "--namespace", namespace,
    )  # fmt: skip
    assert code == 0
    [row] = json.loads(out)
    assert {k: row[k] for k in ("kind", "limit", "key", "used", "capacity", "window_ms")} == {
        "kind": "rate",
        "limit": "deliver_webhook.rate_limits[0]",
        "key": "acme",
        "used": 2,
        "capacity": 2,
        "window_ms": 60_000,
    }
    assert row["next_free_ms"] - row["now_ms"] > 59_000
    assert row["waiting_until_ms"] == row["next_free_ms"] + 30_000


def test_show_exits_1_when_the_named_limit_has_no_state(
    state: dr.RedisBackend, redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name or key with nothing in use says so and exits 1; nothing at all exits 0."""
    code, out, _ = run(capsys, "stripe-api", "--key", "acme", "--redis", redis_url, "--namespace", namespace)
    assert (code, out) == (1, "Nothing in use for limit 'stripe-api' and key 'acme'.\n")
    code, out, _ = run(capsys, "--redis", redis_url, "--namespace", "empty")
    assert (code, out) == (0, "No limit is in use.\n")


def test_show_exits_1_when_redis_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable Redis is reported on stderr with exit code 1."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, out, err = run(capsys, "--redis", url)
    assert (code, out) == (1, "")
    assert err.startswith(f"Cannot read limits from {url}: Redis is unavailable")
