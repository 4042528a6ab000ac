"""Fixtures shared by every test module (nothing tool-specific belongs here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sparkle_motion.artifacts import ArtifactStore


@pytest.fixture
def sparkle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh artifact root, exported as SPARKLE_HOME; no SPARKLE_TOKEN leaks in from the caller's shell."""
    home = tmp_path / "sparkle-home"
    home.mkdir()
    monkeypatch.setenv("SPARKLE_HOME", str(home))
    monkeypatch.delenv("SPARKLE_TOKEN", raising=False)
    return home


@pytest.fixture
def store(sparkle_home: Path) -> Iterator[ArtifactStore]:
    """An ArtifactStore on ``sparkle_home``."""
    artifact_store = ArtifactStore(sparkle_home)
    try:
        yield artifact_store
    finally:
        artifact_store.close()

