"""Retention from the notebook: the policy of :mod:`sparkle_motion.artifacts.retention` on the mesh's home.

A dry run (report only) unless ``apply=True``; ``print()`` the result for the same
report ``sparkle-motion prune`` prints.
"""

from __future__ import annotations

from sparkle_motion.artifacts import ArtifactStore, retention
from sparkle_motion.artifacts.retention import PruneResult, RetentionError
from sparkle_motion.config import Settings, get_settings

__all__ = ["PruneResult", "RetentionError", "prune_runs"]


def prune_runs(*, older_than_days: float | None = None, max_bytes: int | None = None, apply: bool = False,
               settings: Settings | None = None) -> PruneResult:
    """Prune old runs' artifacts under the settings' SPARKLE_HOME; RetentionError if a removal fails."""
    settings = settings or get_settings()
    store = ArtifactStore(settings.home, db_path=settings.db_path)
    try:
        return retention.prune_runs(store, older_than_days=older_than_days, max_bytes=max_bytes, apply=apply,
                                    sweep=settings.sweep)
    finally:
        store.close()
