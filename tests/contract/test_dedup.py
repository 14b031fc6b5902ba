"""Contract: deduplication records behave the same on StubBackend and RedisBackend."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import redis
from redis.crc import key_slot

from dramatiq_resilience import BackendUnavailable, FakeClock, RedisBackend, StateBackend
from dramatiq_resilience.backends.dedup import ClaimResult, RenewRequest, ReserveResult
from dramatiq_resilience.errors import CorruptRecord

T0 = 1_767_225_600_000  # the FakeClock's start
DAY = 86_400_000


def claim(backend: StateBackend, key: str = "k", message_id: str = "m1", token: str = "t1", **kw: Any) -> Any:
    options: dict[str, Any] = {"actor_name": "charge", "lease_ms": 1_000, "ttl_ms": DAY, "payload": "p"}
    options.update(kw)
    return backend.dedup_claim(key, message_id=message_id, token=token, **options)


def test_claim_of_a_free_key_takes_it_with_a_lease(backend: StateBackend) -> None:
    """A free key is claimed in_progress by the message, with its token and a lease from now."""
    assert claim(backend) == ClaimResult("claimed", token="t1", claims=1)
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.state, record.owner, record.actor_name, record.payload) == (
        "in_progress",
        "m1",
        "charge",
        "p",
    )
    assert (record.created_at, record.claimed_at, record.lease_until) == (T0, T0, T0 + 1_000)
    assert record.expires_at == T0 + 1_000 + DAY
    assert (record.claims, record.takeovers, record.completed_at, record.has_result) == (1, 0, None, False)


def test_claim_of_a_live_lease_is_busy_until_the_lease_ends(backend: StateBackend, clock: FakeClock) -> None:
    """Another message, and the holder's own redelivery, see busy with the time left on the lease."""
    claim(backend)
    clock.advance(400)
    busy = ClaimResult("busy", owner="m1", retry_after_ms=600, state="in_progress", claims=1)
    assert claim(backend, message_id="m2", token="t2") == busy
    assert claim(backend, message_id="m1", token="t3") == busy
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.owner, record.lease_until, record.claims) == ("m1", T0 + 1_000, 1)


def test_expired_lease_is_taken_over(backend: StateBackend, clock: FakeClock) -> None:
    """Once the lease ends, the next claimer takes the key over and the old token is dead."""
    claim(backend)
    clock.advance(1_000)
    assert claim(backend, message_id="m2", token="t2") == ClaimResult(
        "claimed", owner="m1", token="t2", takeover=True, state="in_progress", claims=2
    )
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.owner, record.claims, record.takeovers, record.lease_until) == ("m2", 2, 1, T0 + 2_000)
    assert backend.dedup_complete("k", token="t1", ttl_ms=DAY) is False
    assert backend.dedup_renew([RenewRequest("k", "t1", 1_000, DAY)]) == [False]


def test_same_message_takes_over_its_own_expired_lease(backend: StateBackend, clock: FakeClock) -> None:
    """A crashed worker's redelivered message claims again once its old lease ends."""
    claim(backend)
    clock.advance(1_001)
    result = claim(backend, message_id="m1", token="t2")
    assert (result.outcome, result.owner, result.takeover, result.token) == ("claimed", "m1", True, "t2")


def test_completed_key_is_skipped_until_its_ttl_ends(backend: StateBackend, clock: FakeClock) -> None:
    """Completed: duplicates see "completed" with the owner for dedup_ttl, then the key is free."""
    claim(backend)
    clock.advance(250)
    assert backend.dedup_complete("k", token="t1", ttl_ms=10_000) is True
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.state, record.completed_at, record.expires_at, record.lease_until) == (
        "completed",
        T0 + 250,
        T0 + 10_250,
        None,
    )
    clock.advance(9_999)
    assert claim(backend, message_id="m2", token="t2") == ClaimResult(
        "completed", owner="m1", state="completed", claims=1
    )
    clock.advance(1)
    assert backend.dedup_inspect("k") is None
    assert claim(backend, message_id="m2", token="t2") == ClaimResult("claimed", token="t2", claims=1)


def test_complete_stores_the_result(backend: StateBackend) -> None:
    """A result given to complete is kept (msgpack) and shown by inspect."""
    claim(backend)
    assert backend.dedup_complete("k", token="t1", ttl_ms=DAY, result=msgpack.packb({"charge": "ch_1"}))
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.has_result, record.result) == (True, {"charge": "ch_1"})


def test_complete_with_a_stale_token_is_refused(backend: StateBackend) -> None:
    """Only the current token completes a key; an unknown key cannot be completed."""
    claim(backend)
    assert backend.dedup_complete("k", token="other", ttl_ms=DAY) is False
    assert backend.dedup_complete("nothing", token="t1", ttl_ms=DAY) is False
    assert backend.dedup_inspect("k").state == "in_progress"  # type: ignore[union-attr]


def test_complete_after_the_lease_ran_out_but_nobody_took_over(
    backend: StateBackend, clock: FakeClock
) -> None:
    """A holder whose lease ran out still completes while nobody else claimed the key."""
    claim(backend)
    clock.advance(5_000)
    assert backend.dedup_complete("k", token="t1", ttl_ms=DAY) is True
    assert backend.dedup_inspect("k").state == "completed"  # type: ignore[union-attr]


def test_payload_conflict_beats_every_state(backend: StateBackend, clock: FakeClock) -> None:
    """The same key with another payload is a conflict, whatever state holds it; "" skips the check."""
    claim(backend)
    conflict = claim(backend, message_id="m2", token="t2", payload="q")
    assert conflict == ClaimResult("conflict", owner="m1", state="in_progress", claims=1)
    assert claim(backend, message_id="m2", token="t2", payload="").outcome == "busy"
    backend.dedup_complete("k", token="t1", ttl_ms=DAY)
    assert claim(backend, message_id="m3", token="t3", payload="q").outcome == "conflict"
    assert claim(backend, message_id="m3", token="t3", payload="").outcome == "completed"


def test_stored_empty_payload_takes_the_first_real_one(backend: StateBackend, clock: FakeClock) -> None:
    """A record claimed without a payload check adopts the payload of a later claim."""
    claim(backend, payload="")
    clock.advance(1_000)
    claim(backend, message_id="m2", token="t2", payload="q")
    assert backend.dedup_inspect("k").payload == "q"  # type: ignore[union-attr]


def test_renew_extends_live_leases_in_one_call(backend: StateBackend, clock: FakeClock) -> None:
    """Renew moves each held lease to now + lease; unknown and lost claims answer False."""
    claim(backend, key="a", token="ta")
    claim(backend, key="b", token="tb")
    clock.advance(900)
    answers = backend.dedup_renew(
        [
            RenewRequest("a", "ta", 2_000, DAY),
            RenewRequest("b", "wrong", 2_000, DAY),
            RenewRequest("c", "x", 1, 1),
        ]
    )
    assert answers == [True, False, False]
    assert backend.dedup_inspect("a").lease_until == T0 + 2_900  # type: ignore[union-attr]
    assert backend.dedup_inspect("b").lease_until == T0 + 1_000  # type: ignore[union-attr]
    assert backend.dedup_renew([]) == []


def test_renew_after_the_lease_ran_out_keeps_the_key_if_nobody_took_it(
    backend: StateBackend, clock: FakeClock
) -> None:
    """A late renewal still holds the key when nobody claimed it meanwhile."""
    claim(backend)
    clock.advance(3_000)
    assert backend.dedup_renew([RenewRequest("k", "t1", 1_000, DAY)]) == [True]
    assert claim(backend, message_id="m2", token="t2").outcome == "busy"


def test_release_makes_the_key_pending_for_the_retry(backend: StateBackend, clock: FakeClock) -> None:
    """A failed attempt releases to pending (owner kept), and any message may claim it then."""
    claim(backend)
    assert backend.dedup_release("k", token="t1", message_id="m1", forget=False, ttl_ms=5_000) is True
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.state, record.owner, record.lease_until, record.expires_at, record.confirmed) == (
        "pending",
        "m1",
        None,
        T0 + 5_000,
        True,
    )
    assert backend.dedup_release("k", token="t1", message_id="m1", forget=False, ttl_ms=5_000) is False
    assert claim(backend, message_id="m1", token="t2") == ClaimResult(
        "claimed", token="t2", state="pending", claims=2
    )


def test_release_with_forget_deletes_the_record(backend: StateBackend) -> None:
    """A final failure forgets the key, so a new send can run."""
    claim(backend)
    assert backend.dedup_release("k", token="t1", message_id="m1", forget=True, ttl_ms=DAY) is True
    assert backend.dedup_inspect("k") is None


def test_release_never_frees_someone_elses_claim(backend: StateBackend, clock: FakeClock) -> None:
    """A stale token, or a completed key, is left alone."""
    claim(backend)
    clock.advance(1_000)
    claim(backend, message_id="m2", token="t2")
    assert backend.dedup_release("k", token="t1", message_id="m1", forget=True, ttl_ms=DAY) is False
    backend.dedup_complete("k", token="t2", ttl_ms=DAY)
    assert backend.dedup_release("k", token="t2", message_id="m2", forget=True, ttl_ms=DAY) is False
    assert backend.dedup_inspect("k").state == "completed"  # type: ignore[union-attr]


def test_release_without_token_only_forgets_the_owners_pending_reservation(backend: StateBackend) -> None:
    """Without a token: a pending key owned by the message is deleted with forget, nothing else."""
    backend.dedup_reserve("k", message_id="m1", actor_name="charge", timeout_ms=1_000)
    assert backend.dedup_release("k", token="", message_id="m2", forget=True, ttl_ms=DAY) is False
    assert backend.dedup_release("k", token="", message_id="m1", forget=False, ttl_ms=DAY) is False
    assert backend.dedup_release("k", token="", message_id="m1", forget=True, ttl_ms=DAY) is True
    assert backend.dedup_inspect("k") is None
    claim(backend)
    assert backend.dedup_release("k", token="", message_id="m1", forget=True, ttl_ms=DAY) is False


def test_reserve_takes_a_free_key_once(backend: StateBackend) -> None:
    """The first reservation wins; the next sees the holder, its state and its stored message."""
    stored = {"message_id": "m1", "actor_name": "charge", "args": [1], "kwargs": {}}
    first = backend.dedup_reserve(
        "k",
        message_id="m1",
        actor_name="charge",
        timeout_ms=30_000,
        payload="p",
        message=msgpack.packb(stored),
    )
    assert first == ReserveResult(reserved=True)
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.state, record.owner, record.confirmed, record.expires_at, record.claims) == (
        "pending",
        "m1",
        False,
        T0 + 30_000,
        0,
    )
    assert record.message == stored
    second = backend.dedup_reserve("k", message_id="m2", actor_name="charge", timeout_ms=30_000, payload="p")
    assert second == ReserveResult(
        reserved=False, owner="m1", state="pending", conflict=False, message=stored
    )
    third = backend.dedup_reserve("k", message_id="m3", actor_name="charge", timeout_ms=30_000, payload="q")
    assert (third.reserved, third.conflict) == (False, True)


def test_unconfirmed_reservation_times_out(backend: StateBackend, clock: FakeClock) -> None:
    """A reservation whose enqueue never happened frees the key after its timeout."""
    backend.dedup_reserve("k", message_id="m1", actor_name="charge", timeout_ms=30_000)
    clock.advance(30_000)
    assert backend.dedup_inspect("k") is None
    assert backend.dedup_reserve("k", message_id="m2", actor_name="charge", timeout_ms=30_000).reserved


def test_confirm_keeps_the_reservation_for_the_ttl(backend: StateBackend, clock: FakeClock) -> None:
    """Confirming the owner's unconfirmed reservation keeps it ttl_ms; anything else is refused."""
    backend.dedup_reserve("k", message_id="m1", actor_name="charge", timeout_ms=30_000)
    assert backend.dedup_confirm("k", message_id="m2", ttl_ms=DAY) is False
    clock.advance(10)
    assert backend.dedup_confirm("k", message_id="m1", ttl_ms=DAY) is True
    assert backend.dedup_confirm("k", message_id="m1", ttl_ms=DAY) is False
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.confirmed, record.expires_at) == (True, T0 + 10 + DAY)
    clock.advance(40_000)
    assert (
        backend.dedup_reserve("k", message_id="m2", actor_name="charge", timeout_ms=30_000).state == "pending"
    )


def test_confirm_after_the_worker_claimed_changes_nothing(backend: StateBackend) -> None:
    """A worker may claim before the producer confirms: the late confirm leaves the claim alone."""
    backend.dedup_reserve("k", message_id="m1", actor_name="charge", timeout_ms=30_000, payload="p")
    assert claim(backend) == ClaimResult("claimed", token="t1", state="pending", claims=1)
    assert backend.dedup_confirm("k", message_id="m1", ttl_ms=DAY) is False
    assert backend.dedup_inspect("k").state == "in_progress"  # type: ignore[union-attr]


def test_reserved_message_is_kept_through_claim_and_completion(backend: StateBackend) -> None:
    """The stored original message stays on the record while it runs and once completed."""
    backend.dedup_reserve(
        "k",
        message_id="m1",
        actor_name="charge",
        timeout_ms=30_000,
        message=msgpack.packb({"message_id": "m1"}),
    )
    claim(backend)
    assert backend.dedup_reserve("k", message_id="m2", actor_name="charge", timeout_ms=1).message == {
        "message_id": "m1"
    }
    backend.dedup_complete("k", token="t1", ttl_ms=DAY)
    answer = backend.dedup_reserve("k", message_id="m2", actor_name="charge", timeout_ms=1)
    assert (answer.state, answer.owner, answer.message) == ("completed", "m1", {"message_id": "m1"})


def test_forget_deletes_any_record_and_says_what_it_was(backend: StateBackend) -> None:
    """Forget returns the deleted record (None when there was none)."""
    claim(backend)
    forgotten = backend.dedup_forget("k")
    assert forgotten is not None
    assert (forgotten.state, forgotten.owner) == ("in_progress", "m1")
    assert backend.dedup_inspect("k") is None
    assert backend.dedup_forget("k") is None
    assert backend.dedup_complete("k", token="t1", ttl_ms=DAY) is False


def test_commit_applies_writes_and_completes_together(backend: StateBackend) -> None:
    """commit runs the caller's writes and completes the key; a stale token applies nothing."""
    claim(backend)
    effects: list[str] = []
    client = backend.client if isinstance(backend, RedisBackend) else None
    effect_key = f"{backend.namespace}:effects:{{k}}"

    def writes(tx: Any) -> None:
        if tx is None:
            effects.append("charged")
        else:
            tx.incr(effect_key)

    assert backend.dedup_commit("k", token="other", ttl_ms=DAY, writes=writes) is False
    assert backend.dedup_commit("k", token="t1", ttl_ms=DAY, writes=writes, result=msgpack.packb(7)) is True
    record = backend.dedup_inspect("k")
    assert record is not None
    assert (record.state, record.result) == ("completed", 7)
    assert backend.dedup_commit("k", token="t1", ttl_ms=DAY, writes=writes) is False
    if client is not None:
        assert client.get(effect_key) == b"1"
    else:
        assert effects == ["charged"]


def test_commit_survives_a_concurrent_renewal(redis_backend: RedisBackend, clock: FakeClock) -> None:
    """A renewal touching the record between the check and EXEC makes commit look again, not fail."""
    claim(redis_backend)
    renewed = []

    def writes(tx: Any) -> None:
        if not renewed:  # the first attempt: a renewal sneaks in before EXEC
            renewed.append(redis_backend.dedup_renew([RenewRequest("k", "t1", 1_000, DAY)]))
        tx.set(f"{redis_backend.namespace}:effect:{{k}}", "done")

    assert redis_backend.dedup_commit("k", token="t1", ttl_ms=DAY, writes=writes) is True
    assert renewed == [[True]]
    assert redis_backend.client.get(f"{redis_backend.namespace}:effect:{{k}}") == b"done"


def test_record_key_is_hash_tagged_by_the_dedup_key(redis_backend: RedisBackend) -> None:
    """The record lives at {ns}:dedup:{key}:record, in the key's Redis Cluster slot."""
    record_key = redis_backend.dedup_record_key("charge:order-1")
    assert record_key == f"{redis_backend.namespace}:dedup:{{charge:order-1}}:record"
    assert key_slot(record_key.encode()) == key_slot(b"{charge:order-1}:effects")
    claim(redis_backend, key="charge:order-1")
    assert redis_backend.client.type(record_key) == b"hash"
    assert 0 < redis_backend.client.pttl(record_key) <= 1_000 + DAY


def test_corrupt_record_raises_corrupt_record(redis_backend: RedisBackend) -> None:
    """A record whose stored message cannot be decoded names its key."""
    redis_backend.dedup_reserve("k", message_id="m1", actor_name="a", timeout_ms=30_000)
    redis_backend.client.hset(redis_backend.dedup_record_key("k"), "message", b"\xc1")
    with pytest.raises(CorruptRecord) as info:
        redis_backend.dedup_inspect("k")
    assert info.value.key == "k"


def test_dedup_operations_raise_backend_unavailable_when_down(down_backend: StateBackend) -> None:
    """Every dedup operation raises BackendUnavailable when the backend cannot be reached."""
    calls = [
        lambda: claim(down_backend),
        lambda: down_backend.dedup_renew([RenewRequest("k", "t", 1, 1)]),
        lambda: down_backend.dedup_complete("k", token="t", ttl_ms=1),
        lambda: down_backend.dedup_release("k", token="t", message_id="m", forget=True, ttl_ms=1),
        lambda: down_backend.dedup_reserve("k", message_id="m", actor_name="a", timeout_ms=1),
        lambda: down_backend.dedup_confirm("k", message_id="m", ttl_ms=1),
        lambda: down_backend.dedup_inspect("k"),
        lambda: down_backend.dedup_forget("k"),
        lambda: down_backend.dedup_commit("k", token="t", ttl_ms=1, writes=lambda tx: None),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable):
            call()


def corrupt(backend: StateBackend, key: str = "k") -> str:
    """Overwrite ``key``'s record with a string (as a stray ``SET`` would); return the expected problem."""
    if isinstance(backend, RedisBackend):
        record = backend.dedup_record_key(key)
        backend.client.set(record, "oops")
        return f"The record of deduplication key {key!r} (Redis key {record!r}) holds a string, not a hash"
    backend.data.setdefault("dedup", {})[key] = "oops"  # type: ignore[attr-defined]
    return f"The record of deduplication key {key!r} holds a str, not a mapping"


def test_a_record_of_another_type_is_a_corrupt_record(backend: StateBackend) -> None:
    """Every operation on a record of another type raises CorruptRecord naming the key; renew: not held."""
    problem = corrupt(backend)
    calls = [
        lambda: claim(backend),
        lambda: backend.dedup_complete("k", token="t1", ttl_ms=DAY),
        lambda: backend.dedup_release("k", token="t1", message_id="m1", forget=False, ttl_ms=DAY),
        lambda: backend.dedup_reserve("k", message_id="m1", actor_name="a", timeout_ms=1_000),
        lambda: backend.dedup_confirm("k", message_id="m1", ttl_ms=DAY),
        lambda: backend.dedup_inspect("k"),
        lambda: backend.dedup_commit("k", token="t1", ttl_ms=DAY, writes=lambda tx: None),
    ]
    for call in calls:
        with pytest.raises(CorruptRecord) as raised:
            call()
        assert (str(raised.value), raised.value.key) == (problem, "k")
    claim(backend, key="other", token="t2")
    renewals = [RenewRequest("k", "t1", 1_000, DAY), RenewRequest("other", "t2", 1_000, DAY)]
    assert backend.dedup_renew(renewals) == [False, True]


def test_forget_deletes_a_corrupt_record(backend: StateBackend) -> None:
    """forget deletes a record of another type (reporting none), so the key can be claimed again."""
    corrupt(backend)
    assert backend.dedup_forget("k") is None
    assert backend.dedup_inspect("k") is None
    assert claim(backend).outcome == "claimed"


class RoundTrips:
    """Counts the requests a redis-py client writes to its sockets (one per round trip)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = redis.connection.AbstractConnection.send_packed_command

        def counting(connection: Any, command: Any, check_health: bool = True) -> None:
            self.count += 1
            original(connection, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def test_round_trips_of_claim_commit_and_renewal(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim costs 1 round trip, a commit 2, a renewal of every claim 1 (3 once, after a script flush)."""
    claim(redis_backend, key="a", token="ta")
    claim(redis_backend, key="b", token="tb")
    requests = [RenewRequest("a", "ta", 1_000, DAY), RenewRequest("b", "tb", 1_000, DAY)]
    redis_backend.dedup_renew(requests)  # scripts loaded, connections open
    trips = RoundTrips(monkeypatch)
    assert claim(redis_backend, key="c", token="tc").outcome == "claimed"
    assert trips.take() == 1
    assert redis_backend.dedup_renew(requests) == [True, True]
    assert trips.take() == 1
    effect = f"{redis_backend.namespace}:effect:{{c}}"
    assert redis_backend.dedup_commit("c", token="tc", ttl_ms=DAY, writes=lambda tx: tx.incr(effect)) is True
    assert trips.take() == 2
    redis_backend.client.script_flush()
    trips.take()
    assert redis_backend.dedup_renew(requests) == [True, True]
    assert trips.take() == 3  # the pipeline, SCRIPT LOAD, the pipeline again
    assert redis_backend.client.get(effect) == b"1"
    record = redis_backend.dedup_inspect("c")
    assert record is not None and record.state == "completed"


def test_commit_works_after_a_script_flush(redis_backend: RedisBackend) -> None:
    """The completion inside MULTI cannot fail with NOSCRIPT after the writes (a restart, SCRIPT FLUSH)."""
    claim(redis_backend)
    redis_backend.client.script_flush()
    effect = f"{redis_backend.namespace}:effect:{{k}}"
    assert redis_backend.dedup_commit("k", token="t1", ttl_ms=DAY, writes=lambda tx: tx.incr(effect)) is True
    record = redis_backend.dedup_inspect("k")
    assert record is not None
    assert (record.state, redis_backend.client.get(effect)) == ("completed", b"1")


def test_commit_of_an_expired_claim_writes_nothing(redis_backend: RedisBackend, clock: FakeClock) -> None:
    """A claim whose record expired on the backend's clock commits nothing and answers False."""
    claim(redis_backend, ttl_ms=5_000)
    clock.advance(6_000)
    effect = f"{redis_backend.namespace}:effect:{{k}}"
    assert redis_backend.dedup_commit("k", token="t1", ttl_ms=DAY, writes=lambda tx: tx.incr(effect)) is False
    assert redis_backend.client.get(effect) is None
