"""Delivering webhooks to tenants' endpoints."""

from __future__ import annotations

import dramatiq

from .config import ledger


@dramatiq.actor(
    queue_name="webhooks",
    max_retries=3,
    min_backoff=100,
    max_backoff=1_000,
    # Providers deliver the same event more than once: deliver each event once.
    dedup_key=lambda tenant, event_id, **_: f"webhook:{tenant}:{event_id}",
)
def deliver_webhook(tenant: str, event_id: str, payload: dict) -> None:
    """POST ``payload`` to ``tenant``'s endpoint (here: count the delivery)."""
    ledger.incr("webhooks_by_tenant", tenant)
    ledger.incr("webhook_deliveries", event_id)
