"""The backends are composed of one mixin per feature: no two may define the same name."""

from __future__ import annotations

import pytest

from dramatiq_resilience.backends.redis import RedisBackend
from dramatiq_resilience.backends.redis_base import RedisBase
from dramatiq_resilience.backends.stub import StubBackend
from dramatiq_resilience.backends.stub_base import StubBase


@pytest.mark.parametrize(("backend", "base"), [(RedisBackend, RedisBase), (StubBackend, StubBase)])
def test_feature_mixins_define_disjoint_names(backend: type, base: type) -> None:
    """A helper defined by two mixins would silently shadow one of them (it happened once: `_live`)."""
    owners: dict[str, str] = {}
    clashes = []
    for mixin in backend.__bases__:
        if mixin is base or not issubclass(mixin, base):
            continue
        for name in vars(mixin):
            if (name.startswith("__") and name.endswith("__")) or name == "_abc_impl":
                continue
            if name in owners:
                clashes.append(f"{name}: {owners[name]} and {mixin.__name__}")
            owners[name] = mixin.__name__
    assert clashes == []
    assert len({m for m in owners.values()}) >= 2  # the check looks at several mixins
