"""kill -9 of each service (and of ffmpeg under assemble) mid-run: the run finishes by itself, whole.

No test here calls resume: a killed tool is restarted by the mesh supervisor and
the caller's ToolClient waits for it (mesh.json says it is restarting); a killed
production_agent is restarted too and resumes its interrupted run at start
(``auto_resume``). Each case plans with its own seed, so no step is served
from another case's cache and the killed service really is called.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fault_harness import (
    assert_run_is_whole,
    ffmpeg_children,
    kill9,
    service_info,
    start_run,
    tiny_plan,
    wait_for_step,
    wait_mesh_ready,
    wait_run_ended,
)

from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings
from sparkle_motion.plan import validate_plan
from sparkle_motion.plan.validation import read_plan_json
from sparkle_motion.runs import StepRecord
from sparkle_motion.services import ToolClient

pytestmark = pytest.mark.slow

#: service → (seed of its plan, the steps during which it is killed).
MID_CALL: dict[str, tuple[int, Callable[[StepRecord], bool]]] = {
    "tts_chatterbox": (11, lambda s: s.stage == "dialogue_audio" and (s.item or "").startswith("line_")),
    "images_sdxl": (12, lambda s: s.stage == "base_images" and not (s.item or "").endswith(".qa")),
    "qa_qwen2vl": (13, lambda s: s.stage == "base_images" and (s.item or "").endswith(".qa")),
    "videos_wan": (14, lambda s: s.stage == "video_clips" and not (s.item or "").endswith(".qa")),
    "lipsync_wav2lip": (15, lambda s: s.stage == "lipsync"),
    "assemble_ffmpeg": (16, lambda s: s.stage == "assemble"),
    "production_agent": (17, lambda s: s.stage == "video_clips"),
}


@pytest.mark.parametrize("tool_id", sorted(MID_CALL))
def test_a_service_killed_mid_call_is_ridden_out(fault_mesh: Settings, tool_id: str) -> None:
    wait_mesh_ready(fault_mesh)
    seed, in_its_stage = MID_CALL[tool_id]
    plan = tiny_plan(seed)
    assert any(s.is_talking_closeup for s in plan.shots), "the plan must exercise lipsync"
    before = service_info(fault_mesh, tool_id)
    run_id = start_run(fault_mesh, plan)
    step = wait_for_step(fault_mesh, run_id, in_its_stage)
    kill9(before["pid"])
    final = wait_run_ended(fault_mesh, run_id)
    assert final.status == "succeeded", f"{tool_id} killed in {step.stage}/{step.item}: {final.error}"
    after = service_info(fault_mesh, tool_id)
    assert after["restarts"] == before["restarts"] + 1 and after["pid"] != before["pid"]
    facts = assert_run_is_whole(fault_mesh, run_id, plan)
    if tool_id == "production_agent":
        # The step cut off by the kill was closed as failed and done again by the resumed run.
        redone = [s for s in facts["steps"] if s.stage == step.stage and s.item == step.item]
        assert [s.status for s in redone] == ["failed", "succeeded"]


def test_ffmpeg_killed_under_assemble_is_run_again(fault_mesh: Settings) -> None:
    wait_mesh_ready(fault_mesh)
    plan = tiny_plan(18)
    assemble_pid = service_info(fault_mesh, "assemble_ffmpeg")["pid"]
    run_id = start_run(fault_mesh, plan)
    wait_for_step(fault_mesh, run_id, lambda s: s.stage == "assemble")
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        children = ffmpeg_children(assemble_pid)
        if children:
            kill9(children[0])
            killed = children[0]
        else:
            time.sleep(0.005)
    assert killed is not None, "no ffmpeg ran under assemble_ffmpeg"
    final = wait_run_ended(fault_mesh, run_id)
    assert final.status == "succeeded", final.error
    assert service_info(fault_mesh, "assemble_ffmpeg")["pid"] == assemble_pid  # the tool itself lived on
    assert_run_is_whole(fault_mesh, run_id, plan)


def test_script_agent_killed_before_planning_is_waited_for(fault_mesh: Settings) -> None:
    """`make`'s first stage: the plan request reaches a script_agent the supervisor is restarting."""
    wait_mesh_ready(fault_mesh)
    before = service_info(fault_mesh, "script_agent")
    kill9(before["pid"])
    with ToolClient("script_agent", settings=fault_mesh, timeout=300) as client:
        result = client.invoke({"prompt": "A lighthouse keeper befriends a storm", "shots": 2, "duration_s": 6,
                                "seed": 19})
    assert service_info(fault_mesh, "script_agent")["restarts"] == before["restarts"] + 1
    plan = validate_plan(read_plan_json(ArtifactStore(fault_mesh.home).path_for(result["artifact_uri"])))
    with ProductionClient(fault_mesh, timeout=120) as production:
        run_id = production.start(plan_uri=result["artifact_uri"], qa_mode="full").run_id
    assert wait_run_ended(fault_mesh, run_id).status == "succeeded"
    assert_run_is_whole(fault_mesh, run_id, plan)
