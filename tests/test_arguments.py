"""Key functions get the actor's arguments by name, unless they are written for positional calls."""

from __future__ import annotations

from typing import Any

import pytest

from dramatiq_resilience.arguments import Arguments, call_key


def charge(order_id: str, tenant: str = "acme", amount: int = 0) -> None: ...


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (lambda order_id, **_: order_id, "o-1"),
        (lambda tenant, **_: tenant, "globex"),
        (lambda order_id, tenant, amount: f"{order_id}/{tenant}/{amount}", "o-1/globex/0"),
        (lambda *args, **kwargs: args[0], "o-1"),
        (lambda *args: "/".join(map(str, args)), "o-1/globex"),
        (lambda first, second: f"{first}+{second}", "o-1+globex"),
    ],
    ids=["named", "one-name", "all-names", "var-positional", "positional-only", "other-names"],
)
def test_call_key(key: Any, expected: str) -> None:
    """By name when the key takes the actor's names without *args; else as the actor was called."""
    assert call_key(key, Arguments(charge, ("o-1", "globex"), {})) == expected
