"""Artifact stores in a known state, shared by the retention tests of the policy, the CLI and the notebook."""

from __future__ import annotations

from pathlib import Path

from sparkle_motion.artifacts import ArtifactStore


def put_old_and_new_run(home: Path) -> None:
    """Two runs of 1000 bytes each under ``home``: ``run_old`` written first, then ``run_new``."""
    store = ArtifactStore(home)
    try:
        store.put("run_old", "assemble", "video", b"x" * 1000, "video/mp4")
        store.put("run_new", "assemble", "video", b"y" * 1000, "video/mp4")
    finally:
        store.close()
