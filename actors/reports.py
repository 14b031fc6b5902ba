"""Report exports: heavy work that producers must not pile up without limit.

The ``reports`` queue has backpressure thresholds (see ``config.py``): past 4
waiting exports producers are warned, past 8 each ``send`` waits a little,
and at 12 ``send`` raises ``QueueOverloaded`` so that the caller can say
"try again later" instead of burying the workers.
"""

from __future__ import annotations

import dramatiq

from .config import ledger


@dramatiq.actor(queue_name="reports", max_retries=3)
def export_report(report_id: str) -> None:
    """Build and mail a report (here: count the export)."""
    ledger.incr("reports", report_id)
