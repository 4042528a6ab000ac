"""The plan's render_profile is honoured: ``auto`` runs the profile's model, a named model the profile
cannot serve is refused at intake (422 naming the field and the profile's models), and the model a run
uses is recorded in its artifacts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sparkle_motion.agents.production_run import ProductionRun
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings, load_settings
from sparkle_motion.errors import PlanValidationError
from sparkle_motion.plan import validate_plan
from sparkle_motion.plan.render_models import STAGE_TOOLS, render_models, served_names
from sparkle_motion.runs import RunRegistry
from sparkle_motion.testing import running_tool

PLANS = Path(__file__).parent / "data" / "plans"


def plan_with(**models: str) -> dict[str, Any]:
    plan = json.loads((PLANS / "rooftop_valid.json").read_text())
    for stage, model_id in models.items():
        plan["render_profile"].setdefault(stage, {})["model_id"] = model_id
    return plan


def settings_for(profile: str, home: Path) -> Settings:
    return load_settings({"SPARKLE_HOME": str(home)}, profile=profile)


def test_auto_means_what_the_active_profile_runs(tmp_path: Path) -> None:
    for profile in ("cpu", "gpu", "gpu-24gb"):
        settings = settings_for(profile, tmp_path)
        used = render_models(validate_plan(plan_with()), settings)
        assert used == {stage: settings.tool_profile(tool).model for stage, tool in STAGE_TOOLS.items()}
    assert render_models(validate_plan(plan_with()), settings_for("gpu-24gb", tmp_path))["video"] \
        == "Lightricks/LTX-Video-0.9.8-13B-distilled"


@pytest.mark.parametrize(("profile", "video"), [
    ("gpu", "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers"), ("gpu", "wan2.1-flf2v"),
    ("gpu", "wan2.1-flf2v-14b-720p-DIFFUSERS"), ("gpu-24gb", "ltx-video"), ("cpu", "keyframe_motion"),
])
def test_a_named_model_the_profile_serves_is_accepted(tmp_path: Path, profile: str, video: str) -> None:
    settings = settings_for(profile, tmp_path)
    used = render_models(validate_plan(plan_with(video=video)), settings)
    assert used["video"] == settings.tool_profile("videos_wan").model


def test_a_model_the_profile_cannot_serve_is_a_422_naming_field_and_models(tmp_path: Path) -> None:
    settings = settings_for("gpu-24gb", tmp_path)
    plan = validate_plan(plan_with(video="Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers", tts="some-other-tts"))
    with pytest.raises(PlanValidationError) as raised:
        render_models(plan, settings)
    error = raised.value
    assert error.http_status == 422 and error.code == "plan_invalid"
    assert error.field == "render_profile.video.model_id"
    assert [d["path"] for d in error.details] == ["render_profile.video.model_id", "render_profile.tts.model_id"]
    assert "Lightricks/LTX-Video-0.9.8-13B-distilled" in error.message and "gpu-24gb" in error.message
    assert error.context["profile_models"]["video"] == "Lightricks/LTX-Video-0.9.8-13B-distilled"
    assert served_names(settings.tool_profile("videos_wan")) == [
        "Lightricks/LTX-Video-0.9.8-13B-distilled", "LTX-Video-0.9.8-13B-distilled", "ltx-video"]


def test_plan_intake_over_http_refuses_an_unserved_model_and_accepts_auto(tmp_path: Path) -> None:
    env = {"SPARKLE_PROFILE": "cpu", "SPARKLE_TOKEN": None}
    with running_tool("production_agent", home=tmp_path, env=env, ready_timeout=120) as agent:
        refused = agent.client.post("/invoke", json={"plan": plan_with(video="wan-2.1"), "mode": "dry"}, timeout=60)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "plan_invalid" and error["field"] == "render_profile.video.model_id"
        assert "keyframe-motion-v1" in error["message"]
        accepted = agent.client.post("/invoke", json={"plan": plan_with(), "mode": "dry"}, timeout=60)
        assert accepted.status_code == 200 and accepted.json()["status"] == "succeeded", accepted.text
        named = agent.client.post("/invoke", json={"plan": plan_with(video="keyframe-motion-v1"), "mode": "dry"},
                                  timeout=60)
        assert named.status_code == 200, named.text


def test_the_models_a_run_uses_are_recorded_at_plan_intake(tmp_path: Path) -> None:
    settings = settings_for("cpu", tmp_path)
    store, registry = ArtifactStore(tmp_path), RunRegistry(settings.db_path)
    try:
        plan = validate_plan(plan_with())
        registry.create_run("run_models", plan_id=plan.plan_id)
        registry.set_status("run_models", "running")
        run = ProductionRun("run_models", plan, settings=settings, store=store, registry=registry)
        uri = run.plan_intake()["plan_uri"]
        assert store.get(uri).metadata["render_models"] == {
            "video": "keyframe-motion-v1", "images": "storyboard-v1", "tts": "kokoro-82m-v1.0-int8"}
    finally:
        store.close()


def test_every_tool_artifact_names_the_model_that_made_it(tmp_path: Path) -> None:
    """A tool's outputs carry tool, backend and model from the active profile (ToolContext.provenance)."""
    import io

    from PIL import Image

    settings = settings_for("cpu", tmp_path)
    store = ArtifactStore(tmp_path)
    try:
        uris = []
        for colour in ((200, 40, 40), (40, 40, 200)):
            buf = io.BytesIO()
            Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
            uris.append(store.put("inputs", "keyframes", "image", buf.getvalue(), "image/png", ext=".png").uri)
        with running_tool("videos_wan", home=tmp_path, env={"SPARKLE_PROFILE": "cpu", "SPARKLE_TOKEN": None},
                          ready_timeout=120) as tool:
            reply = tool.client.post("/invoke", json={"start_frame_uri": uris[0], "end_frame_uri": uris[1],
                                                      "num_frames": 6, "run_id": "models"}, timeout=120)
            assert reply.status_code == 200, reply.text
        body = reply.json()
        meta = store.get(body["video"]["uri"]).metadata
        profile = settings.tool_profile("videos_wan")
        assert (meta["tool"], meta["backend"], meta["model"]) == ("videos_wan", profile.backend, profile.model)
        assert body["model"] == profile.model
    finally:
        store.close()


def test_a_plan_copy_is_not_changed_by_intake(tmp_path: Path) -> None:
    data = plan_with(video="auto")
    before = copy.deepcopy(data)
    render_models(validate_plan(data), settings_for("cpu", tmp_path))
    assert data == before
