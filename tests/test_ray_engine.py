"""The ray engine end to end: a local Ray instance (2 CPUs), the mesh's tools as Serve deployments
with 2 replicas of videos_wan, and `sparkle-motion produce` of a held-out plan through them.

* the film's clips are byte-identical (sha256) to the local engine's for the same plan and seeds;
* a replica killed mid-clip (SIGKILL of its process, found by its staging file) costs one redone call and nothing else:
  the film finishes, every step succeeded once, every artifact verifies against its checksum.

One Ray start for the module (the fixture), always shut down in teardown (`mesh.down` ends the
supervisor, which is the Ray driver: serve.shutdown and ray.shutdown). Outputs are decoded with
PyAV, never read from the tools' own metadata.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import yaml

from mesh_harness import running_mesh
from sparkle_motion import mesh
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings, load_settings
from sparkle_motion.runs import RunRegistry
from sparkle_motion.testing import _process_env, free_port, mesh_env, write_test_profile

pytest.importorskip("ray", reason="the [ray] extra (make test installs it)")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mesh"), pytest.mark.timeout(900)]

PLAN = Path(__file__).parent / "data" / "held_out" / "ray_three_shots.json"
RENDER = {"fps": 12, "width": 256, "height": 144}
#: Each frame's progress report waits this long in videos_wan (test-only), so a clip lasts seconds
#: and a replica can be killed while it renders one. It changes no byte of the output.
STEP_DELAY_S = 0.3


def ray_profile(home: Path) -> Path:
    path = write_test_profile(home, render=RENDER)
    profile = yaml.safe_load(path.read_text())
    profile["engine"] = "ray"
    profile["ray"] = {"http_port": free_port(), "num_cpus": 2, "object_store_mb": 100}
    videos = profile["tools"]["videos_wan"]
    videos.update(max_concurrency=1, test_step_delay_s=STEP_DELAY_S, ray={"num_replicas": 2, "num_cpus": 0.25})
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="module")
def ray_mesh(tmp_path_factory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("ray-mesh")
    env = mesh_env(home, ray_profile(home))
    settings = load_settings(env)
    try:
        with _process_env(env):
            mesh.up(settings)
        yield settings
    finally:
        with _process_env(env):
            mesh.down(settings, timeout=60)


def produce(settings: Settings, plan_path: Path, out: Path, timeout: float = 600) -> subprocess.Popen[str]:
    env = {**mesh_env(settings.home, settings.profile_path)}
    return subprocess.Popen([sys.executable, "-m", "sparkle_motion.cli", "produce", str(plan_path), "-o", str(out),
                             "--qa", "skip"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-3000:]
    return output


def clip_checksums(settings: Settings, run_id: str) -> dict[str, str]:
    """shot id → sha256 of the clip its succeeded video_clips step names (from the registry and store)."""
    registry = RunRegistry(settings.db_path)
    store = ArtifactStore(settings.home, db_path=settings.db_path)
    try:
        steps = [s for s in registry.list_steps(run_id, stage="video_clips") if s.status == "succeeded"]
        return {s.item: store.get(s.artifact_ids[0]).sha256 for s in steps}
    finally:
        store.close()


def latest_run(settings: Settings) -> str:
    return RunRegistry(settings.db_path).list_runs(1)[0].run_id


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_the_ray_mesh_serves_the_tools_as_replicas_behind_serve_routes(ray_mesh):
    state, rows = mesh.status(ray_mesh)
    assert state is not None and state["engine"] == "ray"
    by_id = {row.tool_id: row for row in rows}
    port = ray_mesh.ray.http_port
    assert by_id["videos_wan"].url == f"http://127.0.0.1:{port}/videos_wan" and by_id["videos_wan"].engine == "ray"
    assert by_id["production_agent"].engine == "local" and by_id["production_agent"].pid
    assert all(row.ready and row.alive for row in rows)
    import httpx
    metadata = httpx.get(f"{ray_mesh.url_for('videos_wan')}/metadata", timeout=30).json()
    assert metadata["limits"] == {**metadata["limits"], "max_concurrency": 1, "replicas": 2}


def test_a_held_out_plan_gives_clips_byte_identical_to_the_local_engines(ray_mesh, tmp_path):
    finished(produce(ray_mesh, PLAN, tmp_path / "ray.mp4"))
    on_ray = clip_checksums(ray_mesh, latest_run(ray_mesh))
    assert sorted(on_ray) == ["shot_001", "shot_002", "shot_003"]
    assert decoded_frames(tmp_path / "ray.mp4") > 0
    with running_mesh(tmp_path / "local-home", render=RENDER) as local:
        assert local.engine == "local"
        finished(produce(local, PLAN, tmp_path / "local.mp4"))
        on_local = clip_checksums(local, latest_run(local))
    assert on_ray == on_local


def _replica_pids() -> set[int]:
    """The pids of the live videos_wan Serve replicas (Ray names the process after the actor)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ServeReplica:videos_wan" in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def _rendering_pid(home: Path, pids: set[int]) -> int | None:
    """A replica whose clip is being written right now: its staging file (videos_wan-p<pid>-…) exists."""
    for entry in (home / "staging").glob("videos_wan-p*-*"):
        pid = int(entry.name.split("-")[1][1:])
        if pid in pids:
            return pid
    return None


def _serve_replicas(home: Path) -> int:
    """Running videos_wan replicas as Serve reports them (the supervisor copies serve.status() to mesh.json)."""
    return int(json.loads((home / "mesh.json").read_text())["services"]["videos_wan"]["replicas"])


def test_a_replica_killed_mid_clip_costs_one_redone_call_and_nothing_else(ray_mesh, tmp_path):
    plan = json.loads(PLAN.read_text())
    plan["metadata"].update(plan_id="ray_kill", seed=77)     # new keyframes and clips: no cached step
    for base in plan["base_images"]:
        base["seed"] += 1000
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    proc = produce(ray_mesh, plan_path, tmp_path / "film.mp4")
    deadline, victim = time.monotonic() + 420, None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        victim = _rendering_pid(ray_mesh.home, _replica_pids())
        time.sleep(0.1)
    assert victim is not None, "no replica was seen rendering a clip"
    os.kill(victim, signal.SIGKILL)      # the replica's process dies mid-clip, as on a crash or a lost node
    finished(proc)
    # Serve replaces the replica; the new one's start-up sweep removes the dead one's staging file.
    deadline = time.monotonic() + 240
    # The process view settles too: under load Serve may still be winding a replica down or starting one.
    while time.monotonic() < deadline and (_serve_replicas(ray_mesh.home) < 2 or victim in _replica_pids()
                                           or len(_replica_pids()) != 2
                                           or list((ray_mesh.home / "staging").glob(f"videos_wan-p{victim}-*"))):
        time.sleep(1.0)
    assert _serve_replicas(ray_mesh.home) == 2 and len(_replica_pids()) == 2 and victim not in _replica_pids()
    assert not list((ray_mesh.home / "staging").glob(f"videos_wan-p{victim}-*"))
    run_id = latest_run(ray_mesh)
    registry = RunRegistry(ray_mesh.db_path)
    assert registry.get_run(run_id).status == "succeeded"
    clips = registry.list_steps(run_id, stage="video_clips")
    assert Counter((s.item, s.status) for s in clips) == {(f"shot_00{i}", "succeeded"): 1 for i in (1, 2, 3)}
    assert not [s for s in registry.list_steps(run_id) if s.status != "succeeded"]
    # The redo: one /invoke of videos_wan retried because the proxy lost its replica, no more.
    lines = [json.loads(line) for line in (ray_mesh.home / "logs" / "production_agent.log").read_text().splitlines()
             if line.startswith("{") and "tool_call.retry" in line]
    lost = [r for r in lines if r.get("target") == "videos_wan" and r.get("reason") == "RemoteProtocolError"
            and r.get("run_id", run_id) == run_id]
    assert len(lost) == 1, lines
    store = ArtifactStore(ray_mesh.home, db_path=ray_mesh.db_path)
    try:
        artifacts = store.list(run_id)
        assert {m.stage for m in artifacts} >= {"base_images", "video_clips", "assemble"}
        for manifest in artifacts:
            store.verify(manifest.artifact_id)     # raises IntegrityError on a checksum mismatch
    finally:
        store.close()
    assert decoded_frames(tmp_path / "film.mp4") == round(4.5 * RENDER["fps"])
