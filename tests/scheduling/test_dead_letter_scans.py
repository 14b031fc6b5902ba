"""The scheduler's dead-letter scans against the real DeadLetters store (issues 6 and 7 together)."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker

import dramatiq_resilience as dr
from dramatiq_resilience.scheduling import run_scan


class GatewayTimeout(Exception):
    pass


def test_dead_letter_scans_import_redrive_and_trim_the_real_store(
    stub_broker: StubBroker, stub_worker: Worker, clock: dr.FakeClock
) -> None:
    """Import takes what sat in the broker's XQ, redrive requeues what is due, trim applies retention."""
    backend = dr.StubBackend(clock=clock)
    policy = dr.RedrivePolicy(match={"error_type": "GatewayTimeout"}, delay=60_000, max_redrives=1, name="gw")
    stack = dr.install(
        stub_broker,
        backend=backend,
        scheduling={"run_scheduler": False},
        breaker=False,  # the always-failing actor would trip it; this test is about the scans
        dead_letters={"redrive": [policy], "max_count": 4},
    )
    runs: list[int] = []

    @dramatiq.actor(max_retries=0)
    def charge(n: int) -> None:
        runs.append(n)
        raise GatewayTimeout(f"order {n}")

    for n in range(3):
        charge.send(n)
    stub_broker.join(charge.queue_name, fail_fast=False)
    stub_worker.join()
    # A message that died before DeadLetters was installed sits in the broker's own dead letters.
    old: Any = Message(queue_name="default", actor_name="charge", args=(99,), kwargs={}, options={})
    stub_broker.dead_letters_by_queue["default"].append(old)
    store = stack.dead_letters.store
    assert (store.stats().dead, store.stats().total) == (3, 3)

    clock.advance(1_000)  # the import is a second later, so trim's order below is strict
    assert run_scan(stub_broker, "dead_letters_import") == {"imported": 1, "already_stored": 3, "queues": 1}
    assert store.stats().by_category == {"transient": 3, "imported": 1}

    assert run_scan(stub_broker, "dead_letters_redrive") == {"requeued": 0, "policies": 1}  # not due yet
    clock.advance(60_000)
    assert run_scan(stub_broker, "dead_letters_redrive") == {"requeued": 3, "policies": 1}
    stub_broker.join(charge.queue_name, fail_fast=False)
    stub_worker.join()
    assert sorted(runs) == [0, 0, 1, 1, 2, 2]
    after = store.stats()
    assert (after.dead, after.requeued, after.total) == (4, 3, 7)  # 3 new "-r1" records, 1 imported
    assert run_scan(stub_broker, "dead_letters_redrive") == {"requeued": 0, "policies": 1}  # max_redrives=1

    assert run_scan(stub_broker, "dead_letters_trim") == {
        "removed": 3,
        "by_age": 0,
        "by_count": 3,
        "released_claims": 0,
    }
    # The 3 oldest went: the requeued originals.  Left: the imported record and the 3 "-r1" ones.
    trimmed = store.stats()
    assert (trimmed.dead, trimmed.requeued, trimmed.total) == (4, 0, 4)
    assert trimmed.by_category == {"transient": 3, "imported": 1}
