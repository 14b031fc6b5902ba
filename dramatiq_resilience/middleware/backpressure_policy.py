"""What Backpressure does with one send: the options that apply, and how much to slow it.

Options resolve message > actor > default, like every piece's; a send with no
``backpressure_*`` message option costs one dictionary lookup (the actor's
resolved policy is kept until the actor is declared again).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from dramatiq.broker import Broker
from dramatiq.errors import ActorNotFound

from ..options import Option
from ..thresholds import Thresholds

__all__ = ["Policies", "Policy", "slowdown"]


@dataclasses.dataclass(frozen=True)
class Policy:
    """The options of one send (constructor keyword names; durations in milliseconds)."""

    exempt: bool
    on_critical: str
    max_wait: int
    max_delay: int
    refuse_open_breaker: bool


class Policies:
    """Each actor's resolved :class:`Policy`, overridden per message.

    Parameters:
      specs: the middleware's option specs (``Option.attr`` names a ``Policy`` field).
      defaults: the middleware, whose attributes hold the defaults.
    """

    def __init__(self, specs: Sequence[Option], defaults: Any) -> None:
        self.specs = specs
        self.defaults = defaults
        self._names = frozenset(spec.name for spec in specs)
        self._by_actor: dict[str, Policy] = {}

    def forget(self, actor_name: str) -> None:
        """A re-declared actor may have other options."""
        self._by_actor.pop(actor_name, None)

    def of_actor(self, broker: Broker, actor_name: str) -> Policy:
        policy = self._by_actor.get(actor_name)
        if policy is None:
            try:
                options = broker.get_actor(actor_name).options
            except ActorNotFound:  # sent by name from a process that did not declare it
                options = {}
            values = {
                spec.attr: options.get(spec.name, getattr(self.defaults, spec.attr)) for spec in self.specs
            }
            policy = self._by_actor[actor_name] = Policy(**values)
        return policy

    def of_message(self, broker: Broker, message: Any) -> Policy:
        """The policy of ``message``; a bad message option raises ``ConfigurationError`` (to the producer)."""
        policy = self.of_actor(broker, message.actor_name)
        options = message.options
        if self._names.isdisjoint(options):
            return policy
        given = [spec for spec in self.specs if spec.name in options]
        if given:
            overrides = {
                spec.attr: spec.validate(options[spec.name], actor_name=message.actor_name) for spec in given
            }
            policy = dataclasses.replace(policy, **overrides)
        return policy


def slowdown(policy: Policy, thresholds: Thresholds, depth: int) -> tuple[int, int]:
    """``(wait_ms, delay_ms)`` for a send at critical: in proportion to how far past critical it is.

    The share is ``(depth - critical + 1) / (emergency - critical)``, at most 1
    (without an emergency threshold, ``2 * critical`` stands for it).
    """
    critical = thresholds.critical or 1
    top = thresholds.emergency if thresholds.emergency is not None else 2 * critical
    share = min(1.0, (depth - critical + 1) / max(1, top - critical))
    if policy.on_critical == "wait":
        return math.ceil(policy.max_wait * share), 0
    return 0, math.ceil(policy.max_delay * share)
