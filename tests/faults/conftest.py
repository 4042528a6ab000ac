"""One supervised mesh (cpu profile, tiny render) shared by the fault suite: starting eight services is the slow part."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_harness import TINY_RENDER

from sparkle_motion.config import Settings
from sparkle_motion.testing import running_mesh


@pytest.fixture(scope="session")
def fault_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with running_mesh(tmp_path_factory.mktemp("fault-home"), render=TINY_RENDER) as settings:
        yield settings
