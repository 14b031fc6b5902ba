"""Automatic redrive: requeue dead letters that a policy says may be tried again.

A :class:`RedrivePolicy` selects dead records (by error type, category,
actor, queue...), says how long after its failure a record becomes due
(``delay``), and how often one message may be redriven in all
(``max_redrives``, counting manual requeues too).  :func:`redrive_due`
requeues every due record once; the scheduler runs it periodically::

    store = dr.DeadLetterStore(backend, redrive=[
        dr.RedrivePolicy(match={"error_type": "GatewayTimeout"}, delay=600_000, max_redrives=3),
    ])
    store.redrive_due(broker)

A redriven message that fails again gets a new record (``<id>-r1``), due
again ``delay`` ms later, until ``max_redrives`` is reached; it then stays
dead for a human to look at.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dramatiq.broker import Broker

from .. import events
from ..errors import ConfigurationError
from ..options import milliseconds, non_negative_int
from .query import DeadLetterFilter
from .record import DeadLetterRecord
from .requeue import RequeueReport, _check_queue, requeue

if TYPE_CHECKING:
    from .store import DeadLetterStore

__all__ = ["DEFAULT_MAX_REDRIVES", "DEFAULT_REDRIVE_DELAY", "RedrivePolicy", "RedriveReport", "redrive_due"]

logger = logging.getLogger(__name__)

#: Milliseconds after its failure before a record is due (10 minutes).
DEFAULT_REDRIVE_DELAY = 600_000

#: Redrives of one message, in all, before it is left dead.
DEFAULT_MAX_REDRIVES = 3


@dataclass(frozen=True)
class RedrivePolicy:
    """Which dead letters are requeued automatically, when, and how often.

    Parameters:
      match: a :class:`DeadLetterFilter` or a dict of its fields
        (``{"error_type": [...], "category": [...], "actor": [...]}``);
        only dead records are considered.
      delay: milliseconds after its (last) failure before a record is due
        (default 600 000).
      max_redrives: how many times one message may be redriven in all,
        manual requeues included (default 3); ``0`` disables the policy.
      name: for logs, events and the redrive history (``"policy:<name>"``);
        defaults to a description of ``match``.
      queue: send redriven messages to this queue instead of their own.
    """

    match: Any
    delay: int = DEFAULT_REDRIVE_DELAY
    max_redrives: int = DEFAULT_MAX_REDRIVES
    name: str | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        flt = DeadLetterFilter.of(self.match)
        if flt.status != "dead":
            raise ConfigurationError("only dead records can be redriven; leave status out", option="match")
        object.__setattr__(self, "match", flt)
        for attr, check in (("delay", milliseconds(minimum=0)), ("max_redrives", non_negative_int)):
            try:
                object.__setattr__(self, attr, check(getattr(self, attr)))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(str(exc), option=attr) from None
        object.__setattr__(self, "queue", _check_queue(self.queue))
        if self.name is None:
            object.__setattr__(self, "name", flt.describe().replace("status=dead", "").strip() or "all")

    def due_filter(self, now: int) -> DeadLetterFilter:
        """The records this policy may requeue at ``now`` (ms)."""
        cutoff = now - self.delay + 1  # failed at or before now - delay
        until = cutoff if self.match.until is None else min(cutoff, self.match.until)
        return self.match.replace(until=until)

    def allows(self, record: DeadLetterRecord) -> str | None:
        """``None`` if ``record`` may be redriven, else why not."""
        return "max_redrives" if record.redrive_count >= self.max_redrives else None


@dataclass
class RedriveReport:
    """What :func:`redrive_due` did: one :class:`RequeueReport` per policy name."""

    policies: dict[str, RequeueReport] = field(default_factory=dict)

    @property
    def requeued(self) -> int:
        return sum(report.count for report in self.policies.values())

    def to_dict(self) -> dict[str, Any]:
        return {name: report.to_dict() for name, report in self.policies.items()}


def redrive_due(
    store: DeadLetterStore,
    broker: Broker,
    policies: Sequence[RedrivePolicy],
    *,
    limit: int | None = None,
    now: int | None = None,
) -> RedriveReport:
    """Requeue every dead record that a policy says is due; policies apply in order.

    A record matched by several policies is requeued by the first that
    finds it due.  ``limit`` caps the messages requeued in this run.
    Safe to run from several processes at once (requeue claims each record).
    """
    now = store.now() if now is None else now
    report = RedriveReport()
    for policy in policies:
        remaining = None if limit is None else limit - report.requeued
        if remaining is not None and remaining <= 0:
            break
        name = str(policy.name)
        if policy.max_redrives == 0:
            report.policies[name] = RequeueReport()
            continue
        result = requeue(
            store,
            broker,
            filter=policy.due_filter(now),
            queue=policy.queue,
            reason=f"policy:{name}",
            precheck=policy.allows,
            limit=remaining,
        )
        if name in report.policies:
            report.policies[name].merge(result)
        else:
            report.policies[name] = result
    if report.requeued:
        logger.info(
            "Redrive requeued %d dead letters: %s.",
            report.requeued,
            ", ".join(f"{name}: {r.count}" for name, r in report.policies.items() if r.count),
        )
    events.emit(
        "dead_letters_redriven",
        requeued=report.requeued,
        by_policy={name: r.count for name, r in report.policies.items()},
    )
    return report


def policies_from(value: Any) -> tuple[RedrivePolicy, ...]:
    """Check a list of policies (``RedrivePolicy`` or dicts of its fields)."""
    items = [value] if isinstance(value, (RedrivePolicy, Mapping)) else list(value or ())
    return tuple(item if isinstance(item, RedrivePolicy) else RedrivePolicy(**item) for item in items)
