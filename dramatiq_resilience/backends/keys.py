"""Key naming shared by every backend."""

from __future__ import annotations

__all__ = ["Keyed"]


class Keyed:
    """Builds hash-tagged keys under ``namespace``."""

    namespace: str

    def key(self, feature: str, group: str, *parts: str) -> str:
        """Build ``{namespace}:{feature}:{group}:parts...``, hash-tagged by group.

        Keys built with the same ``feature`` and ``group`` share a Redis Cluster
        hash slot, so one script can touch all of them.
        """
        return ":".join((self.namespace, feature, "{" + group + "}", *parts))
