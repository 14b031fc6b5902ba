"""The demo's scenes, run by ``dramatiq-resilience demo``.

Each scene sends work to the app, waits for it, and returns summary lines.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import dramatiq_resilience as dr

from . import gateway, maintenance, payments, webhooks
from .config import backend, ledger


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


def webhooks_scene(ctx: Any) -> list[str]:
    """Webhooks for three tenants"""
    tenants = ("acme", "globex", "initech")
    for n in range(30):
        tenant = tenants[n % 3]
        webhooks.deliver_webhook.send(tenant, f"evt-{n:03d}", {"type": "invoice.paid", "n": n})
    ctx.join("webhooks")
    by_tenant = ledger.table("webhooks_by_tenant")
    return [", ".join(f"{tenant}: {by_tenant.get(tenant, 0)} delivered" for tenant in tenants)]


def maintenance_scene(ctx: Any) -> list[str]:
    """Maintenance jobs"""
    maintenance.purge_expired_sessions.send()
    ctx.join("maintenance")
    return [f"purge_expired_sessions ran {ledger.get('maintenance', 'purge_expired_sessions')} time(s)"]


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


SCENES = [payments_scene, webhooks_scene, maintenance_scene, cron_scene]
