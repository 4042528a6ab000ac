"""`sparkle-motion produce` when production_agent is killed mid-run: it says so, names the resume command,
and — the supervisor restarting production_agent, which resumes the run — still delivers the film."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_harness import RUN_TIMEOUT_S, kill9, service_info, tiny_plan, wait_for_step, wait_mesh_ready

from sparkle_motion.config import Settings
from sparkle_motion.runs import RunRegistry
from sparkle_motion.testing import mesh_env

pytestmark = pytest.mark.slow


def test_produce_rides_out_a_production_agent_restart(fault_mesh: Settings, tmp_path: Path) -> None:
    wait_mesh_ready(fault_mesh)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(tiny_plan(31).model_dump(mode="json")))
    env = mesh_env(fault_mesh.home, fault_mesh.profile_path)
    before = service_info(fault_mesh, "production_agent")
    registry = RunRegistry(fault_mesh.db_path)
    known = {r.run_id for r in registry.list_runs(limit=500)}
    cli = subprocess.Popen([sys.executable, "-m", "sparkle_motion.cli", "produce", str(plan_file),
                            "-o", str(tmp_path / "film.mp4")], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        run_id = None
        while run_id is None:
            assert time.monotonic() < deadline and cli.poll() is None, "the CLI never started a run"
            run_id = next((r.run_id for r in registry.list_runs(limit=500)
                           if r.run_id not in known and r.mode == "run"), None)
            time.sleep(0.1)
        wait_for_step(fault_mesh, run_id, lambda s: s.stage == "video_clips")
        kill9(before["pid"])
        out, err = cli.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if cli.poll() is None:
            cli.kill()
        registry.close()
    assert cli.returncode == 0, err[-3000:]
    assert f"production_agent went away during run {run_id}" in re.sub(r"\s+", " ", err)
    assert f"sparkle-motion resume {run_id}" in re.sub(r"\s+", " ", err)
    assert "film:" in out and (tmp_path / "film.mp4").stat().st_size > 0
    assert service_info(fault_mesh, "production_agent")["restarts"] == before["restarts"] + 1
