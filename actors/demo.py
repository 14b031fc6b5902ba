"""The demo's scenes, run by ``dramatiq-resilience demo``.

Each scene sends work to the app, waits for it, and returns summary lines.
"""

from __future__ import annotations

import itertools
import time
import zlib
from typing import Any

import dramatiq_resilience as dr

from . import gateway, maintenance, payments, reports, webhooks
from .config import backend, ledger, stack


def dead_lettered(ctx: Any, queue_name: str) -> int:
    """How many messages of ``queue_name`` the broker dead-lettered."""
    broker = ctx.broker
    if ctx.mode == "in-process":
        return len(broker.dead_letters_by_queue[queue_name])
    return int(broker.client.zcard(f"{broker.namespace}:{queue_name}.XQ"))


def payments_scene(ctx: Any) -> list[str]:
    """Payments through a flaky gateway"""
    orders = [f"order-{n:03d}" for n in range(1, 13)]
    declined = {"order-004", "order-009"}
    for order_id in orders:
        card = gateway.DECLINED_CARD if order_id in declined else gateway.GOOD_CARD
        payments.charge.send(order_id, "acme", 1_999, card)
    ctx.say(f"sent {len(orders)} charges ({len(declined)} with a declined card)")
    ctx.join("payments")
    charges = ledger.table("charges")
    calls = sum(ledger.table("gateway_calls").values())
    return [
        f"{len(orders)} charges sent, {len(charges)} orders charged, "
        f"{sum(1 for n in charges.values() if n > 1)} charged twice",
        f"{calls} gateway calls: {calls - len(orders)} retries after gateway timeouts",
        f"{dead_lettered(ctx, 'payments')} declined cards dead-lettered without a retry (throws=)",
    ]


def calm_orders(prefix: str, count: int) -> list[str]:
    """Order ids whose first gateway call does not time out (see ``gateway.charge``).

    The outage scene is about the outage: its only failures are the gateway being down.
    """
    ids = (f"{prefix}-{n:03d}" for n in range(1, 1_000))
    return [order for order in ids if zlib.crc32(order.encode()) % 4][:count]


def gateway_outage_scene(ctx: Any) -> list[str]:
    """A gateway outage behind the payments-gateway breaker"""
    breaker = stack.breaker
    name = "payments-gateway"
    # Workers send successes in batches (at most flush_ms late); let the last
    # scene's batches arrive so that this one starts from a settled window.
    if ctx.mode == "in-process":
        breaker.flush()
    else:
        time.sleep((breaker.local.flush_ms + 500) / 1000)
    start = breaker.status(name).epoch
    orders = calm_orders("outage", 20)
    first, rest = orders[:5], orders[5:]

    ledger.set_switch("gateway", "down")
    for order_id in first:
        payments.charge.send(order_id, "acme", 2_500)
    ctx.wait_for(lambda: breaker.status(name).state == "open", timeout=30)
    ctx.say(f"gateway down: {len(first)} charges failed and the breaker opened")
    for order_id in rest:
        payments.charge.send(order_id, "acme", 2_500)
    ctx.say(f"sent {len(rest)} more charges while it is open: they are deferred, not run")

    def failed_probe() -> bool:
        return any(t.reason == "probe_failed" and t.epoch > start for t in breaker.admin.history(name))

    ctx.wait_for(failed_probe, timeout=30)
    ctx.say("a probe failed (the gateway is still down); the breaker reopened for twice as long")
    ledger.set_switch("gateway", "up")
    ctx.say("gateway back up")
    ctx.wait_for(lambda: breaker.status(name).state == "closed", timeout=30)
    ctx.join("payments")

    history = [t for t in reversed(breaker.admin.history(name)) if t.epoch > start]
    charged = ledger.table("charges")
    calls = sum(ledger.table("gateway_calls").get(order_id, 0) for order_id in orders)
    deferred = ledger.table("deferred_messages")
    opened = history[0]
    steps = ", ".join(
        f"{t.to_state.replace('_', '-')}" + (f" ({t.cooldown_ms} ms)" if t.to_state == "open" else "")
        for t in history
    )
    probes = [t for t in history if t.from_state == "half_open"]
    return [
        f"breaker opened after {opened.failures} failures in {opened.calls} calls; then: {steps}",
        f"{len(probes)} probes: {sum(t.reason == 'probe_failed' for t in probes)} failed while the gateway "
        f"was down, {sum(t.reason == 'probes_succeeded' for t in probes)} succeeded and closed it",
        f"{len(orders)} charges sent, {len(deferred)} deferred at least once, "
        f"{sum(1 for o in orders if charged.get(o, 0) == 1)} charged once, "
        f"{sum(1 for o in orders if charged.get(o, 0) > 1)} charged twice, "
        f"{dead_lettered(ctx, 'payments') - 2} dead-lettered",
        f"{calls} gateway calls: {len(orders)} charges, {len(first)} failures before it opened, "
        f"{calls - len(orders) - len(first)} failed probe; {calls - len(orders)} retries spent, "
        "all on real failures, none on deferrals",
    ]


def dead_letters_scene(ctx: Any) -> list[str]:
    """Dead letters: declined charges kept, one requeued"""
    store = ctx.app.stack.dead_letters.store
    # A worker records a dead letter right after rejecting it; give the last one a moment.
    rejected = dead_lettered(ctx, "payments")
    ctx.wait_for(lambda: store.stats().by_actor.get("charge", 0) >= rejected, timeout=10)
    declined = [r for r in store.iterate({"actor": "charge"}) if r.readable]
    kinds = sorted({(r.category, r.error_type.rsplit(".", 1)[-1], r.attempts) for r in declined})
    ctx.say(f"{len(declined)} dead letters in the store: {kinds}")
    ledger.set_switch("declines", "lifted")
    [record] = [r for r in declined if r.args[0] == "order-004"]
    ctx.say(f"the bank lifted the block on order-004's card: requeue dead letter {record.record_id}")
    first = store.requeue([record.record_id], broker=ctx.broker)
    second = store.requeue([record.record_id], broker=ctx.broker)
    ctx.wait_for(lambda: ledger.get("charges", "order-004") == 1, timeout=30)
    ctx.join("payments")
    stats = store.stats()
    left = [r.args[0] for r in store.iterate() if r.readable]
    return [
        f"{len(declined)} declined charges recorded: "
        + ", ".join(f"{category} {error} after {attempts} attempt(s)" for category, error, attempts in kinds),
        f"order-004 requeued: {first.count} enqueued; requeued again: {second.count} enqueued "
        f"({second.skipped[record.record_id]}); then charged {ledger.get('charges', 'order-004')} time(s)",
        f"store: {stats.dead} dead ({', '.join(left)}), {stats.requeued} requeued",
    ]


def most_in_any_window(starts: dict[str, int], per_ms: int) -> int:
    """The most starts in any sliding window of ``per_ms`` (starts: time in ms -> how many)."""
    times = sorted(int(t) for t, count in starts.items() for _ in range(count))
    return max((sum(1 for t in times if first <= t < first + per_ms) for first in times), default=0)


def webhooks_scene(ctx: Any) -> list[str]:
    """Webhooks for three tenants"""
    tenants = ("acme", "globex", "initech")
    limit = webhooks.TENANT_WEBHOOKS
    for n in range(30):
        tenant = tenants[n % 3]
        webhooks.deliver_webhook.send(tenant, f"evt-{n:03d}", {"type": "invoice.paid", "n": n})
    ctx.say(f"sent a burst of 30 webhooks, 10 per tenant; each tenant takes {limit.count} per second")
    ctx.join("webhooks")
    by_tenant = ledger.table("webhooks_by_tenant")
    busiest = max(most_in_any_window(ledger.table(f"webhook_starts:{t}"), limit.per) for t in tenants)
    deferred = ledger.table("webhook_deferred")
    ctx.say(f"{sum(deferred.values())} deferrals in all while the burst drained")
    return [
        ", ".join(f"{tenant}: {by_tenant.get(tenant, 0)} delivered" for tenant in tenants),
        f"at most {busiest} deliveries per tenant in any 1-second window (limit {limit.count} per second)",
        f"{len(deferred)} over the limit were deferred, not failed: "
        f"{dead_lettered(ctx, 'webhooks')} dead-lettered, "
        f"{sum(ledger.table('webhook_deliveries').values()) - 30} delivered twice",
    ]


def maintenance_scene(ctx: Any) -> list[str]:
    """Maintenance jobs"""
    maintenance.purge_expired_sessions.send()
    ctx.join("maintenance")
    return [f"purge_expired_sessions ran {ledger.get('maintenance', 'purge_expired_sessions')} time(s)"]


def duplicates_scene(ctx: Any) -> list[str]:
    """Duplicate webhooks and a double-clicked payment"""
    events = [(("acme", "globex")[n % 2], f"evt-dup-{n:02d}") for n in range(10)]
    for tenant, event_id in events:  # the provider delivers every event twice, back to back
        for _ in range(2):
            webhooks.deliver_webhook.send(tenant, event_id, {"type": "invoice.paid"})
    ctx.join("webhooks")
    for tenant, event_id in events[:4]:  # and four of them once more, much later
        webhooks.deliver_webhook.send(tenant, event_id, {"type": "invoice.paid"})
    received = 2 * len(events) + 4
    ctx.say(f"received {received} webhook deliveries of {len(events)} events")

    first = dr.send_unique(payments.charge, "order-101", "acme", 4_999)
    second = dr.send_unique(payments.charge, "order-101", "acme", 4_999)  # the double click
    try:
        payments.charge.send("order-101", "acme", 4_999)
        refused = "was sent"
    except dr.DuplicateMessage:
        refused = "was refused (DuplicateMessage)"
    ctx.join("webhooks", "payments")

    deliveries = ledger.table("webhook_deliveries")
    delivered = [deliveries.get(event_id, 0) for _, event_id in events]
    skipped = received - sum(delivered) - dead_lettered(ctx, "webhooks")
    charged = ledger.get("charges", "order-101")
    same = "the same message" if second.message_id == first.message_id else "another message"
    return [
        f"webhooks: {received} deliveries of {len(events)} events received, "
        f"{sum(1 for n in delivered if n)} delivered, {skipped} duplicates skipped",
        f"webhooks: {sum(1 for n in delivered if n == 1)} events delivered exactly once, "
        f"{sum(1 for n in delivered if n > 1)} twice",
        f"payments: order-101 clicked twice: the second click got {same}",
        f"payments: a plain resend of order-101 {refused}; order-101 charged {charged} time(s)",
    ]


def backpressure_scene(ctx: Any) -> list[str]:
    """A producer warned, slowed, then refused by a full reports queue"""
    slowed: list[dr.Event] = []
    refused: list[dr.QueueOverloaded] = []
    dr.subscribe("backpressure_slowed", slowed.append)
    try:
        for n in range(1, 15):  # tonight's batch, due in 2 s: it waits in the queue meanwhile
            try:
                reports.export_report.send_with_options(args=(f"report-{n:02d}",), delay=2_000)
            except dr.QueueOverloaded as exc:
                refused.append(exc)
    finally:
        dr.unsubscribe("backpressure_slowed", slowed.append)
    ctx.say(f"requested 14 exports: {len(refused)} refused with QueueOverloaded")
    waiting = stack.backpressure.depth("reports").depth
    reports.export_report.send_with_options(args=("report-urgent",), delay=2_000, backpressure_exempt=True)
    ctx.say("an urgent export marked backpressure_exempt went through; waiting for the workers")
    ctx.join("reports")
    reports.export_report.send("report-15")
    ctx.join("reports")
    ran = ledger.table("reports")
    waits = ", ".join(str(event["wait_ms"]) for event in slowed)
    emergency = stack.backpressure.thresholds_for("reports").emergency
    return [
        f"14 exports requested: {14 - len(slowed) - len(refused)} passed at once, {len(slowed)} slowed "
        f"(waited {waits} ms), {len(refused)} refused (QueueOverloaded, emergency at {emergency})",
        f"an urgent export marked backpressure_exempt passed with {waiting} exports waiting",
        f"drained by the workers, the queue took a new export; {len(ran)} exports ran, "
        f"{sum(1 for count in ran.values() if count > 1)} twice",
    ]


def cron_scene(ctx: Any) -> list[str]:
    """Cron jobs fired exactly once"""
    jobs = dr.CronJobs(backend)
    schedulers = "this process's worker" if ctx.mode == "in-process" else "every worker process"
    ctx.say(f"maintenance.heartbeat fires every second from the scheduler in {schedulers}")

    def runs() -> dict[str, int]:
        return ledger.table("heartbeats")

    started = int(time.time() * 1000)
    ctx.wait_for(lambda: len([o for o in runs() if o.isdigit() and int(o) > started]) >= 3, timeout=20)
    seen = runs()
    fresh = sorted(int(o) for o in seen if o.isdigit() and int(o) > started)[:3]
    consecutive = all(b - a == 1_000 for a, b in itertools.pairwise(fresh))
    once = all(seen[str(o)] == 1 for o in fresh)
    twice = sum(1 for o, n in seen.items() if o.isdigit() and n > 1)
    jobs.disable("maintenance.heartbeat")
    disabled_at = int(time.time() * 1000)
    ctx.say("disabled it; waiting 2 s, then asking for a run now")
    time.sleep(2.0)
    after = sum(n for o, n in runs().items() if o.isdigit() and int(o) > disabled_at)
    jobs.run_now("maintenance.heartbeat")
    ctx.wait_for(lambda: runs().get("run-now", 0) >= 1, timeout=20)
    jobs.enable("maintenance.heartbeat")
    kind = "consecutive occurrences" if consecutive else "occurrences WITH GAPS"
    verdict = "each ran exactly once" if once else "SOME RAN MORE THAN ONCE"
    manual = runs().get("run-now", 0)
    return [
        f"maintenance.heartbeat (every 1 s): {len(fresh)} {kind}, {verdict}; {twice} occurrences ran twice",
        f"disabled: {after} runs in the next 2 s; run-now while disabled: ran {manual} time(s)",
    ]


def penalties(score: Any) -> str:
    """``failure rate 21% (9 of 43 attempts) -20.9; ...`` or ``nothing wrong``."""
    return "; ".join(f"{p.detail} -{p.points:g}" for p in score.penalties) or "nothing wrong"


def health_scene(ctx: Any) -> list[str]:
    """Health at the end"""
    scorer = stack.health
    if ctx.mode == "in-process":
        scorer.flush()
    else:  # every worker process sends its counts once per flush interval
        time.sleep((scorer.flush_ms + 500) / 1000)
    report = scorer.evaluate(ctx.broker)
    ctx.say(
        f"health {report.status} {report.score:g} over the last {report.inputs.window_ms // 60_000} minutes"
    )
    for item in report.queues.values():
        rate = (
            "-"
            if item.failure_rate is None
            else f"{item.failure_rate:.0%} of {item.attempts} attempts failed"
        )
        ctx.say(f"queue {item.name}: {item.status} {item.score:g} ({rate})")
    ctx.say(f"{report.inputs.alive} worker process(es) alive; GET /health answers {report.http_status}")
    lines = [f"overall: {report.status} {report.score:g} ({penalties(report.overall)})"]
    lines += [
        f"queue {item.name}: {item.status} {item.score:g} ({penalties(item)})"
        for item in report.queues.values()
        if item.penalties
    ]
    clean = [item for item in report.queues.values() if not item.penalties]
    if clean:
        scores = sorted({f"{item.status} {item.score:g}" for item in clean})
        lines.append(f"every other queue ({len(clean)}): {', '.join(scores)}")
    return lines


SCENES = [
    payments_scene,
    gateway_outage_scene,
    dead_letters_scene,
    webhooks_scene,
    maintenance_scene,
    duplicates_scene,
    backpressure_scene,
    cron_scene,
    health_scene,
]
