"""`dramatiq-resilience dedup show|forget KEY`: readable or JSON, exit 0/1/2."""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgpack
import pytest

import dramatiq_resilience as dr
from dramatiq_resilience.cli import main
from dramatiq_resilience.testing.redis_server import free_port


@pytest.fixture
def backend(redis_url: str, namespace: str) -> Iterator[dr.RedisBackend]:
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    yield backend
    backend.close()


def completed(backend: dr.RedisBackend, key: str = "charge:order-1") -> None:
    backend.dedup_claim(
        key, message_id="m1", actor_name="charge", token="t", lease_ms=60_000, ttl_ms=3_600_000
    )
    backend.dedup_complete(key, token="t", ttl_ms=3_600_000, result=msgpack.packb({"charge_id": "ch_1"}))


def args(backend: dr.RedisBackend, *words: str) -> list[str]:
    kwargs = backend.client.connection_pool.connection_kwargs
    return [
        "dedup",
        *words,
        "--redis",
        f"redis://127.0.0.1:{kwargs['port']}/0",
        "--namespace",
        backend.namespace,
    ]


def test_show_prints_the_record(backend: dr.RedisBackend, capsys: pytest.CaptureFixture[str]) -> None:
    """show prints a table of the record and exits 0."""
    completed(backend)
    assert main(args(backend, "show", "charge:order-1")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        "key           charge:order-1",
        "state         completed",
        "message       m1",
        "actor         charge",
        "payload       - (no payload check)",
    ]
    assert lines[6] == "claims        1 (0 after an expired lease)"
    assert lines[8] == "lease until   -"
    assert lines[10].startswith("expires       ") and lines[10].endswith("(in 60 min)")
    assert lines[11:] == ["result        {'charge_id': 'ch_1'}", "sent message  -"]


def test_show_json_and_a_running_key(backend: dr.RedisBackend, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the record's fields; an in-progress key shows its lease."""
    backend.dedup_claim("k", message_id="m1", actor_name="charge", token="t", lease_ms=60_000, ttl_ms=1_000)
    assert main(args(backend, "show", "k", "--json")) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["state"], record["owner"], record["forgotten"]) == ("in_progress", "m1", False)
    assert record["lease_until"] - record["claimed_at"] == 60_000


def test_forget_deletes_and_says_what_it_was(
    backend: dr.RedisBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    """forget deletes the record (exit 0), then show finds nothing (exit 1)."""
    completed(backend)
    assert main(args(backend, "forget", "charge:order-1")) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "Forgot deduplication key 'charge:order-1'. It was:\nkey           charge:order-1\n"
    )
    assert backend.dedup_inspect("charge:order-1") is None
    assert main(args(backend, "show", "charge:order-1")) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"No deduplication record for key 'charge:order-1' in namespace {backend.namespace!r}.\n"
    )
    assert main(args(backend, "forget", "charge:order-1", "--json")) == 1
    assert json.loads(capsys.readouterr().out) is None


def test_a_corrupt_record_is_shown_as_corrupt_and_forget_deletes_it(
    backend: dr.RedisBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record key holding a string: show names the problem (exit 1); forget deletes it (exit 0)."""
    record_key = backend.dedup_record_key("charge:order-1")
    backend.client.set(record_key, "oops")
    assert main(args(backend, "show", "charge:order-1")) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"The record of deduplication key 'charge:order-1' (Redis key {record_key!r}) holds a string, "
        "not a hash. Messages with this key are dead-lettered (CorruptDedupRecord) until it is deleted: "
        "dramatiq-resilience dedup forget charge:order-1\n"
    )
    assert main(args(backend, "forget", "charge:order-1")) == 0
    assert capsys.readouterr().out.startswith(
        "Forgot deduplication key 'charge:order-1', whose record was corrupt"
    )
    assert backend.client.exists(record_key) == 0
    assert main(args(backend, "show", "charge:order-1")) == 1


def test_unreachable_backend_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A Redis that does not answer is an error on stderr, exit 1."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["dedup", "show", "k", "--redis", url]) == 1
    assert capsys.readouterr().err.startswith(
        f"Cannot reach the state backend at {url}: Redis is unavailable"
    )


def test_missing_key_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """show without KEY exits 2."""
    with pytest.raises(SystemExit) as info:
        main(["dedup", "show"])
    assert info.value.code == 2
    assert "the following arguments are required: KEY" in capsys.readouterr().err
