"""Module-scoped fixtures for a test module about one tool (a plain module: conftest names collide)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import running_tool


def module_tool_fixtures(tool_id: str, env: Mapping[str, str | None] | None = None,
                         ready_timeout: float = 60.0) -> tuple:
    """``home``, ``tool`` and ``store`` fixtures (module scope) for a test module about one tool.

    Use as ``home, tool, store = module_tool_fixtures("images_sdxl")``: one real tool
    process per module on a fresh SPARKLE_HOME, and a store on that home.  ``env``
    adds to the tool's environment (e.g. ``SPARKLE_<TOOL>_BACKEND``).
    """
    @pytest.fixture(scope="module")
    def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp(f"{tool_id}-home")

    @pytest.fixture(scope="module")
    def tool(home: Path) -> Iterator:
        with running_tool(tool_id, home=home, env={"SPARKLE_TOKEN": None, **(env or {})},
                          ready_timeout=ready_timeout) as running:
            yield running

    @pytest.fixture(scope="module")
    def store(home: Path) -> Iterator[ArtifactStore]:
        artifact_store = ArtifactStore(home)
        yield artifact_store
        artifact_store.close()

    return home, tool, store
