"""Scheduler operations of the Redis backend: one Lua script per write (``lua/cron_*.lua``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from ..errors import BackendError, CorruptRecord
from .cron import (
    RUN_MEMORY,
    RUN_MEMORY_COUNT,
    CronClaim,
    CronJobState,
    CronOps,
    CronSend,
    InflightMessage,
    InflightSnapshot,
    job_state,
)
from .redis_base import RedisBase

__all__ = ["RedisCronOps"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sends(flat: Sequence[Any]) -> tuple[CronSend, ...]:
    return tuple(CronSend(int(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat), 2))


def _claim(answer: Sequence[Any]) -> CronClaim:
    status, previous, pending, recovered, expired = answer
    return CronClaim(
        status=_text(status),
        previous_ms=int(previous) if previous not in (b"", "") else None,
        pending_message_id=_text(pending) or None,
        recovered=_sends(recovered),
        expired=_sends(expired),
    )


class RedisCronOps(RedisBase, CronOps):
    """``CronOps`` on Redis.  Keys: ``cron:{<job>}:job``, ``:sending``, ``:runs`` and ``:started`` per job,
    ``cron:{index}:jobs`` and ``:requests``, ``cron:{inflight}:snapshots`` and ``:expiry``."""

    def _job_keys(self, name: str) -> list[str]:
        return [self.key("cron", name, "job"), self.key("cron", name, "sending")]

    def cron_register(self, name: str, spec: Mapping[str, str], *, next_run_ms: int | None) -> int | None:
        fields = [item for pair in spec.items() for item in (pair[0], str(pair[1]))]
        with self.errors():
            pipe = self.client.pipeline(transaction=False)
            self.run_script(
                "cron_register",
                self._job_keys(name)[:1],
                ["" if next_run_ms is None else next_run_ms, *fields],
                client=pipe,
            )
            pipe.sadd(self.key("cron", "index", "jobs"), name)
            last_fired, _ = pipe.execute()
        return None if last_fired is None else int(last_fired)

    def cron_claim(
        self,
        name: str,
        occurrence_ms: int | None,
        message_id: str,
        *,
        next_run_ms: int | None,
        skip_if_pending: bool,
        lease_ms: int,
        send_lease_ms: int,
        grace_ms: int,
        missed: bool = False,
    ) -> CronClaim:
        args = [
            "" if occurrence_ms is None else occurrence_ms,
            message_id,
            "" if next_run_ms is None else next_run_ms,
            "1" if skip_if_pending else "0",
            lease_ms,
            send_lease_ms,
            grace_ms,
            "1" if missed else "0",
        ]
        return _claim(self.run_script("cron_claim", self._job_keys(name), args))

    def cron_recover(self, graces: Mapping[str, int], *, send_lease_ms: int) -> dict[str, CronClaim]:
        if not graces:
            return {}
        # One round trip for every job of a scheduler's poll; each script stays one job's atomic step.
        with self.errors():
            pipe = self.client.pipeline(transaction=False)
            for name, grace in graces.items():
                args = ["", "", "", "0", 0, send_lease_ms, grace, "0"]
                self.run_script("cron_claim", self._job_keys(name), args, client=pipe)
            # One job's failing script (a corrupt key) must not stop the takeovers of the others.
            answers = pipe.execute(raise_on_error=False)
        failures = [answer for answer in answers if isinstance(answer, Exception)]
        if failures and len(failures) == len(answers):
            raise BackendError(f"Redis failed: {failures[0]}") from failures[0]
        return {
            name: _claim(answer)
            for name, answer in zip(graces, answers, strict=True)
            if not isinstance(answer, Exception)
        }

    def cron_sent(
        self, name: str, message_id: str, *, occurrence_ms: int | None = None, lease_ms: int | None = None
    ) -> None:
        self.run_script(
            "cron_sent",
            self._job_keys(name),
            [
                message_id,
                "" if occurrence_ms is None else occurrence_ms,
                "" if lease_ms is None else lease_ms,
            ],
        )

    def cron_started(self, name: str, message_id: str, *, lease_ms: int, send_id: str | None = None) -> bool:
        keys = [self._job_keys(name)[0], self.key("cron", name, "runs"), self.key("cron", name, "started")]
        args = [message_id, lease_ms, send_id or "", RUN_MEMORY, RUN_MEMORY_COUNT]
        return bool(self.run_script("cron_started", keys, args))

    def cron_run_started(self, name: str, message_id: str) -> bool:
        with self.errors():
            return bool(self.client.hexists(self.key("cron", name, "runs"), message_id))

    def cron_finished(
        self, name: str, message_id: str, *, status: str, error: str | None = None, keep_pending: bool = False
    ) -> None:
        self.run_script(
            "cron_finished",
            self._job_keys(name)[:1],
            [message_id, status, error or "", "1" if keep_pending else "0"],
        )

    def cron_set_enabled(self, name: str, enabled: bool) -> bool:
        return bool(self.run_script("cron_set_enabled", self._job_keys(name)[:1], ["1" if enabled else "0"]))

    def cron_request_run(self, name: str) -> bool:
        keys = [self.key("cron", "index", "jobs"), self.key("cron", "index", "requests")]
        return bool(self.run_script("cron_request_run", keys, [name]))

    def cron_take_requests(self, names: Sequence[str]) -> list[str]:
        if not names:
            return []
        taken = self.run_script("cron_take_requests", [self.key("cron", "index", "requests")], list(names))
        return [_text(name) for name in taken]

    def _states(self, names: Sequence[str]) -> list[CronJobState]:
        with self.errors():
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self._job_keys(name)[0])
            pipe.smembers(self.key("cron", "index", "requests"))
            *records, requested = pipe.execute()
        wanted = {_text(name) for name in requested}
        return [
            job_state(name, record, run_requested=name in wanted)
            for name, record in zip(names, records, strict=True)
        ]

    def cron_jobs(self) -> list[CronJobState]:
        with self.errors():
            names = sorted(_text(name) for name in self.client.smembers(self.key("cron", "index", "jobs")))
        return self._states(names)

    def cron_job(self, name: str) -> CronJobState | None:
        with self.errors():
            known = self.client.sismember(self.key("cron", "index", "jobs"), name)
        return self._states([name])[0] if known else None

    def _inflight_keys(self) -> list[str]:
        return [self.key("cron", "inflight", "snapshots"), self.key("cron", "inflight", "expiry")]

    def cron_inflight_publish(
        self, process: str, messages: Sequence[InflightMessage], *, ttl_ms: int
    ) -> None:
        blob = (
            msgpack.packb([[m.message_id, m.actor_name, m.queue_name, m.started_ms] for m in messages])
            if messages
            else b""
        )
        self.run_script("cron_inflight_publish", self._inflight_keys(), [process, blob, ttl_ms])

    def cron_inflight(self) -> list[InflightSnapshot]:
        flat = self.run_script("cron_inflight", self._inflight_keys(), [])
        snapshots = []
        for i in range(0, len(flat), 2):
            process = _text(flat[i])
            published, _, blob = bytes(flat[i + 1]).partition(b":")
            try:
                rows = msgpack.unpackb(blob)
                messages = tuple(InflightMessage(str(a), str(b), str(c), int(d)) for a, b, c, d in rows)
            except (ValueError, TypeError, msgpack.ExtraData) as exc:
                raise CorruptRecord(
                    f"Unreadable in-flight snapshot of process {process!r}: {exc}",
                    key=self._inflight_keys()[0],
                ) from None
            snapshots.append(InflightSnapshot(process, int(published), messages))
        return sorted(snapshots, key=lambda snapshot: snapshot.process)
