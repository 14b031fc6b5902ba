"""``dramatiq-resilience dedup``: show or forget a deduplication key.

``dedup show KEY`` prints the key's record (state, holder, lease, result...);
``dedup forget KEY`` deletes it, so that the next message with the key runs
and the next unique send passes (a corrupt record, e.g. a Redis key of
another type, is deleted too).  Both take ``--json``.  Exit codes: 0 done,
1 no such key, a corrupt record shown, or the backend failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from ..backends.dedup import DedupRecord
from ..errors import BackendError, CorruptRecord
from .common import add_backend_arguments, backend_from_args

__all__ = ["format_record", "register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dedup",
        help="show or forget a deduplication key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="dedup_command", metavar="COMMAND")
    commands.required = True
    for name, handler, text in (
        ("show", _show, "show a key's record"),
        ("forget", _forget, "delete a key's record, whatever its state"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("key", metavar="KEY", help="the deduplication key, as dedup_key returns it")
        command.add_argument("--json", action="store_true", help="print the record as JSON")
        add_backend_arguments(command)
        command.set_defaults(handler=handler)


def _when(ms: int | None, now: int) -> str:
    if ms is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    seconds = abs(ms - now) / 1000
    span = (
        f"{seconds:.1f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
        if seconds < 7_200
        else f"{seconds / 3_600:.1f} h"
    )
    relative = f"in {span}" if ms >= now else f"{span} ago"
    return f"{stamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} ({relative})"


def format_record(record: DedupRecord, now: int) -> str:
    """A readable table of ``record``; times relative to ``now`` (ms)."""
    state: str = record.state
    if state == "pending" and not record.confirmed:
        state = "pending (reserved, enqueue not confirmed yet)"
    elif state == "in_progress" and record.lease_until is not None and record.lease_until <= now:
        state = "in_progress (lease ran out: the next claim takes it over)"
    rows = [
        ("key", record.key),
        ("state", state),
        ("message", record.owner),
        ("actor", record.actor_name),
        ("payload", record.payload or "- (no payload check)"),
        ("created", _when(record.created_at, now)),
        ("claims", f"{record.claims} ({record.takeovers} after an expired lease)"),
        ("claimed", _when(record.claimed_at, now)),
        ("lease until", _when(record.lease_until, now)),
        ("completed", _when(record.completed_at, now)),
        ("expires", _when(record.expires_at, now)),
        ("result", repr(record.result) if record.has_result else "-"),
        ("sent message", "stored" if record.message else "-"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _print(record: DedupRecord, args: argparse.Namespace, now: int, *, forgotten: bool = False) -> None:
    if args.json:
        print(json.dumps({**record.asdict(), "forgotten": forgotten}, default=repr, sort_keys=True))
        return
    if forgotten:
        print(f"Forgot deduplication key {record.key!r}. It was:")
    print(format_record(record, now))


def _run(args: argparse.Namespace, *, forget: bool) -> int:
    backend = backend_from_args(args)
    try:
        now = backend.now_ms()
        try:
            record = backend.dedup_inspect(args.key)
        except CorruptRecord as exc:
            return _corrupt(backend, args, exc, forget=forget)
        if forget:
            record = backend.dedup_forget(args.key)
    except BackendError as exc:
        print(f"Cannot reach the state backend at {args.redis}: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    if record is None:
        if args.json:
            print(json.dumps(None))
        print(
            f"No deduplication record for key {args.key!r} in namespace {args.namespace!r}.", file=sys.stderr
        )
        return 1
    _print(record, args, now, forgotten=forget)
    return 0


def _corrupt(backend: Any, args: argparse.Namespace, error: CorruptRecord, *, forget: bool) -> int:
    """A record that is not a record: ``show`` says so (exit 1), ``forget`` deletes it (exit 0)."""
    if forget:
        backend.dedup_forget(args.key)
    if args.json:
        print(json.dumps({"key": args.key, "corrupt": str(error), "forgotten": forget}, sort_keys=True))
    elif forget:
        print(f"Forgot deduplication key {args.key!r}, whose record was corrupt: {error}")
    else:
        print(
            f"{error}. Messages with this key are dead-lettered (CorruptDedupRecord) until it is "
            f"deleted: dramatiq-resilience dedup forget {args.key}",
            file=sys.stderr,
        )
    return 0 if forget else 1


def _show(args: argparse.Namespace) -> int:
    return _run(args, forget=False)


def _forget(args: argparse.Namespace) -> int:
    return _run(args, forget=True)
