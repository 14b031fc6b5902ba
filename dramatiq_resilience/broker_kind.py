"""Which of the supported brokers a broker is, without touching its connections."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["BrokerKind", "broker_kind"]

BrokerKind = Literal["redis", "rabbitmq", "stub"]

_BY_CLASS_NAME: dict[str, BrokerKind] = {
    "RedisBroker": "redis",
    "RabbitmqBroker": "rabbitmq",
    "StubBroker": "stub",
}


def broker_kind(broker: Any) -> BrokerKind | None:
    """``"redis"``, ``"rabbitmq"``, ``"stub"`` (subclasses included), or ``None`` for another broker.

    Decided from the class hierarchy by name, so Dramatiq's optional broker modules (and pika)
    need not be importable, and no attribute is read: ``RabbitmqBroker.channel`` is a property
    that opens a connection.
    """
    for cls in type(broker).__mro__:
        kind = _BY_CLASS_NAME.get(cls.__name__)
        if kind is not None:
            return kind
    return None
