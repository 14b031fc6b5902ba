"""The dead-letter store and its redrive logic, used by the middleware, the CLI and the scans.

* :mod:`.record`: :class:`DeadLetterRecord` (msgpack), categories, exception chains.
* :mod:`.store`: :class:`DeadLetterStore`: get, list, stats, requeue, purge, export, trim.
* :mod:`.query`: :class:`DeadLetterFilter` and :class:`DeadLetterPage`.
* :mod:`.requeue`: claim, enqueue, finish: each record enqueued once.
* :mod:`.redrive`: :class:`RedrivePolicy` and :func:`redrive_due`.
* :mod:`.importer`: import a broker's own dead-letter queue (``<queue>.XQ``).
* :mod:`.redaction`: ``dead_letter_redact``: keep secrets out of records, logs and reports.
"""

from __future__ import annotations

from .importer import ImportReport, QueueImport, import_dead_letters
from .query import DeadLetterFilter, DeadLetterPage
from .record import CATEGORIES, ChainLink, DeadLetterRecord, Redrive, UnreadableRecord
from .redaction import REDACTED, redact, redact_message, redaction_keys
from .redrive import RedrivePolicy, RedriveReport, redrive_due
from .requeue import RequeueReport
from .store import DeadLetterStats, DeadLetterStore, PurgeReport, TrimReport

__all__ = [
    "CATEGORIES",
    "REDACTED",
    "ChainLink",
    "DeadLetterFilter",
    "DeadLetterPage",
    "DeadLetterRecord",
    "DeadLetterStats",
    "DeadLetterStore",
    "ImportReport",
    "PurgeReport",
    "QueueImport",
    "Redrive",
    "RedrivePolicy",
    "RedriveReport",
    "RequeueReport",
    "TrimReport",
    "UnreadableRecord",
    "import_dead_letters",
    "redact",
    "redact_message",
    "redaction_keys",
    "redrive_due",
]
