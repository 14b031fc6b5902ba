"""Charging orders through the flaky gateway."""

from __future__ import annotations

import dramatiq

from . import gateway


@dramatiq.actor(
    queue_name="payments",
    max_retries=5,
    min_backoff=100,
    max_backoff=1_000,
    throws=(gateway.CardDeclined,),
    breaker="payments-gateway",
    # One charge per order, however often it is sent: a double-clicked "Pay" button
    # gets DuplicateMessage (or, through dr.send_unique, the first click's message).
    dedup_key=lambda order_id, **_: f"charge:{order_id}",
    dedup_on_enqueue=True,
)
def charge(order_id: str, tenant: str, amount_cents: int, card: str = gateway.GOOD_CARD) -> None:
    """Charge an order.  Declined cards are final (``throws``); gateway errors retry.

    Behind the ``payments-gateway`` breaker: while the gateway is down, charges
    are deferred (their retries kept) instead of failing against it.
    """
    gateway.charge(order_id, amount_cents, card)
