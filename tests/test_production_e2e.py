"""End to end over HTTP with all eight real processes: a plan becomes a film.

The film is checked with a real decoder (PyAV), never with the tools' own metadata.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from mesh_harness import running_mesh, wait_for_status
from sparkle_motion import mesh
from function_tools.qa_qwen2vl.models import VLM_CHECKS
from sparkle_motion.media.vad import speech_segments

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mesh")]

PLANS = Path(__file__).parent / "data" / "plans"
FPS, WIDTH, HEIGHT = 24, 320, 184


@pytest.fixture(scope="module")
def mesh_settings(tmp_path_factory):
    home = tmp_path_factory.mktemp("mesh")
    with running_mesh(home, render={"fps": FPS, "width": WIDTH, "height": HEIGHT}) as settings:
        yield settings


@pytest.fixture(scope="module")
def production(mesh_settings):
    with httpx.Client(base_url=mesh_settings.url_for("production_agent"), timeout=60) as client:
        yield client


def rooftop_plan(seed: int = 12345) -> dict:
    plan = json.loads((PLANS / "rooftop_valid.json").read_text())
    plan["metadata"]["seed"] = seed
    plan["metadata"]["plan_id"] = f"rooftop_{seed}"
    for base in plan["base_images"]:
        base["seed"] = base["seed"] + seed
    return plan


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def decode_film(path: Path):
    with av.open(str(path)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=24000)
        chunks = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return kinds, frames, audio


def rms_db(samples: np.ndarray) -> float:
    return 20 * np.log10(max(1e-9, float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))))


def run_plan(production: httpx.Client, plan: dict, **body) -> dict:
    response = production.post("/invoke", json={"plan": plan, "mode": "run", **body})
    assert response.status_code == 202, response.text
    return response.json()


def test_plan_becomes_a_film(production, mesh_settings):
    plan = rooftop_plan()
    run_id = run_plan(production, plan)["run_id"]
    status = wait_for_status(production, run_id, {"succeeded", "failed"})
    assert status["status"] == "succeeded", status["error"]
    assert status["progress"] == 1.0

    arts = production.get("/artifacts", params={"run_id": run_id}).json()
    stages = {s["stage"]: s for s in arts["stages"]}
    assert list(stages) == ["plan_intake", "cast", "dialogue_audio", "base_images", "video_clips", "lipsync",
                            "assemble", "qa_publish", "finalize"]
    final = next(a for a in stages["finalize"]["artifacts"] if a["artifact_type"] == "video_final")
    assert final["checksum"].startswith("sha256:") and Path(final["local_path"]).is_file()

    kinds, frames, audio = decode_film(Path(final["local_path"]))
    assert kinds.get("video") == "h264" and kinds.get("audio") == "aac"
    assert kinds.get("subtitle") == "mov_text"
    runtime = sum(s["duration_sec"] for s in plan["shots"])
    assert abs(len(frames) - runtime * FPS) <= 1
    assert frames[0].shape == (HEIGHT, WIDTH, 3)

    # Keyframes at the shot boundaries: frame 0, the cut and the last frame are the base images.
    by_id = {a["artifact_id"]: a for a in arts["artifacts"]}
    keyframes = {step["item"]: np.asarray(Image.open(by_id[step["artifact_ids"][0]]["local_path"]).convert("RGB"))
                 for step in status["steps"] if step["stage"] == "base_images" and not step["item"].endswith(".qa")}
    cut = round(plan["shots"][0]["duration_sec"] * FPS)
    assert psnr(frames[0], keyframes["frame_000"]) > 30
    assert psnr(frames[cut], keyframes["frame_001"]) > 30 or psnr(frames[cut - 1], keyframes["frame_001"]) > 30
    assert psnr(frames[-1], keyframes["frame_002"]) > 30
    assert psnr(frames[cut // 2], keyframes["frame_000"]) < 30  # it moves in between

    # The talking close-up's speaker moves their storyboard mouth (lipsync `mux`, from the word timings).
    synced = [a for a in stages["lipsync"]["artifacts"] if a["media_type"] == "video/mp4"]
    assert synced and all(a["metadata"]["lip_motion"] for a in synced), [a["metadata"].get("mouth_motion")
                                                                           for a in synced]
    speakers = {f["speaker"] for a in synced for f in a["metadata"]["mouth_motion"]["track"]}
    assert speakers and speakers <= {c["name"] for c in plan["characters"]}
    # ... re-encoded with the clips' own settings, so the film is still concatenated by stream copy.
    film = next(a for a in stages["assemble"]["artifacts"] if a["media_type"] == "video/mp4")
    assert film["metadata"]["concat_mode"] == "stream_copy", film["metadata"].get("concat_reason")

    # Speech inside every line's slot, silence outside the spoken intervals.
    sr = 24000
    assert abs(len(audio) / sr - runtime) < 0.1
    lines = [e for e in plan["dialogue_timeline"] if e["type"] == "dialogue"]
    report_entry = next(a for a in stages["dialogue_audio"]["artifacts"]
                        if a["artifact_type"] == "dialogue_timeline_audio")
    report = json.loads(Path(report_entry["local_path"]).read_text())["lines"]
    for line, measured in zip(lines, report):
        slot = audio[int(line["start_time_sec"] * sr):int((line["start_time_sec"] + line["duration_sec"]) * sr)]
        assert rms_db(slot) > -35, f"no speech in slot of {line['text']!r}"
        assert abs(measured["start_actual_s"] - line["start_time_sec"]) < 1e-3
    spoken = [(m["start_actual_s"] - 0.05, m["end_actual_s"] + 0.2) for m in report]
    silent = np.ones(len(audio), bool)
    for start, end in spoken:
        silent[int(max(0, start) * sr):int(end * sr)] = False
    assert rms_db(audio[silent]) < -45
    segments = speech_segments(audio, sr)
    assert segments, "VAD found no speech in the film"
    for start, end in segments:
        assert any(s - 0.1 <= start and end <= e + 0.1 for s, e in spoken), (start, end, spoken)

    srt = next(a for a in stages["assemble"]["artifacts"] if a["local_path"].endswith(".srt"))
    text = Path(srt["local_path"]).read_text()
    for line in lines:
        assert line["text"] in text


def test_same_plan_again_recomputes_nothing(production):
    plan = rooftop_plan()
    first = wait_for_status(production, run_plan(production, plan)["run_id"], {"succeeded", "failed"})
    assert first["status"] == "succeeded", first["error"]
    second = wait_for_status(production, run_plan(production, plan)["run_id"], {"succeeded", "failed"})
    assert second["status"] == "succeeded", second["error"]
    assert second["steps"] and {s["status"] for s in second["steps"]} == {"cached"}


def test_resume_from_a_stage_recomputes_it_and_what_follows(production):
    plan = rooftop_plan()
    done = wait_for_status(production, run_plan(production, plan)["run_id"], {"succeeded", "failed"})
    accepted = production.post("/invoke", json={"run_id": done["run_id"], "resume_from": "assemble"}).json()
    rerun = wait_for_status(production, accepted["run_id"], {"succeeded", "failed"})
    assert rerun["status"] == "succeeded", rerun["error"]
    by_stage: dict[str, set[str]] = {}
    for step in rerun["steps"]:
        by_stage.setdefault(step["stage"], set()).add(step["status"])
    assert by_stage["video_clips"] == {"cached"} and by_stage["dialogue_audio"] == {"cached"}
    assert by_stage["assemble"] == {"succeeded"} and by_stage["finalize"] == {"succeeded"}


def test_dry_mode_calls_no_tool(production):
    plan = rooftop_plan(seed=777)
    response = production.post("/invoke", json={"plan": plan, "mode": "dry"})
    assert response.status_code == 200, response.text
    body = response.json()
    graph = {g["stage"]: g for g in body["invocation_graph"]}
    assert graph["video_clips"]["calls"] == 2 and graph["base_images"]["calls"] == 3
    assert graph["dialogue_audio"]["calls"] == 2 and graph["lipsync"]["calls"] == 1
    assert body["resource_estimate"]["frames"] == 6 * FPS
    status = production.get("/status", params={"run_id": body["run_id"]}).json()
    assert status["steps"] == []


def test_bad_plan_is_422_with_paths(production):
    plan = rooftop_plan()
    plan["shots"][1]["start_base_image_id"] = "frame_000"
    plan["dialogue_timeline"][0]["start_time_sec"] = 0.5
    response = production.post("/invoke", json={"plan": plan})
    assert response.status_code == 422
    error = response.json()["error"]
    paths = {d["path"] for d in error["details"]}
    assert "shots[1].start_base_image_id" in paths
    assert any(p.startswith("dialogue_timeline[0]") for p in paths)
    bad_uri = production.post("/invoke", json={"plan_uri": "artifact+fs://../../etc/passwd"})
    assert bad_uri.status_code == 422 and bad_uri.json()["error"]["field"] == "plan_uri"


def test_pause_resume_and_stop(production, mesh_settings):
    run_id = run_plan(production, rooftop_plan(seed=4242))["run_id"]
    paused = production.post("/control/pause", json={"run_id": run_id})
    assert paused.status_code == 200, paused.text
    state = wait_for_status(production, run_id, {"paused"})
    time.sleep(0.6)  # a step in flight when pause arrived may finish; then nothing moves
    frozen = len(wait_for_status(production, run_id, {"paused"})["steps"])
    time.sleep(1.5)
    assert len(production.get("/status", params={"run_id": run_id}).json()["steps"]) == frozen
    assert production.post("/control/resume", json={"run_id": run_id}).status_code == 200
    done = wait_for_status(production, run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert state["status"] == "paused"

    run_id = run_plan(production, rooftop_plan(seed=4343))["run_id"]
    wait_for_status(production, run_id, {"running"}, predicate=lambda s: len(s["steps"]) >= 2)
    assert production.post("/control/stop", json={"run_id": run_id}).status_code == 200
    again = production.post("/invoke", json={"run_id": run_id})
    # While the step in flight finishes: 409 run_stopping (resume in a moment); after: a new run of the same plan.
    assert again.status_code in (202, 409), again.text
    if again.status_code == 409:
        error = again.json()["error"]
        assert error["code"] == "run_stopping" and error["field"] == "run_id" and error["context"]["retry_after"]
    else:
        assert again.json()["run_id"] != run_id
    stopped = wait_for_status(production, run_id, {"stopped"})
    time.sleep(1.0)
    kept = production.get("/artifacts", params={"run_id": run_id}).json()
    assert kept["artifacts"], "a stopped run keeps its artifacts"
    assert production.post("/control/resume", json={"run_id": run_id}).status_code == 409
    assert stopped["finished_at"]


def test_killed_production_agent_resumes_by_itself_without_redoing_steps(production, mesh_settings):
    plan = rooftop_plan(seed=9090)
    run_id = run_plan(production, plan)["run_id"]
    wait_for_status(production, run_id, {"running"},
                    predicate=lambda s: sum(st["status"] == "succeeded" for st in s["steps"]) >= 5)
    state = mesh.read_state(mesh_settings)
    old_pid = state["services"]["production_agent"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    # The supervisor restarts production_agent; the new process marks the run interrupted and,
    # the profile's auto_resume being on, resumes it by itself: nobody posts /invoke again.
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "the restarted production_agent did not resume the run"
        try:
            status = production.get("/status", params={"run_id": run_id})
            if status.status_code == 200 and any("resuming automatically" in e["message"]
                                                 for e in status.json()["log_tail"]):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    assert mesh.read_state(mesh_settings)["services"]["production_agent"]["pid"] != old_pid
    done = wait_for_status(production, run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert any("run interrupted: owner process exited" in e["message"] for e in done["log_tail"])
    executed = Counter((s["stage"], s["item"]) for s in done["steps"] if s["status"] == "succeeded")
    assert executed and max(executed.values()) == 1, executed


def test_a_second_mesh_on_the_same_ports_is_refused(mesh_settings, tmp_path):
    from sparkle_motion.config import load_settings

    other = load_settings({"SPARKLE_HOME": str(tmp_path), "SPARKLE_PROFILE": str(mesh_settings.profile_path)})
    with pytest.raises(mesh.MeshError) as info:
        mesh.up(other, timeout=10)
    assert "ports already in use" in info.value.message and "production_agent" in info.value.message
    assert not mesh.is_up(other)


def test_a_plan_without_dialogue_makes_a_silent_film_that_passes_qa(production):
    plan = rooftop_plan(seed=31)
    plan["dialogue_timeline"] = [{"type": "silence", "start_time_sec": 0.0, "duration_sec": 6.0}]
    for shot in plan["shots"]:
        shot["is_talking_closeup"] = False
    done = wait_for_status(production, run_plan(production, plan)["run_id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    arts = production.get("/artifacts", params={"run_id": done["run_id"], "stage": "finalize"}).json()
    film = next(a for a in arts["artifacts"] if a["artifact_type"] == "video_final")
    kinds, frames, audio = decode_film(Path(film["local_path"]))
    assert kinds.get("audio") == "aac" and abs(len(frames) - 6 * FPS) <= 1
    assert rms_db(audio) < -60
    # The cpu profile's QA backend (signal) has no vision-language check: listed, not silently dropped.
    summary = next(a for a in arts["artifacts"] if a["artifact_type"] == "run_summary")
    assert json.loads(Path(summary["local_path"]).read_text())["qa_not_available"] == sorted(VLM_CHECKS)
