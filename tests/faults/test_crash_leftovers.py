"""kill -9 of a tool mid-call leaves staging files; the restarted tool's start-up sweep removes them.

Referenced artifacts (an earlier call's output) are never removed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import project_path
from sparkle_motion.testing import running_tool

pytestmark = pytest.mark.slow

ECHO = "function_tools.echo.service"


def profile_with_sweep(home: Path, longest_job_s: float) -> Path:
    profile = yaml.safe_load(project_path("configs/profiles/cpu.yaml").read_text())
    profile["sweep"] = {"longest_job_s": longest_job_s, "unreferenced_grace_s": 3600}
    path = home / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_restart_sweeps_what_a_killed_call_left(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"SPARKLE_PROFILE": str(profile_with_sweep(home, longest_job_s=1.0)), "SPARKLE_TOKEN": None}
    staging = home / "staging"
    with running_tool(ECHO, home=home, env=env) as tool:
        kept = tool.client.post("/invoke", json={"text": "keep me"}).json()["artifacts"][0]

        def hold() -> None:
            try:
                tool.client.post("/invoke", json={"text": "doomed", "hold_s": 8.0}, timeout=30)
            except httpx.HTTPError:
                pass  # the process is killed under it: no answer is expected

        caller = threading.Thread(target=hold, daemon=True)
        caller.start()
        deadline = time.monotonic() + 30
        while not list(staging.glob("echo-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = list(staging.glob("echo-*"))
        assert leftovers, "the held call never staged its output"
        os.kill(tool.proc.pid, signal.SIGKILL)
        tool.proc.wait(timeout=30)
        caller.join(timeout=30)
    assert all(p.exists() for p in leftovers), "a kill -9 cannot clean up; the leftover must still be there"
    time.sleep(1.5)  # older than longest_job_s

    with running_tool(ECHO, home=home, env=env) as tool:
        assert not any(p.exists() for p in leftovers), "the start-up sweep left staging files"
        swept = [r for r in tool.log_records() if r.get("event") == "sweep.done"]
        assert swept and {f"staging/{p.name}" for p in leftovers} <= set(swept[0]["staging"])
        assert tool.client.post("/invoke", json={"text": "after"}).status_code == 200
    store = ArtifactStore(home)
    try:
        store.verify(kept["uri"])
    finally:
        store.close()
