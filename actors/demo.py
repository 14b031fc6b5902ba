"""The demo's scenes, run by ``dramatiq-resilience demo``.

Each scene sends work to the app, waits for it, and returns summary lines.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

from . import gateway, maintenance, payments, webhooks
from .config import ledger, stack


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


SCENES = [payments_scene, gateway_outage_scene, webhooks_scene, maintenance_scene]
