"""The lease renewer: one lazy thread per process, batched renewals, lost leases, fork, stop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

import dramatiq_resilience as dr
from dramatiq_resilience.backends.dedup import RenewRequest
from dramatiq_resilience.middleware.dedup_claims import Claim
from dramatiq_resilience.middleware.dedup_renewer import LeaseRenewer, lease_renewer


class CountingBackend(dr.StubBackend):
    """A StubBackend that records every renewal call."""

    def __init__(self, clock: dr.FakeClock) -> None:
        super().__init__(clock=clock)
        self.renewals: list[list[str]] = []

    def dedup_renew(self, requests: Sequence[RenewRequest]) -> list[bool]:
        self.renewals.append([request.key for request in requests])
        return super().dedup_renew(requests)


@pytest.fixture
def renewer() -> Iterator[LeaseRenewer]:
    renewer = LeaseRenewer()
    yield renewer
    for claim in list(renewer._claims):
        renewer.discard(claim)
    renewer.stop()


def held(backend: dr.StateBackend, key: str, lease_ms: int = 90) -> Claim:
    backend.dedup_claim(
        key, message_id=f"m-{key}", actor_name="a", token=f"t-{key}", lease_ms=lease_ms, ttl_ms=60_000
    )
    return Claim(
        backend=backend,
        key=key,
        token=f"t-{key}",
        message_id=f"m-{key}",
        actor_name="a",
        queue_name="default",
        lease_ms=lease_ms,
        ttl_ms=60_000,
    )


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def renewer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dramatiq-resilience-lease-renewer"]


def test_no_thread_until_the_first_claim(renewer: LeaseRenewer, clock: dr.FakeClock) -> None:
    """Building a renewer starts nothing; the first claim starts its one thread."""
    before = len(renewer_threads())
    assert renewer._thread is None
    renewer.add(held(dr.StubBackend(clock=clock), "a", lease_ms=60_000))
    renewer.add(held(dr.StubBackend(clock=clock), "b", lease_ms=60_000))
    assert len(renewer_threads()) == before + 1
    assert renewer.active == 2


def test_claims_due_together_are_renewed_in_one_call(renewer: LeaseRenewer, clock: dr.FakeClock) -> None:
    """Every claim due at one moment is renewed with one backend call, a third of the lease in."""
    backend = CountingBackend(clock)
    claims = [held(backend, key) for key in ("a", "b", "c")]
    start = time.monotonic()
    for claim in claims:
        claim.renewed_at = start
        renewer.add(claim)
    wait_until(lambda: len(backend.renewals) >= 1)
    assert sorted(backend.renewals[0]) == ["a", "b", "c"]
    assert all(claim.renewed_at > start for claim in claims)
    clock.advance(60)
    assert backend.dedup_inspect("a").lease_until == clock.now_ms() - 60 + 90  # type: ignore[union-attr]


def test_lost_lease_is_reported_and_dropped(
    renewer: LeaseRenewer, clock: dr.FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal that finds the key taken over marks the claim lost, logs it and emits dedup_lease_lost."""
    backend = dr.StubBackend(clock=clock)
    claim = held(backend, "k")
    clock.advance(90)
    backend.dedup_claim("k", message_id="other", actor_name="a", token="t2", lease_ms=1_000, ttl_ms=1)
    lost: list[dr.Event] = []
    dr.subscribe("dedup_lease_lost", lost.append)
    try:
        renewer.add(claim)
        wait_until(lambda: claim.lost)
    finally:
        dr.unsubscribe("dedup_lease_lost", lost.append)
    assert renewer.active == 0
    assert [(e["key"], e["message_id"], e["at"]) for e in lost] == [("k", "m-k", "renew")]
    assert "Message 'm-k' lost deduplication key 'k'" in caplog.text


def test_renewals_resume_after_an_outage(renewer: LeaseRenewer, clock: dr.FakeClock) -> None:
    """While the backend is down renewals are retried; once it is back the lease moves again."""
    backend = dr.StubBackend(clock=clock)
    claim = held(backend, "k")
    backend.unavailable = True
    renewer.add(claim)
    time.sleep(0.15)
    assert renewer.outage.in_outage
    clock.advance(500)  # the lease ran out meanwhile, but nobody took the key over
    backend.unavailable = False
    wait_until(lambda: not renewer.outage.in_outage)
    assert not claim.lost
    assert backend.dedup_inspect("k").lease_until == clock.now_ms() + 90  # type: ignore[union-attr]


def test_stop_ends_the_thread_once_no_claim_is_left(renewer: LeaseRenewer, clock: dr.FakeClock) -> None:
    """stop() with no claims stops the thread; the next claim starts a new one."""
    claim = held(dr.StubBackend(clock=clock), "k", lease_ms=60_000)
    renewer.add(claim)
    thread = renewer._thread
    assert thread is not None
    renewer.discard(claim)
    renewer.stop()
    assert not thread.is_alive()
    renewer.add(claim)
    assert renewer._thread is not None and renewer._thread is not thread and renewer._thread.is_alive()


def test_a_forked_child_gets_its_own_renewer(clock: dr.FakeClock) -> None:
    """After a real fork, the child's lease_renewer() is a fresh one: no claims, no thread yet."""
    parent = lease_renewer()
    claim = held(dr.StubBackend(clock=clock), "k", lease_ms=60_000)
    parent.add(claim)
    try:
        assert lease_renewer() is parent
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave at once
            child = lease_renewer()
            fresh = child is not parent and child.pid == os.getpid() and child._thread is None
            os.write(write, b"fresh" if fresh and child.active == 0 else b"stale")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 16)
        os.waitpid(pid, 0)
        os.close(read)
    finally:
        parent.discard(claim)
    assert answer == b"fresh"


def test_stop_gives_up_unsettled_work_with_an_error(
    renewer: LeaseRenewer, clock: dr.FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A completion still failing at shutdown is dropped with an error, and its claim no longer renewed."""
    backend = dr.StubBackend(clock=clock)
    claim = held(backend, "k", lease_ms=60_000)
    backend.unavailable = True
    renewer.settle_later(
        claim, lambda: backend.dedup_complete("k", token="t-k", ttl_ms=1), "complete key 'k'"
    )
    time.sleep(0.1)  # the thread tries, and fails
    assert renewer.outage.in_outage
    renewer.stop()
    assert renewer.active == 0
    assert renewer._thread is None or not renewer._thread.is_alive()
    assert "Could not complete key 'k' on shutdown" in caplog.text


def test_committed_claims_are_not_renewed_nor_spun_on(renewer: LeaseRenewer, clock: dr.FakeClock) -> None:
    """A claim committed by its actor (still running) is left alone: no renewal, no busy loop."""
    backend = CountingBackend(clock)
    claim = held(backend, "k", lease_ms=30)
    claim.committed = True
    renewer.add(claim)
    time.sleep(0.2)
    assert backend.renewals == []
    assert renewer._next_wait() == 1.0  # idle, not 0: the thread sleeps


def test_a_settlement_over_a_corrupt_record_is_given_up_not_retried(
    renewer: LeaseRenewer, clock: dr.FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A background settlement that meets a corrupt record logs one error and stops; no outage."""
    backend = dr.StubBackend(clock=clock)
    claim = held(backend, "k", lease_ms=60_000)
    attempts: list[int] = []

    def complete() -> bool:
        attempts.append(1)
        raise dr.CorruptRecord("The record of deduplication key 'k' holds a str, not a mapping", key="k")

    renewer.settle_later(claim, complete, "complete deduplication key 'k' of message 'm-k'")
    wait_until(lambda: renewer.active == 0)
    renewer.stop()
    assert attempts == [1]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            "Could not complete deduplication key 'k' of message 'm-k': The record of deduplication key "
            "'k' holds a str, not a mapping.",
        )
    ]
