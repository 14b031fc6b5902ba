"""`dramatiq-resilience dlq`: tables, --json, filters, bulk work, broker access and exit codes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

import dramatiq_resilience as dr
from dramatiq_resilience.backends.dead_letters import DeadLetterEntry
from dramatiq_resilience.backends.redis_dead_letters import RedisDeadLetterOps
from dramatiq_resilience.cli import main
from dramatiq_resilience.cli.dlq import parse_time
from dramatiq_resilience.cli.progress import ProgressBar
from dramatiq_resilience.dead_letters import requeue as requeue_module

from .dead_letter_records import T0, TIMEOUT, rec


@pytest.fixture
def store(redis_url: str, namespace: str) -> Iterator[dr.DeadLetterStore]:
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    yield dr.DeadLetterStore(backend)
    backend.close()


@pytest.fixture
def dlq(redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `dramatiq-resilience dlq ARGS --redis URL --namespace NS`; return (exit code, stdout, stderr)."""

    def run(*args: str, backend: bool = True) -> tuple[int, str, str]:
        extra = ["--redis", redis_url, "--namespace", namespace] if backend else []
        code = main(["dlq", *args, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_list_prints_a_table_and_pages_with_a_cursor(store: dr.DeadLetterStore, dlq: Any) -> None:
    """list: newest first, one row per record, the next page's cursor; --cursor continues."""
    store.add_many([rec(n) for n in range(3)])
    code, out, _ = dlq("list", "--limit", "2")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["ID", "FAILED", "STATUS", "CATEGORY", "ACTOR", "QUEUE", "ATTEMPTS", "ERROR"]
    assert [line.split()[0] for line in lines[1:3]] == ["m00002", "m00001"]
    assert lines[1].split()[3:9] == ["dead", "transient", "charge", "payments", "3", "GatewayTimeout:"]
    assert lines[3] == f"2 record(s). Next page: --cursor {T0 - 100_000 + 1}:m00001"
    code, out, _ = dlq("list", "--limit", "2", "--cursor", f"{T0 - 100_000 + 1}:m00001")
    assert out.splitlines()[1].split()[0] == "m00000"
    assert out.splitlines()[-1] == "1 record(s)."


def test_list_filters_and_json(store: dr.DeadLetterStore, dlq: Any) -> None:
    """Filters as flags; --json prints the records and the cursor."""
    store.add_many([rec(1), rec(2, actor="refund", error="KeyError", category="permanent"), rec(3)])
    code, out, _ = dlq("list", "--json", "--actor", "refund", "--category", "permanent")
    data = json.loads(out)
    assert code == 0
    assert [(i["record_id"], i["error_type"], i["readable"]) for i in data["items"]] == [
        ("m00002", "KeyError", True)
    ]
    assert data["cursor"] is None
    _, out, _ = dlq("list", "--json", "--error-type", "GatewayTimeout", "--since", str(T0 - 100_000 + 3))
    assert [i["record_id"] for i in json.loads(out)["items"]] == ["m00003"]


def test_an_unreadable_record_is_listed_and_shown_as_unreadable(store: dr.DeadLetterStore, dlq: Any) -> None:
    """A corrupt record appears in list as UNREADABLE with its id; show explains and exits 1."""
    store.add_many([rec(1)])
    store.backend.dead_letters_write(
        [DeadLetterEntry("broken", b"\x92garbage", T0, "charge", "payments", TIMEOUT, "transient")],
        replace=True,
    )
    code, out, _ = dlq("list")
    row = out.splitlines()[1].split()
    assert (code, row[0], row[3], row[5]) == (0, "broken", "UNREADABLE", "charge")
    code, out, _ = dlq("show", "broken")
    assert code == 1
    assert out.startswith("Dead letter 'broken' is UNREADABLE: Dead-letter record 'broken' is unreadable")
    code, out, _ = dlq("list", "--json")
    assert [(i["record_id"], i["readable"]) for i in json.loads(out)["items"]] == [
        ("broken", False),
        ("m00001", True),
    ]


def test_show_prints_the_record_and_its_traceback(store: dr.DeadLetterStore, dlq: Any) -> None:
    """show: every field, the arguments and the traceback; an unknown id exits 1."""
    store.add(rec(7, traceback="Traceback (most recent call last):\nGatewayTimeout: slow\n"))
    code, out, _ = dlq("show", "m00007")
    assert code == 0
    assert "record:        m00007\n" in out
    assert "attempts:      3\n" in out
    assert 'kwargs:        {"tenant": "acme"}\n' in out
    assert out.rstrip().endswith("GatewayTimeout: slow")
    code, _, err = dlq("show", "nope")
    assert (code, err.strip()) == (1, "No dead letter 'nope'.")


def test_stats_json_and_table(store: dr.DeadLetterStore, dlq: Any) -> None:
    """stats: counts by category and actor, in JSON and as tables."""
    store.add_many([rec(1), rec(2, actor="refund", category="permanent")])
    code, out, _ = dlq("stats", "--json")
    data = json.loads(out)
    assert (code, data["dead"], data["by_category"], data["by_actor"]) == (
        0,
        2,
        {"permanent": 1, "transient": 1},
        {"charge": 1, "refund": 1},
    )
    _, out, _ = dlq("stats")
    assert out.startswith("dead: 2   requeued: 0   being requeued: 0   total: 2\n")
    assert "\nCATEGORY   DEAD\npermanent  1\ntransient  1\n" in out


def test_requeue_enqueues_on_the_broker_once(
    store: dr.DeadLetterStore, dlq: Any, redis_url: str, namespace: str
) -> None:
    """requeue ID --broker-url: the message is on the broker's queue; a second requeue enqueues nothing."""
    store.add_many([rec(1), rec(2)])
    broker_args = ["--broker-url", redis_url, "--broker-namespace", f"{namespace}-b"]
    code, out, _ = dlq("requeue", "m00001", *broker_args)
    assert (code, out.splitlines()[0]) == (0, "Requeued 1 record(s); 0 skipped, 0 failed.")
    code, out, _ = dlq("requeue", "m00001", *broker_args, "--json")
    assert (code, json.loads(out)["skipped"]) == (1, {"m00001": "not_dead"})
    broker = RedisBroker(url=redis_url, namespace=f"{namespace}-b")
    [data] = broker.client.hvals(f"{namespace}-b:payments.msgs")
    assert Message.decode(data).message_id == "m00001"
    assert store.stats().dead == 1


def test_an_unconfirmed_requeue_is_reported_and_exits_1(
    store: dr.DeadLetterStore, dlq: Any, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails after the enqueue: the output names the record UNCONFIRMED, warns, and exits 1."""
    store.add_many([rec(1)])

    def down(self: Any, items: Any, token: str) -> list[str]:
        raise dr.BackendUnavailable("Redis is unavailable: down")

    monkeypatch.setattr(RedisDeadLetterOps, "dead_letters_finish", down)
    monkeypatch.setattr(requeue_module.time, "sleep", lambda seconds: None)
    broker_args = ["--broker-url", redis_url, "--broker-namespace", f"{namespace}-b"]
    code, out, _ = dlq("requeue", "m00001", *broker_args)
    lines = out.splitlines()
    assert (code, lines[0]) == (1, "Requeued 0 record(s); 0 skipped, 0 failed, 1 UNCONFIRMED.")
    assert lines[1].startswith("Unconfirmed records stay claimed: check whether their messages were enqueued")
    assert "m00001  UNCONFIRMED  enqueued, but not marked requeued: the store failed" in out
    assert store.stats().claimed == 1


def test_requeue_dry_run_needs_no_broker_but_a_real_one_does(store: dr.DeadLetterStore, dlq: Any) -> None:
    """--dry-run works without a broker; without one a requeue is a usage error (exit 2)."""
    store.add_many([rec(1)])
    code, out, _ = dlq("requeue", "--all", "--dry-run")
    assert (code, out.splitlines()[0]) == (0, "Would requeue 1 record(s); 0 skipped, 0 failed.")
    code, _, err = dlq("requeue", "--all")
    assert code == 2
    assert "needs the broker: give --broker-url URL or --app MODULE" in err
    code, _, err = dlq("requeue", "m00001", "--all")
    assert (code, "not both" in err) == (2, True)
    code, _, err = dlq("requeue", "--all", "--broker-url", "http://x")
    assert (code, "must be a redis:// or amqp:// URL" in err) == (2, True)


def test_purge_and_export(store: dr.DeadLetterStore, dlq: Any, tmp_path: Path) -> None:
    """purge by filter (dry run first) and export to a file as JSON lines."""
    store.add_many([rec(n, category="permanent" if n % 2 else "transient") for n in range(4)])
    code, out, _ = dlq("purge", "--category", "permanent", "--dry-run")
    assert (code, out.strip()) == (0, "Would purge 2 record(s); 0 skipped.")
    code, out, _ = dlq("purge", "--category", "permanent")
    assert (code, out.strip()) == (0, "Purged 2 record(s); 0 skipped.")
    target = tmp_path / "dead.jsonl"
    code, _, err = dlq("export", "--output", str(target))
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert (code, err.strip()) == (0, "Exported 2 record(s).")
    assert [line["record_id"] for line in lines] == ["m00000", "m00002"]
    code, _, _ = dlq("purge")
    assert code == 2


def test_import_moves_a_redis_broker_xq_into_the_store(
    store: dr.DeadLetterStore, dlq: Any, redis_url: str, namespace: str
) -> None:
    """import --broker-url: every message of <ns>:<queue>.XQ becomes a record; the XQ is emptied."""
    broker = RedisBroker(url=redis_url, namespace=f"{namespace}-b")
    for n in range(3):
        message = Message(
            queue_name="payments", actor_name="charge", args=(n,), kwargs={}, options={"retries": 1}
        )
        broker.client.zadd(f"{namespace}-b:payments.XQ", {f"r{n}": T0 + n})
        broker.client.hset(f"{namespace}-b:payments.XQ.msgs", f"r{n}", message.encode())
    code, out, _ = dlq("import", "--broker-url", redis_url, "--broker-namespace", f"{namespace}-b", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["queues"]["payments"] == {
        "queue_name": "payments",
        "before": 3,
        "after": 0,
        "imported": 3,
        "already_stored": 0,
        "undecodable": 0,
        "replaced_unreadable": 0,
    }
    records = list(store.iterate())
    assert [(r.category, r.attempts, r.last_failure_at) for r in records] == [
        ("imported", 2, T0 + n) for n in range(3)
    ]


def test_app_supplies_store_broker_and_redrive_policies(
    dlq: Any, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--app loads the user's broker set-up: its store, its broker, its redrive policies."""
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)
    monkeypatch.setenv("TEST_NAMESPACE", namespace)
    from tests.apps import dead_letters as app

    store = app.stack.dead_letters.store
    store.add_many([rec(1, queue="payments", actor="charge")])
    code, out, _ = dlq("redrive", "--app", "tests.apps.dead_letters", "--json", backend=False)
    assert code == 0
    assert json.loads(out)["retry-once"]["requeued"] == ["m00001"]
    code, out, _ = dlq(
        "list", "--app", "tests.apps.dead_letters", "--status", "requeued", "--json", backend=False
    )
    assert [i["record_id"] for i in json.loads(out)["items"]] == ["m00001"]
    assert app.broker.client.hlen(f"{namespace}-broker:payments.msgs") == 1


def test_bad_times_and_unreachable_backends_have_clear_exits(dlq: Any) -> None:
    """A bad --since is a usage error (2); an unreachable Redis is a failure (1)."""
    code, _, err = dlq("list", "--since", "yesterday")
    assert (code, "cannot read the time 'yesterday'" in err) == (2, True)
    code = main(["dlq", "stats", "--redis", "redis://127.0.0.1:1/0"])
    assert code == 1


def test_times_parse_as_ages_epochs_and_iso() -> None:
    """2h is two hours before now; digits are epoch ms; ISO times without zone are UTC."""
    assert parse_time("2h", 10_000_000) == 10_000_000 - 7_200_000
    assert parse_time("1767225600000", 0) == T0
    assert parse_time("2026-01-01T00:00:00", 0) == T0
    assert parse_time("2026-01-01T01:00:00+01:00", 0) == T0


def test_progress_bar_draws_in_place_only_when_enabled() -> None:
    """The bar redraws one line with a carriage return and ends it; disabled, it prints nothing."""
    stream = io.StringIO()
    with ProgressBar("requeue", enabled=True, stream=stream, width=10) as bar:
        bar.update(5, 10)
        bar.update(10, 10)
    text = stream.getvalue()
    assert text.startswith("\rrequeue [#####-----] 5/10 (")
    assert "\rrequeue [##########] 10/10 (" in text and text.endswith("\n")
    quiet = io.StringIO()
    with ProgressBar("x", enabled=None, stream=quiet) as bar:
        bar.update(1, 2)
    assert quiet.getvalue() == ""
