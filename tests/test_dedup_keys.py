"""Keys, fingerprints and stored messages: arguments by name, stable hashes, msgpack round trips."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from dramatiq import Message

from dramatiq_resilience.middleware.dedup_keys import (
    Arguments,
    compute_key,
    fingerprint,
    pack_message,
    unpack_message,
)


def charge(order_id: str, tenant: str, amount: int = 100) -> None: ...


def variadic(*items: Any, **extra: Any) -> None: ...


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        (("o-1", "acme"), {}, {"order_id": "o-1", "tenant": "acme", "amount": 100}),
        (("o-1",), {"tenant": "acme", "amount": 5}, {"order_id": "o-1", "tenant": "acme", "amount": 5}),
        ((), {"tenant": "acme", "order_id": "o-1"}, {"order_id": "o-1", "tenant": "acme", "amount": 100}),
        (("o-1",), {}, None),  # a missing argument
        (("o-1", "acme"), {"other": 1}, None),  # an unknown keyword
        (("o-1", "acme"), {"order_id": "o-2"}, None),  # given twice
        (("o-1", "acme", 1, 2), {}, None),  # too many
    ],
)
def test_arguments_are_bound_by_name(args: tuple[Any, ...], kwargs: dict[str, Any], named: Any) -> None:
    """Arguments bind to the actor's parameters, defaults applied; calls that do not fit give None."""
    assert Arguments(charge, args, kwargs).named == named


def test_variadic_actors_bind_keywords_only() -> None:
    """*args actors: keywords bind by name, positional extras cannot be named."""
    assert Arguments(variadic, (), {"a": 1}).named == {"a": 1}
    assert Arguments(variadic, (1,), {}).named is None


def test_key_function_is_called_by_name_or_like_the_actor() -> None:
    """A key function taking the names gets them; one that does not is called positionally."""
    arguments = Arguments(charge, ("o-1", "acme"), {})
    assert compute_key(lambda order_id, **_: f"charge:{order_id}", arguments) == "charge:o-1"
    assert compute_key(lambda a, b: f"{a}/{b}", arguments) == "o-1/acme"
    assert compute_key("constant", arguments) == "constant"
    assert compute_key(lambda **_: None, arguments) is None
    with pytest.raises(ValueError, match="must return a string of at most 1000 characters, got 1001"):
        compute_key(lambda **_: "x" * 1_001, arguments)


def test_fingerprint_is_the_same_however_the_call_was_written() -> None:
    """Positional, keyword and defaulted calls of the same arguments hash alike; others differ."""
    same = {
        fingerprint("charge", Arguments(charge, ("o-1", "acme"), {})),
        fingerprint("charge", Arguments(charge, ("o-1",), {"tenant": "acme", "amount": 100})),
        fingerprint("charge", Arguments(charge, [], {"amount": 100, "tenant": "acme", "order_id": "o-1"})),
    }
    assert len(same) == 1
    assert len(same.pop()) == 32
    assert fingerprint("charge", Arguments(charge, ("o-1", "acme", 5), {})) not in same
    assert fingerprint("refund", Arguments(charge, ("o-1", "acme"), {})) != fingerprint(
        "charge", Arguments(charge, ("o-1", "acme"), {})
    )
    assert fingerprint("charge", Arguments(charge, ("o-1", object()), {})) == ""


def test_messages_round_trip_without_delivery_options() -> None:
    """A stored message comes back equal, minus broker delivery options, on its canonical queue."""
    message: Message[Any] = Message(
        queue_name="payments.DQ",
        actor_name="charge",
        args=("o-1", "acme"),
        kwargs={"amount": 5},
        options={"eta": 1, "redis_message_id": "r", "on_failure": "alert"},
    )
    packed = pack_message(message)
    assert packed is not None
    back = unpack_message(msgpack.unpackb(packed))
    assert back == Message(
        queue_name="payments",
        actor_name="charge",
        args=("o-1", "acme"),
        kwargs={"amount": 5},
        options={"on_failure": "alert"},
        message_id=message.message_id,
        message_timestamp=message.message_timestamp,
    )
    assert (
        pack_message(Message(queue_name="q", actor_name="a", args=(object(),), kwargs={}, options={})) is None
    )
