"""The scheduler on Redis: dead-worker recovery, the CLI, and real scheduler and worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.cli import main
from dramatiq_resilience.scheduling import run_scan
from dramatiq_resilience.scheduling import sender as sender_module
from dramatiq_resilience.scheduling.dead_workers import broker_identity, recover_dead_workers
from dramatiq_resilience.scheduling.inflight import InflightTracker

from .conftest import named

ROOT = Path(__file__).resolve().parents[2]
COMMAND = str(Path(sys.executable).parent / "dramatiq-resilience")


def fetch_as_worker(broker: RedisBroker, queue: str, count: int) -> RedisBroker:
    """Fetch ``count`` messages as another worker (its own broker id), leaving them unacked."""
    other = RedisBroker(
        client=broker.client, namespace=broker.namespace, heartbeat_timeout=broker.heartbeat_timeout
    )
    other.do_fetch(queue, count)
    return other


def test_dead_workers_messages_go_back_to_their_queues(
    redis_broker: RedisBroker, redis_backend: dr.RedisBackend, clock: dr.FakeClock
) -> None:
    """Ack sets of workers whose heartbeat is unchanged for heartbeat_timeout are requeued; live ones stay."""
    redis_broker.heartbeat_timeout = 10_000
    client = redis_broker.client

    @dramatiq.actor(max_retries=0)
    def work(n: int) -> None: ...

    for n in range(6):
        work.send(n)
    work.send_with_options(args=(99,), delay=60_000)
    dead = fetch_as_worker(redis_broker, "default", 4)
    dead.do_fetch("default.DQ", 1)
    alive = fetch_as_worker(redis_broker, "default", 2)
    heartbeats = f"{redis_broker.namespace}:__heartbeats__"
    beat = 1_800_000_000_000  # the workers' own clocks: not the backend's
    client.zadd(heartbeats, {redis_broker.broker_id: beat, alive.broker_id: beat, dead.broker_id: beat})
    assert client.llen(f"{redis_broker.namespace}:default") == 0
    slept: list[float] = []
    first = recover_dead_workers(redis_broker, redis_backend, sleep=slept.append)  # every score first seen
    assert first.dead_workers == []
    clock.advance(8_999)
    # The sender and `alive` spoke since; `dead` did not.
    client.zadd(heartbeats, {redis_broker.broker_id: beat + 8_999, alive.broker_id: beat + 8_999})
    # 1 001 ms short of the timeout: more than the scan waits for (SETTLE_WAIT).
    assert recover_dead_workers(redis_broker, redis_backend, sleep=slept.append).dead_workers == []
    clock.advance(1_001)
    # Unchanged for the timeout: dead.
    report = recover_dead_workers(redis_broker, redis_backend, sleep=slept.append)
    assert slept == []
    assert (report.dead_workers, report.requeued) == ([dead.broker_id], {"default": 4, "default.DQ": 1})
    assert client.llen(f"{redis_broker.namespace}:default") == 4
    assert client.llen(f"{redis_broker.namespace}:default.DQ") == 1
    assert client.scard(f"{redis_broker.namespace}:__acks__.{alive.broker_id}.default") == 2
    assert client.exists(f"{redis_broker.namespace}:__acks__.{dead.broker_id}.default") == 0
    assert client.zscore(heartbeats, dead.broker_id) is None
    clock.advance(1)
    again = recover_dead_workers(redis_broker, redis_backend, sleep=slept.append)
    assert (again.dead_workers, again.messages) == ([], 0)
    tracked = redis_backend.client.hkeys(
        redis_backend.key("broker_heartbeats", broker_identity(redis_broker))
    )
    assert sorted(w.decode() for w in tracked) == sorted([redis_broker.broker_id, alive.broker_id])


def test_a_worker_that_beats_again_is_not_recovered(
    redis_broker: RedisBroker, redis_backend: dr.RedisBackend, clock: dr.FakeClock
) -> None:
    """The requeue re-checks the score: a worker that spoke since it was judged dead keeps its messages."""
    redis_broker.heartbeat_timeout = 10_000

    @dramatiq.actor(max_retries=0)
    def work(n: int) -> None: ...

    for n in range(3):
        work.send(n)
    worker = fetch_as_worker(redis_broker, "default", 3)
    key = f"{redis_broker.namespace}:__heartbeats__"
    beat = 1_800_000_000_000
    redis_broker.client.zadd(key, {worker.broker_id: beat})
    redis_backend.broker_heartbeats_observe(redis_broker.namespace, {worker.broker_id: str(beat)})
    clock.advance(10_000)
    silent = redis_backend.broker_heartbeats_observe(redis_broker.namespace, {worker.broker_id: str(beat)})
    assert silent == {worker.broker_id: 10_000}  # judged dead
    # It fetched again meanwhile (its clock went back: any other score means alive).
    redis_broker.client.zadd(key, {worker.broker_id: beat - 5_000})
    from dramatiq_resilience.scheduling import dead_workers

    requeue = dead_workers._script(redis_broker.client, "broker_requeue_acks")
    ack = f"{redis_broker.namespace}:__acks__.{worker.broker_id}.default"
    queue = f"{redis_broker.namespace}:default"
    assert requeue(keys=[key, ack, queue, f"{queue}.msgs"], args=["", worker.broker_id, str(beat), "1"]) == -1
    assert redis_broker.client.scard(ack) == 3
    assert redis_broker.client.zscore(key, worker.broker_id) == beat - 5_000


@pytest.mark.parametrize("skew", [-3_600_000, 3_600_000], ids=["trailing", "ahead"])
def test_the_stalled_scan_measures_running_time_whatever_the_workers_clock(
    stub_broker: StubBroker,
    redis_backend: dr.RedisBackend,
    clock: dr.FakeClock,
    skew: int,
    captured: list[dr.Event],
) -> None:
    """A worker whose clock is an hour off publishes start times on the backend's clock: exact run times."""
    dr.install(
        stub_broker, backend=redis_backend, scheduling={"run_scheduler": False, "stalled_after": 5_000}
    )

    @dramatiq.actor
    def slow() -> None: ...

    host = dr.FakeClock(clock.now_ms() + skew)
    tracker = InflightTracker(redis_backend, clock=host)
    tracker.process = "host:1:abc"
    tracker.started(slow.message())
    clock.advance(4_000)
    host.advance(4_000)
    tracker.publish()
    assert run_scan(stub_broker, "stalled") == {"processes": 1, "running": 1, "stalled": 0}
    clock.advance(2_000)  # no publish since: the start time published is still right
    assert run_scan(stub_broker, "stalled") == {"processes": 1, "running": 1, "stalled": 1}
    assert [(e["actor_name"], e["running_ms"]) for e in named(captured, "message_stalled")] == [
        ("slow", 6_000)
    ]


@pytest.mark.parametrize(
    ("left", "copies"),
    [("queued", 1), ("delayed", 1), ("started", 0), ("unsent", 1), ("crowded", 2), ("hung", 2)],
)
def test_a_takeover_sends_again_only_what_the_dead_claimer_did_not_enqueue(
    redis_broker: RedisBroker,
    redis_backend: dr.RedisBackend,
    clock: dr.FakeClock,
    captured: list[dr.Event],
    monkeypatch: pytest.MonkeyPatch,
    left: str,
    copies: int,
) -> None:
    """The claimer died after its enqueue, before its confirmation: the taker-over confirms, never resends.

    "queued"/"delayed": the message is still in the queue (or its delay queue);
    "started": a worker started it and acked it; "unsent": it died before its enqueue.
    "crowded" (a queue past the scan limit) and "hung" (the broker does not answer
    within a quarter of the lease): queued, but the taker-over cannot tell, so it sends again.
    """

    @dramatiq.actor(queue_name="ticks", max_retries=0)
    def tick() -> None: ...

    dr.schedule(tick, every=10_000, overlap="allow", jitter=5_000 if left == "delayed" else 0)
    dead = dr.Scheduler(redis_broker, backend=redis_backend, clock=clock, scans=False).start(timer=False)
    dead.sender._confirm = lambda *args, **kwargs: False  # type: ignore[method-assign]  # dies here
    if left == "unsent":
        dead.sender._enqueue = lambda *args, **kwargs: True  # type: ignore[method-assign]
    clock.advance(10_000)
    dead.tick()
    dead.shutdown()
    [claimed] = named(captured, "cron_fired")
    message_id = claimed["message_id"]
    client, prefix = redis_broker.client, f"{redis_broker.namespace}:"

    def copies_held(key: str | None = None) -> int:
        return sum(
            json.loads(data)["message_id"] == message_id
            for queue in ([key] if key else ["ticks", "ticks.DQ"])
            for data in client.hvals(f"{prefix}{queue}.msgs")
        )

    assert copies_held() == (0 if left == "unsent" else 1)
    assert copies_held("ticks.DQ") == (left == "delayed")
    if left == "started":
        [message] = [json.loads(data) for data in client.hvals(f"{prefix}ticks.msgs")]
        assert redis_backend.cron_started(
            "tick", message_id, lease_ms=60_000, send_id=message["options"]["cron_send_id"]
        )
        client.delete(f"{prefix}ticks", f"{prefix}ticks.msgs")  # run and acked
    captured.clear()
    clock.advance(10_000)  # the send lease has ended (and the next occurrence is due)
    if left == "crowded":
        monkeypatch.setattr(sender_module, "TAKEOVER_SCAN_LIMIT", 0)
    released = threading.Event()
    if left == "hung":
        hlen = client.hlen

        def hung_hlen(key: str) -> int:
            if not released.is_set():
                clock.advance(2_500)  # the check's deadline (a quarter of the lease) passes...
                released.wait(10)  # ...while the broker does not answer
            return hlen(key)

        monkeypatch.setattr(client, "hlen", hung_hlen)
    taker = dr.Scheduler(redis_broker, backend=redis_backend, clock=clock, scans=False).start(timer=False)
    taker.poll()
    released.set()
    taker.shutdown()
    assert copies_held() == copies
    fired = [e for e in named(captured, "cron_fired") if e["message_id"] == message_id]
    assert [e["recovered"] for e in fired] == [True]  # taken over once, announced once
    clock.advance(60_000)  # long past any send lease
    again = redis_backend.cron_claim(
        "tick", None, "", next_run_ms=None, send_lease_ms=10_000, skip_if_pending=False,
        lease_ms=60_000, grace_ms=120_000,
    )  # fmt: skip
    assert (again.recovered, again.expired) == ((), ())  # confirmed: nobody takes it over again


def test_cron_cli_lists_enables_disables_and_requests_runs(
    redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cron list|enable|disable|run-now` on a real backend, with --json and exit codes."""
    backend = dr.RedisBackend(url=redis_url, namespace=namespace)
    spec = {
        "actor_name": "report",
        "queue_name": "default",
        "schedule": "0 3 * * *",
        "timezone": "Europe/Paris",
        "overlap": "skip",
    }
    backend.cron_register("nightly", spec, next_run_ms=1_767_232_800_000)
    base = ["--redis", redis_url, "--namespace", namespace]
    assert main(["cron", "list", *base]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "JOB      SCHEDULE                  ENABLED  NEXT RUN              LAST RUN  STATUS  LAST ERROR",
        "nightly  0 3 * * * (Europe/Paris)  yes      2026-01-01 02:00:00Z  -         -       -",
    ]
    assert main(["cron", "disable", "nightly", *base]) == 0
    assert capsys.readouterr().out == "Disabled cron job 'nightly'.\n"
    assert main(["cron", "run-now", "nightly", *base, "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (state["enabled"], state["run_requested"]) == (False, True)
    assert main(["cron", "enable", "nightly", *base]) == 0
    capsys.readouterr()
    assert main(["cron", "list", *base, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["enabled"], listed["next_run_ms"]) == ("nightly", True, 1_767_232_800_000)
    assert main(["cron", "disable", "nightly-typo", *base]) == 1
    assert capsys.readouterr().err == "No cron job 'nightly-typo' is registered; known jobs: nightly.\n"


def test_cron_cli_reports_an_unreachable_backend(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable backend exits 1 with a sentence, not a traceback."""
    from dramatiq_resilience.testing.redis_server import free_port

    assert main(["cron", "list", "--redis", f"redis://127.0.0.1:{free_port()}/0"]) == 1
    assert capsys.readouterr().err.startswith("Cannot read cron jobs: Redis is unavailable")


class SchedulerProcess:
    """A `dramatiq-resilience scheduler MODULE` process in its own process group."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="scheduler-", suffix=".log")[1])
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [COMMAND, "-v", "scheduler", module],
                cwd=ROOT,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "Scheduler ready" not in self.log():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self.log_path.unlink(missing_ok=True)


def queued_messages(client: Any, key: str) -> list[dict[str, Any]]:
    return [json.loads(data) for data in client.hvals(f"{key}.msgs")]


@pytest.mark.slow
def test_three_scheduler_processes_send_each_second_once_and_survive_a_sigkill(
    redis_url: str, namespace: str
) -> None:
    """3 schedulers, an every-second job, 30 s, one SIGKILLed at 15 s: every occurrence sent exactly once."""
    env = {"TEST_REDIS_URL": redis_url, "TEST_NAMESPACE": namespace, "TEST_EVERY_SECOND": "1"}
    schedulers = [SchedulerProcess("tests.apps.scheduling", env) for _ in range(3)]
    try:
        for scheduler in schedulers:
            scheduler.wait_ready()
        started = time.time() * 1000
        time.sleep(15)
        schedulers[1].kill()
        killed = time.time() * 1000
        time.sleep(15)
        stopped_at = time.time() * 1000
        assert [schedulers[0].stop(), schedulers[2].stop()] == [0, 0]
        assert "Scheduler stopped." in schedulers[0].log()
    finally:
        for scheduler in schedulers:
            scheduler.close()
    client = redis.Redis.from_url(redis_url)
    messages = queued_messages(client, f"{namespace}-broker:ticks")
    by_id = Counter(message["message_id"] for message in messages)
    occurrences = sorted(message["options"]["cron_occurrence"] for message in messages)
    assert [n for n in by_id.values() if n > 1] == []  # no message id sent twice
    assert len(set(occurrences)) == len(occurrences)  # no occurrence sent twice
    first, last = occurrences[0], occurrences[-1]
    assert occurrences == list(range(first, last + 1000, 1000))  # none missed, around the kill too
    assert first <= started + 1_000 and last >= stopped_at - 2_000, (started, first, last, stopped_at)
    assert first < killed < last
    assert len(occurrences) >= 29
    print(
        f"{len(occurrences)} occurrences over {(last - first) / 1000:.0f} s, "
        f"{len(by_id)} message ids, each sent once"
    )


@pytest.mark.slow
def test_a_sigkilled_workers_messages_are_recovered_by_the_scan_within_30_seconds(
    redis_url: str, namespace: str, dramatiq_processes: Any
) -> None:
    """20 unacked messages of a SIGKILLed worker run elsewhere within 30 s (5 s scan, 10 s timeout)."""
    env = {
        "TEST_REDIS_URL": redis_url,
        "TEST_NAMESPACE": namespace,
        "TEST_HEARTBEAT_MS": "10000",
        "TEST_DEAD_WORKERS_EVERY": "5000",
    }
    client = redis.Redis.from_url(redis_url)
    holder = dramatiq_processes(
        "tests.apps.scheduling",
        env={**env, "TEST_SLEEP_MS": "600000", "dramatiq_queue_prefetch": "20"},
        processes=1,
        threads=10,
        queues=["default"],
    )
    sender = RedisBroker(url=redis_url, namespace=f"{namespace}-broker")
    sender.declare_queue("default")
    for n in range(20):
        sender.enqueue(
            dramatiq.Message(queue_name="default", actor_name="record", args=(n,), kwargs={}, options={})
        )
    acks = f"{namespace}-broker:__acks__.*.default"
    deadline = time.monotonic() + 30
    while sum(client.scard(key) for key in client.scan_iter(match=acks)) < 20:
        assert time.monotonic() < deadline, holder.log()
        time.sleep(0.05)
    assert client.llen(f"{namespace}-broker:default") == 0
    holder.kill()
    killed = time.monotonic()
    dramatiq_processes("tests.apps.scheduling", env=env, processes=1, threads=8)
    while client.hlen(f"{namespace}:done") < 20:
        assert time.monotonic() - killed < 30, "the dead worker's messages were not recovered within 30 s"
        time.sleep(0.1)
    recovered_in = time.monotonic() - killed
    assert {int(n): int(count) for n, count in client.hgetall(f"{namespace}:done").items()} == {
        n: 1 for n in range(20)
    }
    print(f"20 messages of the SIGKILLed worker processed {recovered_in:.1f} s after the kill")
