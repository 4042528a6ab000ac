"""Five runs sent at once to one production_agent over single-slot tools: five films, each as long as its plan.

Every tool takes one call at a time and answers 503 busy to the others; the
runs' ToolClients wait their turn (the profile's busy budget) instead of failing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_harness import assert_run_is_whole, start_run, tiny_plan, wait_mesh_ready, wait_run_ended

from sparkle_motion.config import Settings

pytestmark = pytest.mark.slow

RUNS = 5


def test_five_concurrent_runs_make_five_films(fault_mesh: Settings) -> None:
    wait_mesh_ready(fault_mesh)
    log = fault_mesh.home / "logs" / "production_agent.log"
    log_start = log.stat().st_size
    plans = [tiny_plan(seed) for seed in range(101, 101 + RUNS)]
    with ThreadPoolExecutor(RUNS) as pool:
        run_ids = list(pool.map(lambda plan: start_run(fault_mesh, plan), plans))
        finals = list(pool.map(lambda run_id: wait_run_ended(fault_mesh, run_id), run_ids))
    assert [f.status for f in finals] == ["succeeded"] * RUNS, [(f.run_id, f.error) for f in finals]
    films = [assert_run_is_whole(fault_mesh, run_id, plan)["film_s"] for run_id, plan in zip(run_ids, plans)]
    assert len(films) == RUNS
    # The runs did contend: tools answered 503 busy and the callers waited their turn.
    with log.open("rb") as fh:
        fh.seek(log_start)
        busy_waits = [line for line in fh.read().decode(errors="replace").splitlines()
                      if '"tool_call.retry"' in line and '"reason": "503"' in line]
    assert busy_waits, "no run ever found a tool busy: the test did not exercise contention"
