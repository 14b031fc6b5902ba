"""State backends: where state shared by every worker lives."""

from __future__ import annotations

from .base import DEFAULT_NAMESPACE, StateBackend
from .redis import RedisBackend
from .stub import StubBackend

__all__ = ["DEFAULT_NAMESPACE", "RedisBackend", "StateBackend", "StubBackend"]
