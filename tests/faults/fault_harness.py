"""Helpers of the fault suite: one supervised mesh, tiny plans, and what every finished run must satisfy.

A fault test starts a run of a tiny plan (2 shots, 6 s, a small render), waits
until the run is inside the stage that uses the service under test (a step of
that stage is ``running`` in the registry: the tool call is in flight), kills
the process with SIGKILL, and then only waits: the run must finish by itself.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparkle_motion import mesh
from sparkle_motion.agents.offline_planner import OfflinePlanner
from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.agents.script_protocol import PlanControls
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings
from sparkle_motion.media import probe
from sparkle_motion.plan import MoviePlan, validate_plan
from sparkle_motion.runs import RunRegistry, StepRecord

#: Small enough that the whole kill matrix runs in minutes on two loaded cores.
TINY_RENDER = {"fps": 12, "width": 192, "height": 112}
RUN_TIMEOUT_S = 420.0


def tiny_plan(seed: int, idea: str = "A lighthouse keeper befriends a storm") -> MoviePlan:
    """2 shots, 6 s. A different seed gives every step a different input hash: nothing comes from the cache."""
    return validate_plan(OfflinePlanner(idea, PlanControls(shots=2, duration_s=6, seed=seed)).compose())


def wait_mesh_ready(settings: Settings, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not mesh.is_up(settings):
        assert time.monotonic() < deadline, f"mesh not ready after {timeout:.0f} s: {mesh.status(settings)[1]}"
        time.sleep(0.5)


def service_info(settings: Settings, tool_id: str) -> dict[str, Any]:
    state = mesh.read_state(settings) or {}
    return dict((state.get("services") or {}).get(tool_id) or {})


def wait_for_step(settings: Settings, run_id: str, matches: Callable[[StepRecord], bool],
                  timeout: float = RUN_TIMEOUT_S) -> StepRecord:
    """Poll the registry until a ``running`` step of the run satisfies ``matches``."""
    registry = RunRegistry(settings.db_path)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for step in registry.list_steps(run_id):
                if step.status == "running" and matches(step):
                    return step
            run = registry.get_run(run_id)
            assert run.status in ("pending", "running", "interrupted"), \
                f"run {run_id} ended ({run.status}, {run.error}) before the awaited step ran"
            time.sleep(0.01)
        raise AssertionError(f"no matching running step in run {run_id} after {timeout:.0f} s")
    finally:
        registry.close()


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def ffmpeg_children(parent_pid: int) -> list[int]:
    """Pids of ffmpeg processes whose parent is ``parent_pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == parent_pid and "ffmpeg" in comm:
            found.append(int(entry.name))
    return found


def start_run(settings: Settings, plan: MoviePlan) -> str:
    with ProductionClient(settings, timeout=120) as client:
        return client.start(plan=plan.model_dump(mode="json"), qa_mode="full").run_id


def wait_run_ended(settings: Settings, run_id: str) -> Any:
    """The run's last status; the client rides out a production_agent restart (the profile's budget)."""
    with ProductionClient(settings, timeout=60) as client:
        return client.wait_for_status(run_id, {"succeeded", "failed", "stopped"}, timeout=RUN_TIMEOUT_S, interval=0.5)


def assert_run_is_whole(settings: Settings, run_id: str, plan: MoviePlan) -> dict[str, Any]:
    """The run succeeded; every artifact row verifies; no step ran twice; nothing left in staging; the film
    lasts the plan's runtime (decoded with PyAV) to within one frame. Returns facts for the caller."""
    registry = RunRegistry(settings.db_path)
    store = ArtifactStore(settings.home)
    try:
        run = registry.get_run(run_id)
        assert run.status == "succeeded", f"run {run_id} {run.status}: {run.error}"
        steps = registry.list_steps(run_id)
        succeeded = Counter((s.stage, s.item, s.input_hash) for s in steps if s.status == "succeeded")
        twice = {key: n for key, n in succeeded.items() if n > 1}
        assert not twice, f"steps that ran twice: {twice}"
        artifacts = store.list(run_id)
        assert artifacts, "the run stored no artifacts"
        for manifest in artifacts:
            store.verify(manifest.uri)  # IntegrityError on a missing file or a checksum mismatch
        for step in steps:
            if step.status in ("succeeded", "cached"):
                for artifact_id in step.artifact_ids:
                    store.verify(artifact_id)
        leftovers = sorted(p.name for p in store.staging_dir().iterdir())
        assert not leftovers, f"staging leftovers: {leftovers}"
        films = [m for m in artifacts if m.artifact_type == "video_final"]
        assert len(films) == 1
        video = probe(Path(films[0].local_path)).first("video")
        assert video is not None and video.fps
        frame_s = 1.0 / video.fps
        decoded_s = (video.frames / video.fps) if video.frames else video.duration_s
        assert decoded_s is not None and abs(decoded_s - plan.runtime_s) <= frame_s + 1e-6, \
            f"film lasts {decoded_s} s, plan {plan.runtime_s} s"
        return {"steps": steps, "artifacts": len(artifacts), "film_s": decoded_s}
    finally:
        registry.close()
        store.close()
