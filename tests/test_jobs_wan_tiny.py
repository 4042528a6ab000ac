"""Long renders as jobs, on the real Wan2.1 FLF2V backend with a tiny random-weight model on CPU.

The profile slows every denoising step on purpose (the test-only ``test_step_delay_s``,
honoured in ``ToolContext.progress``, which Wan's ``callback_on_step_end`` calls),
so a 9-frame clip renders for several times the callers' HTTP read timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("diffusers", reason="the GPU extra (torch, diffusers) is not installed: pip install -e '.[gpu]'")

from test_production_run import PLANS  # noqa: E402
from test_videos_wan_tiny import BASE_OPTIONS, SIDE, keyframe, put_png  # noqa: E402
from tiny_models.wan import build_tiny_wan_flf2v  # noqa: E402

from function_tools.videos_wan.models import VideosWanRequest  # noqa: E402
from sparkle_motion.agents.production_run import ProductionRun, StepOutcome, tool_payload  # noqa: E402
from sparkle_motion.artifacts import ArtifactStore  # noqa: E402
from sparkle_motion.config import load_settings, project_path  # noqa: E402
from sparkle_motion.errors import ToolCallError  # noqa: E402
from sparkle_motion.gpu_utils import device_lock_is_free  # noqa: E402
from sparkle_motion.plan import validate_plan  # noqa: E402
from sparkle_motion.runs import RunRegistry  # noqa: E402
from sparkle_motion.services import ToolClient  # noqa: E402
from sparkle_motion.testing import RunningTool, free_port, running_tool  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("videos_wan_tiny")]

STEP_DELAY_S = 1.0
READ_TIMEOUT_S = 1.0
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wan-jobs-home")


@pytest.fixture(scope="module")
def profile_path(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_tiny_wan_flf2v(tmp_path_factory.mktemp("tiny-wan-jobs") / "wan", seed=0)
    profile = yaml.safe_load(project_path("configs/profiles/gpu.yaml").read_text())
    profile["name"] = "gpu-tiny-wan-jobs"
    profile["tools"]["videos_wan"] = {"backend": "wan2.1-flf2v", "model": str(model), "port": free_port(),
                                      "long_running": True, "test_step_delay_s": STEP_DELAY_S,
                                      "options": {**BASE_OPTIONS, "steps": 3}}
    profile["client"]["read_timeout_s"] = READ_TIMEOUT_S
    path = home / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="module")
def tool(home: Path, profile_path: Path) -> Iterator[RunningTool]:
    env = {"SPARKLE_PROFILE": str(profile_path), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None}
    port = yaml.safe_load(profile_path.read_text())["tools"]["videos_wan"]["port"]   # where ToolClient looks
    with running_tool("videos_wan", home=home, env=env, port=port, ready_timeout=120) as running:
        yield running


@pytest.fixture(scope="module")
def frames(home: Path) -> dict[str, str]:
    store = ArtifactStore(home)
    try:
        return {"start": put_png(store, keyframe("A neon city street at night in the rain")),
                "end": put_png(store, keyframe("A quiet beach at sunset with palm trees"))}
    finally:
        store.close()


def request(frames: dict[str, str], **extra: Any) -> VideosWanRequest:
    fields: dict[str, Any] = {"prompt": "rain on neon", "motion_prompt": "slow push in", "num_frames": 9, "fps": 8,
                              "width": SIDE, "height": SIDE, "seed": 5, **extra}
    return VideosWanRequest(start_frame_uri=frames["start"], end_frame_uri=frames["end"], **fields)


def test_cancel_mid_render_stops_within_one_step_and_frees_the_device_lock(tool, frames, home, monkeypatch):
    monkeypatch.setenv("SPARKLE_HOME", str(home))   # device_lock_is_free looks under this SPARKLE_HOME
    body = {**request(frames, steps=30).model_dump(mode="json", exclude_none=True), "run_id": "wan-jobs"}
    submitted = tool.client.post("/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    deadline = time.monotonic() + 300           # the first step includes loading the model
    while True:
        view = tool.client.get(f"/jobs/{job_id}").json()
        if (view["progress"] or {}).get("step", 0) >= 2 or view["state"] in ENDED:
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    assert view["state"] == "running" and view["progress"]["total"] == 30 and view["progress"]["phase"] == "full"
    assert not device_lock_is_free("cpu"), "a running render holds the device lock"

    asked = time.monotonic()
    cancel = tool.client.delete(f"/jobs/{job_id}")
    assert cancel.status_code == 202, cancel.text
    at_cancel = cancel.json()["progress"]["step"]
    while (view := tool.client.get(f"/jobs/{job_id}").json())["state"] not in ENDED:
        assert time.monotonic() - asked < 60, view
        time.sleep(0.05)
    stopped_after_s = time.monotonic() - asked
    assert view["state"] == "cancelled" and view["error"]["code"] == "cancelled", view
    # Within one step: the denoising loop reported no step past the one running when the cancel came.
    assert view["progress"]["step"] <= at_cancel + 1 < 30
    # The step delay is waited on the cancel token, so a cancel does not even wait out the delay.
    assert stopped_after_s < 30 * STEP_DELAY_S
    assert device_lock_is_free("cpu"), "the cancelled render left the device lock held"
    assert not list((home / "staging").glob("videos_wan-*")), "the cancelled render left staging files"
    events = [r for r in tool.log_records() if r.get("event") == "invoke.cancelled"]
    assert events and "DELETE /jobs" in events[-1]["reason"]


def test_a_render_longer_than_the_read_timeout_completes_through_the_production_run(tool, frames, home,
                                                                                   profile_path):
    settings = load_settings({"SPARKLE_HOME": str(home), "SPARKLE_PROFILE": str(profile_path)})
    assert settings.client.read_timeout_s == READ_TIMEOUT_S and settings.tool_profile("videos_wan").long_running
    registry = RunRegistry(settings.db_path)
    plan = validate_plan(json.loads((PLANS / "rooftop_valid.json").read_text()))
    registry.create_run("run_wan_job", plan_id=plan.metadata.plan_id)
    registry.set_status("run_wan_job", "running")
    run = ProductionRun("run_wan_job", plan, settings=settings, store=ArtifactStore(home), registry=registry)
    clip_request = request(frames)
    seen: list[dict] = []
    original = run.in_flight.on_job_view

    def spy(view: dict) -> None:
        original(view)
        seen.extend(i.model_dump() for i in run.in_flight.snapshot())

    run.in_flight.on_job_view = spy  # type: ignore[method-assign]

    def work() -> StepOutcome:
        response = run.invoke("videos_wan", clip_request, stage="video_clips")
        return StepOutcome({"uri": response["artifacts"][0]["uri"]}, [response["artifacts"][0]["artifact_id"]])

    started = time.monotonic()
    out = run.step("video_clips", "shot_001", "videos_wan", tool_payload(clip_request), work)
    took = time.monotonic() - started
    assert took > 3 * READ_TIMEOUT_S, f"the render took {took:.1f} s: not longer than the read timeout"
    manifest = ArtifactStore(home).get(out["uri"])
    assert manifest.metadata["backend"] == "wan2.1-flf2v" and manifest.metadata["generation"]["steps_completed"] == 3
    steps = [i for i in seen if i["step"] is not None]
    assert steps and steps[-1]["total"] == 3 and steps[-1]["summary"].startswith("video_clips shot_001: step ")
    assert any(i["eta_s"] is not None for i in steps), steps
    assert [s.status for s in registry.list_steps("run_wan_job")] == ["succeeded"]
    assert run.in_flight.snapshot() == []

    # The same call without the job path times out: the read timeout really is shorter than the render.
    with ToolClient("videos_wan", settings=settings, use_jobs=False) as sync:
        with pytest.raises(ToolCallError) as timed_out:
            sync.invoke({**tool_payload(request(frames, seed=6)), "run_id": "wan-jobs"})
    assert timed_out.value.code == "tool_timeout"
