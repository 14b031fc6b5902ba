"""Delivering webhooks to tenants' endpoints, at most 5 per second per tenant."""

from __future__ import annotations

import dramatiq

import dramatiq_resilience as dr

from .config import ledger

#: Each tenant's endpoint takes at most 5 deliveries in any second.  The key
#: function receives the actor's arguments; every tenant has its own budget.
TENANT_WEBHOOKS = dr.Limit(5, per=1_000, key=lambda tenant, event_id, payload: tenant, name="tenant-webhooks")


@dramatiq.actor(
    queue_name="webhooks",
    max_retries=3,
    min_backoff=100,
    max_backoff=1_000,
    rate_limits=TENANT_WEBHOOKS,
    # Providers deliver the same event more than once: deliver each event once.
    dedup_key=lambda tenant, event_id, **_: f"webhook:{tenant}:{event_id}",
)
def deliver_webhook(tenant: str, event_id: str, payload: dict) -> None:
    """POST ``payload`` to ``tenant``'s endpoint (here: count the delivery)."""
    ledger.incr("webhooks_by_tenant", tenant)
    ledger.incr("webhook_deliveries", event_id)


def _audit(event: dr.Event) -> None:
    """Keep what the limiter decided for deliveries, so the demo can show it (any process)."""
    if event["actor_name"] != "deliver_webhook":
        return
    if event.name == "rate_limit_admitted":
        ledger.incr(f"webhook_starts:{event['keys']['tenant-webhooks']}", str(event["now_ms"]))
    elif event["reason"] == "rate_limited":
        ledger.incr("webhook_deferred", event["message_id"])


dr.subscribe("rate_limit_admitted", _audit)
dr.subscribe("message_deferred", _audit)
