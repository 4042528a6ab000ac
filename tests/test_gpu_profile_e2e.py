"""`sparkle-motion make` on the gpu profile, every GPU backend pointed at a tiny model.

SDXL, Wan2.1 FLF2V and Chatterbox run their real loading and inference code on
CPU with random weights (the pictures and sounds are noise); Wav2Lip runs
as a subprocess through the stand-in checkout at that process boundary. The film
must come out with the planned geometry, frame count and streams, and every
stage's artifacts must say which GPU backend made them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import av
import httpx
import pytest
import yaml

pytest.importorskip("diffusers", reason="the GPU extra is not installed: pip install -e '.[gpu]'")
pytest.importorskip("chatterbox", reason="Chatterbox is not installed: bash scripts/install_chatterbox.sh .venv")

from test_lipsync_wav2lip_tiny import make_checkout  # noqa: E402
from tiny_models.qwen2vl import build_tiny_qwen2vl  # noqa: E402
from tiny_models.sdxl import build_tiny_sdxl  # noqa: E402
from tiny_models.wan import build_tiny_wan_flf2v  # noqa: E402

from sparkle_motion.config import load_settings, project_path  # noqa: E402
from sparkle_motion.testing import free_port, mesh_env  # noqa: E402

# A whole film through six model backends on a shared CPU: more than the suite's 600 s default when loaded.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gpu_e2e"), pytest.mark.timeout(1500)]

TESTS = Path(__file__).parent
FPS, SIDE = 8, 64
CPU = {"device": "cpu", "dtype": "float32", "lock_timeout_s": 120, "keep_warm_s": 600}
# Every tool of the gpu profile is long_running (a job). Wan is slowed to STEP_DELAY_S per denoising step,
# so each clip renders for several times the callers' HTTP read timeout: only the job path can finish it.
READ_TIMEOUT_S, WAN_STEPS, STEP_DELAY_S = 2.0, 4, 1.5


def gpu_test_profile(root: Path) -> Path:
    """configs/profiles/gpu.yaml with tiny models, small renders and free ports."""
    models = root / "models"
    chatterbox_dir = models / "chatterbox"
    subprocess.run([sys.executable, "-m", "tiny_models.chatterbox", str(chatterbox_dir)], cwd=TESTS, check=True,
                   env={**os.environ, "PYTHONPATH": str(TESTS)}, timeout=600)
    checkout, checkpoint = make_checkout(root)
    profile = yaml.safe_load(project_path("configs/profiles/gpu.yaml").read_text())
    tools = profile["tools"]
    # No Gemini key here: the planner is the offline one; everything after it is the GPU stack.
    tools["script_agent"] = {"backend": "sparkle-offline-planner", "model": "sparkle-offline-planner"}
    tools["images_sdxl"].update(model=str(build_tiny_sdxl(models / "sdxl")),
                                options={**CPU, "steps": 2, "memory": {"vae_tiling": True},
                                         # the frame's own 64x64, not SDXL's 1024x1024 bucket (minutes on CPU)
                                         "native_buckets": False})
    tools["videos_wan"].update(model=str(build_tiny_wan_flf2v(models / "wan")), test_step_delay_s=STEP_DELAY_S,
                               options={**CPU, "steps": WAN_STEPS, "vae_dtype": "float32",
                                        "max_area": SIDE * SIDE, "oom_policy": "fail"})
    tools["tts_chatterbox"].update(model=str(chatterbox_dir),
                                   options={**CPU, "max_new_tokens": 12, "n_cfm_timesteps": 2})
    tools["lipsync_wav2lip"]["options"] = {"wav2lip_dir": str(checkout), "checkpoint_path": str(checkpoint),
                                           "python": sys.executable, "device": "cpu", "timeout_s": 120,
                                           "lock_timeout_s": 120, "preset": "ultrafast"}
    # qwen2-vl must load for the mesh to be ready, though --qa skip sends it no work.
    tools["qa_qwen2vl"].update(model=str(build_tiny_qwen2vl(models / "qwen2vl")),
                               options={**CPU, "max_new_tokens": 16, "frames_per_video": 2})
    for entry in tools.values():
        entry["port"] = free_port()
    profile.update(name="gpu-tiny", render={"fps": FPS, "width": SIDE, "height": SIDE})
    profile["client"]["read_timeout_s"] = READ_TIMEOUT_S
    path = root / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


class StatusWatcher:
    """Polls production_agent's /status for the newest run while `make` runs, keeping every item it sees."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.items: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.wait(0.3):
                try:
                    runs = client.get("/runs", params={"limit": 1}).json().get("runs") or []
                    if runs:
                        status = client.get("/status", params={"run_id": runs[0]["run_id"]}).json()
                        self.items += status.get("items") or []
                except (httpx.HTTPError, ValueError):
                    continue                  # the mesh is still starting, or going down


def test_make_runs_end_to_end_through_the_gpu_backends(tmp_path):
    profile = gpu_test_profile(tmp_path)
    home = tmp_path / "home"
    env = {**mesh_env(home, profile), "HF_HUB_OFFLINE": "1"}
    film = tmp_path / "film.mp4"

    def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sparkle_motion.cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=timeout)

    settings = load_settings(env)
    assert all(settings.tool_profile(t).long_running for t in ("images_sdxl", "videos_wan", "tts_chatterbox",
                                                                "lipsync_wav2lip", "assemble_ffmpeg"))
    watcher = StatusWatcher(settings.url_for("production_agent"))
    try:
        watcher.start()
        # QA is skipped: its signal checks rightly fail random-weight noise (no continuity with the
        # keyframes); qwen2-vl's own HTTP path is covered by tests/test_qa_qwen2vl_tiny.py.
        made = cli("make", "A lighthouse keeper lights the lamp as a storm arrives", "-o", str(film),
                   "--shots", "2", "--duration", "4", "--seed", "3", "--qa", "skip")
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        assert "profile gpu-tiny" in made.stdout
        run_id = next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("run "))
        with httpx.Client(base_url=settings.url_for("production_agent"), timeout=30) as client:
            arts = client.get("/artifacts", params={"run_id": run_id}).json()
    finally:
        watcher.stop()
        cli("down", timeout=120)

    # Item progress from inside Wan's denoising loop, in /status and in the CLI's output.
    wan_items = [i for i in watcher.items if i["stage"] == "video_clips" and i["step"] is not None]
    assert wan_items, f"/status never showed a video_clips item with a step; saw {watcher.items[-5:]}"
    assert {i["total"] for i in wan_items} == {WAN_STEPS} and {i["tool_id"] for i in wan_items} == {"videos_wan"}
    assert all(i["job_id"] and i["summary"].startswith(f"video_clips {i['item']}: step ") for i in wan_items)
    assert any(i["eta_s"] is not None and ", eta " in i["summary"] for i in wan_items), wan_items
    assert re.search(rf"video_clips shot_\w+: step \d/{WAN_STEPS}", made.stdout), made.stdout[-3000:]

    with av.open(str(film)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert kinds.get("video") == "h264" and kinds.get("audio") == "aac"
    assert frames[0].shape == (SIDE, SIDE, 3)
    assert abs(len(frames) - 4 * FPS) <= 1

    backends = {}
    for artifact in arts["artifacts"]:
        backend = (artifact.get("metadata") or {}).get("backend")
        if backend:
            backends.setdefault(artifact["stage"], set()).add(backend)
    assert "sdxl" in backends["base_images"]
    assert "wan2.1-flf2v" in backends["video_clips"]
    assert "chatterbox" in backends["dialogue_audio"]
    assert backends.get("lipsync", set()) & {"wav2lip", "mux"}
    summary = next(a for a in arts["artifacts"] if a["artifact_type"] == "run_summary")
    assert json.loads(Path(summary["local_path"]).read_text())["video_final_uri"]
