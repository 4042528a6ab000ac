"""`sparkle-motion make` on the gpu profiles, every GPU backend pointed at a tiny model, Wan and LTX in turn.

SDXL, Wan2.1 FLF2V (configs/profiles/gpu.yaml) or LTX-Video (gpu-24gb.yaml),
Chatterbox and Qwen2-VL run their real loading and inference code on CPU with
random weights (the pictures and sounds are noise); Wav2Lip runs as a
subprocess through the stand-in checkout at that process boundary. The film
must come out with the planned geometry, frame count and streams, every
stage's artifacts must say which GPU backend made them, the clips carry the
memory plan of their (simulated) card, and the item progress of the video
model's denoising loop shows in /status and in the CLI.

QA is on: keyframes and clips are asked Qwen2-VL's vision checks. A random
model answers nonsense, so what is asserted is the plumbing — the VLM loaded,
its verdicts are in each report, an unparseable one is ``inconclusive`` and
does not fail the run — under a test QA policy whose signal thresholds let
noise through (the real thresholds rightly fail it: no continuity with the
keyframes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import pytest
import yaml

pytest.importorskip("diffusers", reason="the GPU extra is not installed: pip install -e '.[gpu]'")
pytest.importorskip("chatterbox", reason="Chatterbox is not installed: bash scripts/install_chatterbox.sh .venv")

from test_lipsync_wav2lip_tiny import make_checkout  # noqa: E402
from tiny_models.qwen2vl import build_tiny_qwen2vl  # noqa: E402
from tiny_models.ltx import build_tiny_ltx_video  # noqa: E402
from tiny_models.sdxl import build_tiny_sdxl  # noqa: E402
from tiny_models.wan import build_tiny_wan_flf2v  # noqa: E402

from function_tools.qa_qwen2vl.models import CHECK_NAMES, VLM_CHECKS  # noqa: E402
from sparkle_motion.agents.qa_checks import VISION_CHECKS  # noqa: E402
from sparkle_motion.config import load_settings, project_path  # noqa: E402
from sparkle_motion.testing import free_port, mesh_env  # noqa: E402

# A whole film through six model backends on a shared CPU: more than the suite's 600 s default when loaded.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gpu_e2e"), pytest.mark.timeout(1500)]

TESTS = Path(__file__).parent
FPS, SIDE = 8, 64
CPU = {"device": "cpu", "dtype": "float32", "lock_timeout_s": 120, "keep_warm_s": 600}
# Every tool of the gpu profile is long_running (a job). The video model is slowed to STEP_DELAY_S per denoising
# step, so each clip renders for several times the callers' HTTP read timeout: only the job path can finish it.
READ_TIMEOUT_S, WAN_STEPS, STEP_DELAY_S = 2.0, 4, 1.5
LTX_STEP_DELAY_S = 0.75   # gpu-24gb.yaml's distilled schedule: 8 timesteps
QA_MAX_NEW_TOKENS, QA_TOKEN_DELAY_S = 16, 0.1


@dataclass(frozen=True)
class VideoTurn:
    """One turn of the test: the profile whose video backend runs, and what its clips must say."""

    profile: str
    backend: str
    steps: int
    card_gb: int          # memory.simulate_total_gb: the card the memory plan is chosen for
    plan: str             # the plan memory: auto picks on that card (docs/gpu.md)


TURNS = {
    "wan": VideoTurn("gpu", "wan2.1-flf2v", WAN_STEPS, 80, "resident"),
    "ltx": VideoTurn("gpu-24gb", "ltx-video", 8, 24, "group_offload_fp8"),
}


@dataclass(frozen=True)
class TinyModels:
    root: Path
    sdxl: Path
    chatterbox: Path
    qwen2vl: Path
    wav2lip: tuple[Path, Path]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """The models both turns share, built once."""
    root = tmp_path_factory.mktemp("gpu-e2e-models")
    chatterbox_dir = root / "chatterbox"
    subprocess.run([sys.executable, "-m", "tiny_models.chatterbox", str(chatterbox_dir)], cwd=TESTS, check=True,
                   env={**os.environ, "PYTHONPATH": str(TESTS)}, timeout=600)
    return TinyModels(root, build_tiny_sdxl(root / "sdxl"), chatterbox_dir, build_tiny_qwen2vl(root / "qwen2vl"),
                      make_checkout(root))


def lax_qa_policy(path: Path) -> Path:
    """configs/qa_policy.yaml with signal thresholds any noise passes (the text policy and limits kept)."""
    policy = yaml.safe_load(project_path("configs/qa_policy.yaml").read_text())
    policy.update(version="gpu-e2e-lax",
                  black_frames={"luma_max": 0.0, "max_frames": 100000},
                  frozen_frames={"diff_max": 0.0, "max_seconds": 100000.0},
                  speech={"min_coverage": 0.0, "max_unexpected_s": 100000.0, "boundary_margin_s": 0.2},
                  clipping={"level": 1.0, "max_fraction": 1.0},
                  loudness={"target_lufs": -16.0, "tolerance_lu": 100.0},
                  continuity={**policy["continuity"], "min_ssim": -1.0, "max_phash_distance": 64},
                  degenerate_image={"min_luma_std": 0.0, "max_dominant_colour_fraction": 1.0,
                                    "min_entropy_bits": 0.0})
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def gpu_test_profile(root: Path, models: TinyModels, turn: VideoTurn) -> Path:
    """configs/profiles/<turn>.yaml with tiny models, small renders, QA on a lax policy and free ports."""
    checkout, checkpoint = models.wav2lip
    profile = yaml.safe_load(project_path(f"configs/profiles/{turn.profile}.yaml").read_text())
    tools = profile["tools"]
    assert tools["videos_wan"]["backend"] == turn.backend
    # No Gemini key here: the planner is the offline one; everything after it is the GPU stack.
    tools["script_agent"] = {"backend": "sparkle-offline-planner", "model": "sparkle-offline-planner"}
    tools["images_sdxl"].update(model=str(models.sdxl),
                                options={**CPU, "steps": 2, "memory": {"vae_tiling": True},
                                         # the frame's own 64x64, not SDXL's 1024x1024 bucket (minutes on CPU)
                                         "native_buckets": False})
    card = {"plan": "auto", "simulate_total_gb": turn.card_gb}
    if turn.backend == "ltx-video":
        # The profile's own options (the distilled 8-timestep schedule, guidance 1.0, memory: auto) on a tiny model.
        tools["videos_wan"].update(model=str(build_tiny_ltx_video(root / "ltx")), test_step_delay_s=LTX_STEP_DELAY_S,
                                   options={**tools["videos_wan"]["options"], **CPU, "max_sequence_length": 16,
                                            "max_area": SIDE * SIDE, "max_model_frames": 17, "memory": card})
    else:
        tools["videos_wan"].update(model=str(build_tiny_wan_flf2v(root / "wan")), test_step_delay_s=STEP_DELAY_S,
                                   options={**CPU, "steps": WAN_STEPS, "vae_dtype": "float32",
                                            "max_area": SIDE * SIDE, "oom_policy": "fail", "memory": card})
    tools["tts_chatterbox"].update(model=str(models.chatterbox),
                                   options={**CPU, "max_new_tokens": 12, "n_cfm_timesteps": 2})
    tools["lipsync_wav2lip"]["options"] = {"wav2lip_dir": str(checkout), "checkpoint_path": str(checkpoint),
                                           "python": sys.executable, "device": "cpu", "timeout_s": 120,
                                           "lock_timeout_s": 120, "preset": "ultrafast"}
    # Each generated token waits QA_TOKEN_DELAY_S, so /status can see Qwen2-VL's progress between its polls.
    tools["qa_qwen2vl"].update(model=str(models.qwen2vl), test_step_delay_s=QA_TOKEN_DELAY_S,
                               options={**CPU, "max_new_tokens": QA_MAX_NEW_TOKENS, "frames_per_video": 2,
                                        "policy_path": str(lax_qa_policy(root / "qa_policy.yaml"))})
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


def vlm_reports(arts: dict) -> list[tuple[dict, dict]]:
    """(QA report JSON, its artifact metadata) for every keyframe and clip QA report of the run."""
    return [(json.loads(Path(a["local_path"]).read_text()), a["metadata"]) for a in arts["artifacts"]
            if a["artifact_type"] == "qa_report" and a["stage"] in ("base_images", "video_clips")]


@pytest.mark.parametrize("turn", list(TURNS), ids=list(TURNS))
def test_make_runs_end_to_end_through_the_gpu_backends(tmp_path, tiny_models, turn):
    turn = TURNS[turn]
    profile = gpu_test_profile(tmp_path, tiny_models, turn)
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
        made = cli("make", "A lighthouse keeper lights the lamp as a storm arrives", "-o", str(film),
                   "--shots", "2", "--duration", "4", "--seed", "3", "--qa", "full")
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        assert "profile gpu-tiny" in made.stdout
        run_id = next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("run "))
        with httpx.Client(base_url=settings.url_for("production_agent"), timeout=30) as client:
            arts = client.get("/artifacts", params={"run_id": run_id}).json()
    finally:
        watcher.stop()
        cli("down", timeout=120)

    # Item progress from inside the video model's denoising loop, in /status and in the CLI's output.
    stepped = [i for i in watcher.items if i["step"] is not None]
    video_items = [i for i in stepped if i["stage"] == "video_clips" and i["tool_id"] == "videos_wan"]
    assert video_items, f"/status never showed a video_clips item with a step; saw {watcher.items[-5:]}"
    assert {i["total"] for i in video_items} == {turn.steps}
    # Qwen2-VL's token loop reports progress too (total: max_new_tokens), on keyframes and on clips.
    qa_items = [i for i in stepped if i["tool_id"] == "qa_qwen2vl"]
    assert {i["stage"] for i in qa_items} >= {"base_images", "video_clips"}, qa_items[-5:]
    assert {i["total"] for i in qa_items} == {QA_MAX_NEW_TOKENS}
    assert all(i["job_id"] and i["summary"].startswith(f"video_clips {i['item']}: step ") for i in video_items)
    assert any(i["eta_s"] is not None and ", eta " in i["summary"] for i in video_items), video_items
    assert re.search(rf"video_clips shot_\w+: step \d/{turn.steps}", made.stdout), made.stdout[-3000:]

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
    assert turn.backend in backends["video_clips"]
    assert "chatterbox" in backends["dialogue_audio"]
    assert backends.get("lipsync", set()) & {"wav2lip", "mux"}
    assert backends["qa_publish"] == {"qwen2-vl"}
    # Each clip records the memory plan memory: auto chose for the (simulated) card.
    clips = [a for a in arts["artifacts"] if a["stage"] == "video_clips" and a["media_type"] == "video/mp4"]
    assert clips and {a["metadata"]["memory_plan"]["name"] for a in clips} == {turn.plan}
    assert {a["metadata"]["memory_plan"]["card_gb"] for a in clips} == {float(turn.card_gb)}

    # Vision QA really asked: Qwen2-VL loaded, and its verdicts on every keyframe and every clip are in the
    # reports; the random model's unparseable answers are inconclusive and did not fail the run.
    reports = vlm_reports(arts)
    assert len(reports) >= 3 + 2, [m.get("media") for _, m in reports]
    for report, meta in reports:
        assert meta["gpu"]["model_key"].startswith("qwen2-vl:") and meta["gpu"]["load_count"] >= 1
        assert meta["vlm_checks"] == list(VLM_CHECKS)
        vlm = [c for c in report["checks"] if c["name"] in VLM_CHECKS]
        assert sorted(c["name"] for c in vlm) == sorted(VLM_CHECKS)
        assert all(isinstance(c["metrics"].get("raw_output"), str) for c in vlm)
        for check in (c for c in vlm if c["status"] == "inconclusive"):
            assert any(r.startswith(f"inconclusive: {check['name']}") for r in report["reasons"]), report["reasons"]
        statuses = {c["status"] for c in report["checks"]}
        assert report["verdict"] == ("fail" if "failed" in statuses else
                                     "inconclusive" if "inconclusive" in statuses else "pass")
    assert any(c["status"] == "inconclusive" for r, _ in reports for c in r["checks"] if c["name"] in VLM_CHECKS)
    summary = next(a for a in arts["artifacts"] if a["artifact_type"] == "run_summary")
    summary = json.loads(Path(summary["local_path"]).read_text())
    assert summary["video_final_uri"]
    # What the qwen2-vl backend cannot answer yet (the cast stage's check) is listed, not dropped.
    assert summary["qa_not_available"] == sorted(c for c in VISION_CHECKS if c not in CHECK_NAMES)
