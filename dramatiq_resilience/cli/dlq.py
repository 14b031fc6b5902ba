"""``dramatiq-resilience dlq``: inspect, requeue, purge, export and import dead letters.

Every subcommand reads the store from ``--redis URL`` (and ``--namespace``),
or from ``--app MODULE``: the module that builds your broker and calls
``dr.install(...)``; its ``DeadLetters`` store (and retention, redrive
policies) is then used.  ``requeue``, ``import`` and ``redrive`` also need
the broker: ``--broker-url redis://...`` (with ``--broker-namespace``, default
``dramatiq``) or ``amqp://...``, or the app's broker with ``--app``.

Filters (list, requeue, purge, export): ``--actor``, ``--queue``,
``--error-type`` (a short name like ``CardDeclined`` matches the full
``module.CardDeclined``), ``--category`` (each repeatable), ``--status``,
``--since`` and ``--until`` (an ISO time, milliseconds since the epoch, or an
age such as ``30m``, ``2h``, ``7d``).

Exit codes: 0 success, 1 failure (not found, unreadable, enqueue failed or
unconfirmed, backend unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ..dead_letters.query import DeadLetterFilter
from ..dead_letters.record import CATEGORIES, DeadLetterRecord, UnreadableRecord
from ..dead_letters.store import DeadLetterStore
from ..errors import BackendError, ConfigurationError
from .common import add_backend_arguments, backend_from_args, import_app
from .progress import ProgressBar

__all__ = ["parse_time", "register"]

_AGE = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def parse_time(text: str, now_ms: int) -> int:
    """``text`` in milliseconds since the epoch: an age (``2h``), an integer, or an ISO time (naive: UTC)."""
    text = text.strip()
    age = _AGE.match(text)
    if age:
        return now_ms - int(age.group(1)) * _UNITS[age.group(2)]
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}: use an ISO time, milliseconds since the epoch, or an age like 2h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    """Print ``rows`` under ``headers`` in aligned columns (the last column is not padded)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        print("  ".join([*padded, row[-1]]).rstrip(), file=out)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- resolving the store and the broker -------------------------------------------------


def _app_broker(args: argparse.Namespace) -> Any:
    import dramatiq

    import_app(args.app)
    return dramatiq.get_broker()


def store_from(args: argparse.Namespace) -> DeadLetterStore:
    """The app's store (``--app``), unless ``--redis`` names another backend."""
    if args.app and not args.redis:
        from ..install import installed

        stack = installed(_app_broker(args))
        middleware = stack.middleware.get("dead_letters") if stack is not None else None
        if middleware is None:
            raise UsageError(f"the app {args.app!r} has no DeadLetters installed; give --redis URL instead")
        store = getattr(middleware, "store", None)
        assert isinstance(store, DeadLetterStore)
        return store
    if not args.redis:
        args.redis = args.default_redis
    return DeadLetterStore(backend_from_args(args))


def broker_from(args: argparse.Namespace) -> Any:
    """The broker to enqueue into or import from: ``--broker-url`` or the app's."""
    url = args.broker_url
    if url:
        if url.startswith(("redis://", "rediss://", "unix://")):
            from dramatiq.brokers.redis import RedisBroker

            return RedisBroker(url=url, namespace=args.broker_namespace)
        if url.startswith(("amqp://", "amqps://")):
            from dramatiq.brokers.rabbitmq import RabbitmqBroker

            return RabbitmqBroker(url=url, confirm_delivery=True)
        raise UsageError(f"--broker-url must be a redis:// or amqp:// URL, got {url!r}")
    if args.app:
        return _app_broker(args)
    raise UsageError("this command needs the broker: give --broker-url URL or --app MODULE")


def filter_from(args: argparse.Namespace, store: DeadLetterStore) -> DeadLetterFilter:
    now = store.now()
    return DeadLetterFilter(
        actor=args.actor or None,
        queue=args.queue or None,
        error_type=args.error_type or None,
        category=args.category or None,
        status=args.status,
        since=None if args.since is None else parse_time(args.since, now),
        until=None if args.until is None else parse_time(args.until, now),
    )


def _has_filter(args: argparse.Namespace) -> bool:
    return any((args.actor, args.queue, args.error_type, args.category, args.since, args.until))


# -- subcommands -----------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    store = store_from(args)
    page = store.list(
        filter_from(args, store), limit=args.limit, cursor=args.cursor, newest_first=not args.oldest_first
    )
    if args.json:
        print(
            json.dumps({"items": [item.to_dict() for item in page], "cursor": page.cursor}, indent=2),
            file=out,
        )
        return 0
    rows: list[tuple[Any, ...]] = []
    for item in page:
        if isinstance(item, UnreadableRecord):
            rows.append(
                (
                    item.record_id,
                    when(item.last_failure_at),
                    "UNREADABLE",
                    item.category or "-",
                    item.actor_name or "-",
                    item.queue_name or "-",
                    "-",
                    _clip(item.problem, 70),
                )
            )
        else:
            error = f"{item.error_type.rsplit('.', 1)[-1]}: {item.error_message}"
            rows.append(
                (
                    item.record_id,
                    when(item.last_failure_at),
                    item.status,
                    item.category,
                    item.actor_name,
                    item.queue_name,
                    item.attempts,
                    _clip(error, 70),
                )
            )
    if rows:
        table(rows, ("ID", "FAILED", "STATUS", "CATEGORY", "ACTOR", "QUEUE", "ATTEMPTS", "ERROR"), out)
    print(
        f"{len(page)} record(s)." + (f" Next page: --cursor {page.cursor}" if page.cursor else ""), file=out
    )
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    store = store_from(args)
    item = store.get_item(args.id)
    if item is None:
        print(f"No dead letter {args.id!r}.", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(item.to_dict(), indent=2, sort_keys=True), file=out)
        return 0 if item.readable else 1
    if isinstance(item, UnreadableRecord):
        print(f"Dead letter {item.record_id!r} is UNREADABLE: {item.problem}", file=out)
        print(
            f"  index: status={item.status} failed={when(item.last_failure_at)} actor={item.actor_name} "
            f"queue={item.queue_name} error={item.error_type} category={item.category}",
            file=out,
        )
        print("  It can be purged (dlq purge ID); it cannot be requeued.", file=out)
        return 1
    _show(item, out)
    return 0


def _show(record: DeadLetterRecord, out: TextIO) -> None:
    fields = [
        ("record", record.record_id),
        ("status", record.status),
        ("message", record.message_id),
        ("actor", record.actor_name),
        ("queue", record.queue_name),
        ("category", record.category),
        ("error", f"{record.error_type}: {record.error_message}"),
        ("attempts", record.attempts),
        ("first failure", when(record.first_failure_at)),
        ("last failure", when(record.last_failure_at)),
        ("enqueued", when(record.message_timestamp)),
        ("host", f"{record.host} (pid {record.pid})"),
        ("version", record.version),
        ("source", record.source),
        ("redacted", ", ".join(record.redacted) or "-"),
    ]
    for name, value in fields:
        print(f"{name + ':':<15}{value}", file=out)
    for name, value in (("args", list(record.args)), ("kwargs", record.kwargs), ("options", record.options)):
        print(f"{name + ':':<15}{json.dumps(value, default=repr, sort_keys=True)}", file=out)
    for redrive in record.redrives:
        print(
            f"{'redrive:':<15}{when(redrive.at)} {redrive.reason} to {redrive.queue_name} "
            f"(record {redrive.record_id}, host {redrive.host or '-'})",
            file=out,
        )
    for link in record.chain:
        print(f"{link.relation + ':':<15}{link.error_type}: {link.error_message}", file=out)
    print("\n" + (record.traceback.rstrip() or "(no traceback)"), file=out)


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    stats = store_from(args).stats(window=args.window)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2), file=out)
        return 0
    print(
        f"dead: {stats.dead}   requeued: {stats.requeued}   being requeued: {stats.claimed}   "
        f"total: {stats.total}",
        file=out,
    )
    print(f"oldest dead: {when(stats.oldest_at)}   newest dead: {when(stats.newest_at)}", file=out)
    print(
        f"last {stats.window_ms // 60_000} min: {stats.recent} failures ({stats.growth_per_minute}/min)",
        file=out,
    )
    for title, counts in (
        ("CATEGORY", stats.by_category),
        ("ACTOR", stats.by_actor),
        ("QUEUE", stats.by_queue),
        ("ERROR TYPE", stats.by_error_type),
    ):
        if counts:
            print(file=out)
            table(list(counts.items()), (title, "DEAD"), out)
    return 0


def _selection(
    args: argparse.Namespace, store: DeadLetterStore
) -> tuple[list[str] | None, DeadLetterFilter | None]:
    if args.ids and (_has_filter(args) or args.all):
        raise UsageError("give record ids, or filters (or --all), not both")
    if args.ids:
        return list(args.ids), None
    if not (_has_filter(args) or args.all):
        raise UsageError("give record ids, filters, or --all to select every record")
    return None, filter_from(args, store)


def _progress(args: argparse.Namespace, label: str) -> ProgressBar:
    return ProgressBar(label, enabled=args.progress)


def cmd_requeue(args: argparse.Namespace, out: TextIO) -> int:
    store = store_from(args)
    ids, flt = _selection(args, store)
    broker = None if args.dry_run and not (args.broker_url or args.app) else broker_from(args)
    with _progress(args, "requeue") as bar:
        report = store.requeue(
            ids,
            broker=broker,
            filter=flt,
            queue=args.to_queue,
            rate=args.rate,
            dry_run=args.dry_run,
            allow_redacted=args.allow_redacted,
            limit=args.limit,
            progress=bar.update,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        verb = "Would requeue" if args.dry_run else "Requeued"
        print(
            f"{verb} {report.count} record(s); {len(report.skipped)} skipped, {len(report.failed)} failed"
            + (f", {len(report.unconfirmed)} UNCONFIRMED." if report.unconfirmed else "."),
            file=out,
        )
        if report.unconfirmed:
            print(
                "Unconfirmed records stay claimed: check whether their messages were enqueued; `dlq trim` "
                "puts them back to dead after the claim timeout, and requeueing them then may enqueue "
                "them twice.",
                file=out,
            )
        rows = [(i, "UNCONFIRMED", why) for i, why in report.unconfirmed.items()]
        rows += [(i, "FAILED", why) for i, why in report.failed.items()]
        rows += [(i, "skipped", why) for i, why in report.skipped.items()]
        if rows:
            table(rows[:50], ("ID", "OUTCOME", "WHY"), out)
            if len(rows) > 50:
                print(f"... and {len(rows) - 50} more (use --json for all).", file=out)
    not_found = ids is not None and report.count == 0 and bool(report.skipped)
    return 1 if report.failed or report.unconfirmed or not_found else 0


def cmd_purge(args: argparse.Namespace, out: TextIO) -> int:
    store = store_from(args)
    ids, flt = _selection(args, store)
    with _progress(args, "purge") as bar:
        report = store.purge(ids, filter=flt, dry_run=args.dry_run, progress=bar.update)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        verb = "Would purge" if args.dry_run else "Purged"
        print(f"{verb} {len(report.removed)} record(s); {len(report.skipped)} skipped.", file=out)
        if report.skipped:
            table(list(report.skipped.items())[:50], ("ID", "WHY"), out)
    return 1 if ids is not None and not report.removed and report.skipped else 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    store = store_from(args)
    flt = filter_from(args, store)
    with _progress(args, "export") as bar:
        if args.output in (None, "-"):
            count = store.export(out, flt, progress=bar.update)
        else:
            with open(args.output, "w", encoding="utf-8") as target:
                count = store.export(target, flt, progress=bar.update)
    print(f"Exported {count} record(s).", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    store = store_from(args)
    broker = broker_from(args)
    with _progress(args, "import") as bar:
        report = store.import_from(broker, queues=args.queue or None, limit=args.limit, progress=bar.update)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
        return 0
    rows = [
        (q.queue_name, q.before, q.imported, q.already_stored, q.undecodable, q.after)
        for q in report.queues.values()
    ]
    if rows:
        table(rows, ("QUEUE", "BEFORE", "IMPORTED", "ALREADY STORED", "UNDECODABLE", "LEFT"), out)
    replaced = sum(q.replaced_unreadable for q in report.queues.values())
    print(
        f"Imported {report.imported} dead letter(s) from {report.broker}"
        + (f" ({replaced} replacing unreadable records)" if replaced else "")
        + f"; {report.already_stored} were already stored.",
        file=out,
    )
    return 0


def cmd_trim(args: argparse.Namespace, out: TextIO) -> int:
    report = store_from(args).trim(max_age=args.max_age, max_count=args.max_count)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
        return 0
    print(
        f"Removed {report.removed} record(s): {report.by_age} older than {report.max_age_ms} ms, "
        f"{report.by_count} beyond {report.max_count}; released {report.released_claims} stale claim(s).",
        file=out,
    )
    return 0


def cmd_redrive(args: argparse.Namespace, out: TextIO) -> int:
    store = store_from(args)
    if not store.redrive:
        raise UsageError(
            "no redrive policies: configure DeadLetters(redrive=[...]) in the app given with --app"
        )
    report = store.redrive_due(broker_from(args), limit=args.limit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        rows = []
        for name, result in report.policies.items():
            reasons = Counter(result.skipped.values())
            why = ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items())) or "-"
            rows.append((name, result.count, len(result.skipped), len(result.failed), why))
        table(rows, ("POLICY", "REQUEUED", "SKIPPED", "FAILED", "WHY SKIPPED"), out)
    return 1 if any(r.failed or r.unconfirmed for r in report.policies.values()) else 0


# -- parser ----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, broker: bool = False) -> None:
    add_backend_arguments(parser)
    # --redis keeps its environment default in default_redis; None here means "not given",
    # so that --app can supply the store.
    parser.set_defaults(default_redis=parser.get_default("redis"), redis=None)
    parser.add_argument(
        "--app", metavar="MODULE", help="import MODULE (your broker set-up) for its store and broker"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    if broker:
        parser.add_argument("--broker-url", metavar="URL", help="the broker: redis://... or amqp://...")
        parser.add_argument(
            "--broker-namespace", default="dramatiq", help="RedisBroker namespace (default %(default)s)"
        )


def _filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--actor", action="append", default=[], help="actor name (repeatable)")
    group.add_argument("--queue", action="append", default=[], help="queue name (repeatable)")
    group.add_argument("--error-type", action="append", default=[], help="exception type (repeatable)")
    group.add_argument(
        "--category", action="append", default=[], choices=CATEGORIES, help="category (repeatable)"
    )
    group.add_argument(
        "--status", default="dead", choices=("dead", "requeued", "any"), help="default %(default)s"
    )
    group.add_argument("--since", help="failed at or after: ISO time, epoch ms, or an age (2h)")
    group.add_argument("--until", help="failed before: ISO time, epoch ms, or an age (30m)")


def _bulk(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID", help="record ids (or use filters / --all)")
    parser.add_argument("--all", action="store_true", help="every record the filters (if any) select")
    parser.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    parser.add_argument(
        "--progress", action="store_true", default=None, help="show a progress bar (default: on a terminal)"
    )


Handler = Callable[[argparse.Namespace, TextIO], int]


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args, sys.stdout)
        except UsageError as exc:
            print(f"dramatiq-resilience dlq {args.dlq_command}: {exc}", file=sys.stderr)
            return 2
        except ConfigurationError as exc:
            print(f"dramatiq-resilience dlq {args.dlq_command}: {exc}", file=sys.stderr)
            return 2
        except BackendError as exc:
            print(
                f"dramatiq-resilience dlq {args.dlq_command}: the state backend failed: {exc}",
                file=sys.stderr,
            )
            return 1

    return run


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="dead letters: list, show, stats, requeue, purge, export, import, trim, redrive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="dlq_command", metavar="COMMAND")
    commands.required = True

    sub = commands.add_parser("list", help="list dead letters, newest first")
    _common(sub)
    _filters(sub)
    sub.add_argument("--limit", type=int, default=50, help="records per page (default %(default)s)")
    sub.add_argument("--cursor", help="the cursor printed by the previous page")
    sub.add_argument("--oldest-first", action="store_true")
    sub.set_defaults(handler=_run(cmd_list))

    sub = commands.add_parser("show", help="show one record with its traceback")
    _common(sub)
    sub.add_argument("id", metavar="ID")
    sub.set_defaults(handler=_run(cmd_show))

    sub = commands.add_parser("stats", help="counts by status, category, actor, queue, error type")
    _common(sub)
    sub.add_argument(
        "--window", type=int, default=600_000, help="ms for the growth rate (default %(default)s)"
    )
    sub.set_defaults(handler=_run(cmd_stats))

    sub = commands.add_parser("requeue", help="enqueue records again (each once), resetting retries")
    _common(sub, broker=True)
    _filters(sub)
    _bulk(sub)
    sub.add_argument("--to-queue", metavar="QUEUE", help="enqueue on this queue instead of the record's")
    sub.add_argument("--rate", type=float, help="at most this many messages per second")
    sub.add_argument("--limit", type=int, help="requeue at most this many")
    sub.add_argument(
        "--allow-redacted", action="store_true", help="also requeue records with redacted arguments"
    )
    sub.set_defaults(handler=_run(cmd_requeue))

    sub = commands.add_parser("purge", help="delete records")
    _common(sub)
    _filters(sub)
    _bulk(sub)
    sub.set_defaults(handler=_run(cmd_purge))

    sub = commands.add_parser("export", help="write records as JSON lines")
    _common(sub)
    _filters(sub)
    sub.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    sub.add_argument("--progress", action="store_true", default=None, help="show a progress bar")
    sub.set_defaults(handler=_run(cmd_export))

    sub = commands.add_parser(
        "import", help="move the broker's dead-letter queues (<queue>.XQ) into the store"
    )
    _common(sub, broker=True)
    sub.add_argument(
        "--queue", action="append", default=[], help="queue to import (repeatable; default: all)"
    )
    sub.add_argument("--limit", type=int, help="at most this many per queue")
    sub.add_argument("--progress", action="store_true", default=None, help="show a progress bar")
    sub.set_defaults(handler=_run(cmd_import))

    sub = commands.add_parser("trim", help="apply retention now")
    _common(sub)
    sub.add_argument("--max-age", type=int, help="milliseconds (default: the store's, 30 days)")
    sub.add_argument("--max-count", type=int, help="records (default: the store's, 100000)")
    sub.set_defaults(handler=_run(cmd_trim))

    sub = commands.add_parser("redrive", help="requeue what the app's redrive policies say is due")
    _common(sub, broker=True)
    sub.add_argument("--limit", type=int, help="requeue at most this many")
    sub.set_defaults(handler=_run(cmd_redrive))
