"""Scheduler operations of the in-memory backend.  See ``backends/cron.py`` for the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
from .stub_base import StubBase

__all__ = ["StubCronOps"]


class StubCronOps(StubBase, CronOps):
    """``CronOps`` on ``self.data["cron"]``, each operation under the backend's lock."""

    def _cron(self) -> dict[str, Any]:
        return self.data.setdefault(
            "cron",
            {"jobs": {}, "sending": {}, "runs": {}, "index": set(), "requests": set(), "inflight": {}},
        )

    def cron_register(self, name: str, spec: Mapping[str, str], *, next_run_ms: int | None) -> int | None:
        with self.atomic() as now:
            state = self._cron()
            record = state["jobs"].setdefault(name, {})
            record.update({key: str(value) for key, value in spec.items()})
            record["registered"] = str(now)
            record.setdefault("enabled", "1")
            if next_run_ms is not None:
                record["next_run"] = str(next_run_ms)
            state["index"].add(name)
            return int(record["last_fired"]) if "last_fired" in record else None

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
        with self.atomic() as now:
            state = self._cron()
            sending: dict[int, tuple[str, int]] = state["sending"].setdefault(name, {})
            recovered: list[CronSend] = []
            expired: list[CronSend] = []
            record = state["jobs"].get(name)
            for occurrence, (sent_id, until) in sorted(sending.items()):
                if until > now:
                    continue
                if occurrence < now - grace_ms:
                    del sending[occurrence]
                    expired.append(CronSend(occurrence, sent_id))
                    # Never confirmed sent: it must not block overlap="skip" until its lease ends.
                    if record is not None and record.get("pending_id") == sent_id:
                        record.pop("pending_id", None)
                        record.pop("pending_until", None)
                else:
                    sending[occurrence] = (sent_id, now + send_lease_ms)
                    recovered.append(CronSend(occurrence, sent_id))
            last = None if record is None or "last_fired" not in record else int(record["last_fired"])
            done: dict[str, Any] = {
                "recovered": tuple(recovered),
                "expired": tuple(expired),
                "previous_ms": last,
            }
            if occurrence_ms is None:
                return CronClaim("none", **done)
            if last is not None and occurrence_ms <= last:
                return CronClaim("taken", **done)
            if record is None:
                record = state["jobs"][name] = {"enabled": "1"}
            record["last_fired"] = str(occurrence_ms)
            if next_run_ms is not None:
                record["next_run"] = str(next_run_ms)
            if missed:
                return CronClaim("missed", **done)
            if record.get("enabled") == "0":
                return CronClaim("disabled", **done)
            pending = record.get("pending_id")
            if skip_if_pending and pending and int(record.get("pending_until", 0)) > now:
                return CronClaim("overlap", pending_message_id=pending, **done)
            record["pending_id"] = message_id
            record["pending_until"] = str(now + lease_ms)
            sending[occurrence_ms] = (message_id, now + send_lease_ms)
            return CronClaim("claimed", **done)

    def cron_sent(
        self, name: str, message_id: str, *, occurrence_ms: int | None = None, lease_ms: int | None = None
    ) -> None:
        with self.atomic() as now:
            state = self._cron()
            if occurrence_ms is not None:
                state["sending"].get(name, {}).pop(occurrence_ms, None)
            record = state["jobs"].get(name)
            if record is None:
                return
            record["last_run"] = str(now)
            if record.get("last_message_id") != message_id:
                # A fast worker may have reported this run already: keep its status.
                record["last_message_id"] = message_id
                record["last_status"] = "queued"
                if lease_ms is not None:
                    record["pending_id"] = message_id
                    record["pending_until"] = str(now + lease_ms)

    def cron_started(self, name: str, message_id: str, *, lease_ms: int, send_id: str | None = None) -> bool:
        with self.atomic() as now:
            state = self._cron()
            record = state["jobs"].get(name)
            if record is None:
                return True
            if send_id:
                runs: dict[str, tuple[str, int]] = state["runs"].setdefault(name, {})
                first = runs.get(message_id)
                if first is not None and first[0] != send_id:
                    return False
                if first is None:
                    runs[message_id] = (send_id, now)
                    self._forget_runs(runs, now)
            record["last_status"] = "running"
            record["last_message_id"] = message_id
            if record.get("pending_id") == message_id:
                record["pending_until"] = str(now + lease_ms)
            return True

    def cron_run_started(self, name: str, message_id: str) -> bool:
        with self.atomic():
            return message_id in self._cron()["runs"].get(name, {})

    @staticmethod
    def _forget_runs(runs: dict[str, tuple[str, int]], now: int) -> None:
        """Trim like cron_started.lua: runs past RUN_MEMORY, 100 at a time, then the oldest past the count."""
        by_age = sorted(runs, key=lambda message_id: (runs[message_id][1], message_id))
        forget = [message_id for message_id in by_age if runs[message_id][1] <= now - RUN_MEMORY][:100]
        extra = len(runs) - len(forget) - RUN_MEMORY_COUNT
        if extra > 0:
            forget += by_age[len(forget) : len(forget) + extra]
        for message_id in forget:
            del runs[message_id]

    def cron_finished(
        self, name: str, message_id: str, *, status: str, error: str | None = None, keep_pending: bool = False
    ) -> None:
        with self.atomic() as now:
            record = self._cron()["jobs"].get(name)
            if record is None:
                return
            record["last_status"] = status
            record["last_message_id"] = message_id
            record["last_finished"] = str(now)
            if error is not None:
                record["last_error"] = error
                record["last_error_ms"] = str(now)
            if not keep_pending and record.get("pending_id") == message_id:
                record.pop("pending_id", None)
                record.pop("pending_until", None)

    def cron_set_enabled(self, name: str, enabled: bool) -> bool:
        with self.atomic():
            record = self._cron()["jobs"].get(name)
            if record is None:
                return False
            record["enabled"] = "1" if enabled else "0"
            return True

    def cron_request_run(self, name: str) -> bool:
        with self.atomic():
            state = self._cron()
            if name not in state["index"]:
                return False
            state["requests"].add(name)
            return True

    def cron_take_requests(self, names: Sequence[str]) -> list[str]:
        with self.atomic():
            requests: set[str] = self._cron()["requests"]
            taken = [name for name in names if name in requests]
            requests.difference_update(taken)
            return taken

    def cron_jobs(self) -> list[CronJobState]:
        with self.atomic():
            state = self._cron()
            return [
                job_state(name, state["jobs"].get(name, {}), run_requested=name in state["requests"])
                for name in sorted(state["index"])
            ]

    def cron_job(self, name: str) -> CronJobState | None:
        with self.atomic():
            state = self._cron()
            if name not in state["index"]:
                return None
            return job_state(name, state["jobs"].get(name, {}), run_requested=name in state["requests"])

    def cron_inflight_publish(
        self, process: str, messages: Sequence[InflightMessage], *, ttl_ms: int
    ) -> None:
        with self.atomic() as now:
            inflight = self._cron()["inflight"]
            if messages:
                inflight[process] = (now, now + ttl_ms, tuple(messages))
            else:
                inflight.pop(process, None)

    def cron_inflight(self) -> list[InflightSnapshot]:
        with self.atomic() as now:
            inflight = self._cron()["inflight"]
            for process in [p for p, (_, expires, _) in inflight.items() if expires <= now]:
                del inflight[process]
            return [
                InflightSnapshot(process, published, messages)
                for process, (published, _, messages) in sorted(inflight.items())
            ]
