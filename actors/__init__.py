"""An example application wired with dramatiq-resilience.

* :mod:`actors.payments`: charges orders through a flaky payment gateway.
* :mod:`actors.webhooks`: delivers webhooks to customers, per tenant.
* :mod:`actors.maintenance`: periodic housekeeping jobs.
* :mod:`actors.reports`: report exports, protected by backpressure.

Run it with real workers::

    ACTORS_REDIS_URL=redis://127.0.0.1:6379/0 dramatiq actors

Without ``ACTORS_REDIS_URL`` it runs on Dramatiq's ``StubBroker`` and the
in-memory ``StubBackend`` (what ``dramatiq-resilience demo`` does).
"""

from __future__ import annotations

from . import maintenance, payments, reports, webhooks

# The broker and the resilience stack must exist before any actor is declared.
from .config import backend, broker, cleanup, ledger, stack

__all__ = [
    "backend",
    "broker",
    "cleanup",
    "ledger",
    "maintenance",
    "payments",
    "reports",
    "stack",
    "webhooks",
]
