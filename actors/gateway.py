"""A fake payment gateway that fails the way real ones do.

* Transient failures: the first call for one order in four times out (a
  ``GatewayTimeout``); the retry succeeds.
* Outages: while the ledger switch ``gateway`` is ``"down"``, every call
  raises ``GatewayUnavailable`` (the demo flips it to trip the breaker).
* Declines: the test card ``4000000000000002`` is declined (``CardDeclined``),
  a permanent failure that must not be retried, until the ledger switch
  ``declines`` is ``"lifted"`` (the bank lifted the block; the demo then
  requeues one dead letter).

Every successful charge is counted in the ledger's ``charges`` table by order,
so a charge made twice shows up as 2.
"""

from __future__ import annotations

import zlib

from .config import ledger

#: A test card number that is always declined.
DECLINED_CARD = "4000000000000002"

#: A test card number that is always accepted.
GOOD_CARD = "4242424242424242"


class GatewayError(Exception):
    """The gateway failed; trying again later may work."""


class GatewayTimeout(GatewayError):
    """The gateway did not answer in time."""


class GatewayUnavailable(GatewayError):
    """The gateway is down."""


class CardDeclined(Exception):
    """The card was declined; trying again will not help."""


def charge(order_id: str, amount_cents: int, card: str) -> str:
    """Charge ``amount_cents`` to ``card`` for ``order_id``; return a charge id."""
    calls = ledger.incr("gateway_calls", order_id)
    if ledger.switch("gateway") == "down":
        raise GatewayUnavailable(f"gateway unavailable while charging {order_id}")
    if card == DECLINED_CARD and ledger.switch("declines") != "lifted":
        raise CardDeclined(f"card ending {card[-4:]} declined for {order_id}")
    if calls == 1 and zlib.crc32(order_id.encode()) % 4 == 0:
        raise GatewayTimeout(f"gateway timed out charging {order_id}")
    ledger.incr("charges", order_id)
    return f"ch_{zlib.crc32(f'{order_id}:{amount_cents}'.encode()):08x}"
