"""One supervised mesh (cpu profile, tiny render) shared by the fault suite: starting eight services is the slow part."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_harness import TINY_RENDER

from sparkle_motion.config import Settings
from sparkle_motion.testing import running_mesh


@pytest.fixture(scope="session")
def fault_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    # Every run at once (test_concurrent_runs contends on purpose): no film waits in production_agent's queue.
    with running_mesh(tmp_path_factory.mktemp("fault-home"), render=TINY_RENDER,
                      settings={"max_concurrent_runs": 8}) as settings:
        yield settings
