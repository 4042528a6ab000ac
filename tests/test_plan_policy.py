"""Content policy before any work (issue 13, point 6): every text of a plan screened at intake.

A blocked term in a dialogue line (or any prompt, negative prompt, character
description) fails the plan with the field's JSON path and the rule — at
production intake before any tool is called (qa_mode=skip included), at
``sparkle-motion validate`` (exit 2) and in the notebook's plan review.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from function_tools.qa_qwen2vl.checks import load_policy
from sparkle_motion.agents.production_run import ProductionRun
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import load_settings
from sparkle_motion.errors import ContentPolicyError, InvalidInputError
from sparkle_motion.plan import validate_plan
from sparkle_motion.plan.policy import plan_policy_violations, screen_plan
from sparkle_motion.runs import RunRegistry
from sparkle_motion.testing import running_tool

PLANS = Path(__file__).parent / "data" / "plans"
BLOCKED_LINE = "Then we bury the gore under the floor."   # 'gore': text_policy.graphic_violence


def plan_json(**edits: Any) -> dict[str, Any]:
    plan = json.loads((PLANS / "rooftop_valid.json").read_text())
    for path, value in edits.items():
        node: Any = plan
        *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
        for part in parents:
            node = node[part]
        node[last] = value
    return plan


def blocked_dialogue_plan() -> dict[str, Any]:
    return plan_json(**{"dialogue_timeline/3/text": BLOCKED_LINE})


def test_a_clean_plan_passes_and_the_policy_file_holds_the_screening_section() -> None:
    screen_plan(validate_plan(plan_json()))
    policy = load_policy()
    assert "graphic_violence" in policy.text_policy.blocked_terms
    assert set(policy.plan_screening.negative_prompt_allowed) <= set(policy.text_policy.blocked_terms)


def test_a_blocked_word_in_a_dialogue_line_names_its_json_path_and_rule() -> None:
    with pytest.raises(ContentPolicyError) as raised:
        screen_plan(validate_plan(blocked_dialogue_plan()))
    error = raised.value
    assert isinstance(error, InvalidInputError) and error.http_status == 422 and error.code == "content_policy"
    assert error.field == "dialogue_timeline[3].text"
    assert error.details == [{"path": "dialogue_timeline[3].text", "rule": "text_policy.graphic_violence",
                              "message": "blocked term 'gore' (graphic_violence) at character 17"}]
    assert "dialogue_timeline[3].text" in error.message and "text_policy.graphic_violence" in error.message


@pytest.mark.parametrize(("path", "text", "rule"), [
    ("characters/0/description", "A NUDE sculptor", "text_policy.sexual_content"),
    ("base_images/1/prompt", "a swastika on the wall", "text_policy.hate"),
    ("shots/0/visual_description", "a beheading at dawn", "text_policy.graphic_violence"),
    ("shots/1/motion_prompt", "slow push in; self harm", "text_policy.self_harm"),
    ("title", "White   Power", "text_policy.hate"),
])
def test_every_screened_field_is_named(path: str, text: str, rule: str) -> None:
    violations = plan_policy_violations(validate_plan(plan_json(**{path: text})))
    parts = path.split("/")
    expected = parts[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts[1:])
    assert [(v["path"], v["rule"]) for v in violations] == [(expected, rule)]


def test_negative_prompts_may_name_what_to_keep_out_but_not_everything() -> None:
    allowed = plan_json(**{"base_images/0/negative_prompt": "nsfw, nude, gore, blurry"})
    assert plan_policy_violations(validate_plan(allowed)) == []
    hateful = plan_json(**{"base_images/0/negative_prompt": "blurry, swastika"})
    assert [v["path"] for v in plan_policy_violations(validate_plan(hateful))] == ["base_images[0].negative_prompt"]
    # Words that merely contain a term are not hits (whole words only).
    partial = plan_json(**{"dialogue_timeline/1/text": "Gorey old nudes-free"})
    assert plan_policy_violations(validate_plan(partial)) == []


def test_production_intake_fails_before_any_step_even_with_qa_skipped(tmp_path: Path) -> None:
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)}, profile="cpu")
    store, registry = ArtifactStore(tmp_path), RunRegistry(settings.db_path)
    try:
        plan = validate_plan(blocked_dialogue_plan())
        registry.create_run("run_policy", plan_id=plan.plan_id)
        registry.set_status("run_policy", "running")
        run = ProductionRun("run_policy", plan, settings=settings, store=store, registry=registry, qa_mode="skip")
        with pytest.raises(ContentPolicyError) as raised:
            run.plan_intake()
        assert raised.value.field == "dialogue_timeline[3].text"
        assert registry.list_steps("run_policy") == []        # not even the intake step: no tool was called
        assert store.list("run_policy") == []
    finally:
        store.close()


def test_production_agent_refuses_the_plan_with_a_422_and_creates_no_run(tmp_path: Path) -> None:
    env = {"SPARKLE_PROFILE": "cpu", "SPARKLE_TOKEN": None}
    with running_tool("production_agent", home=tmp_path, env=env, ready_timeout=120) as agent:
        refused = agent.client.post("/invoke", json={"plan": blocked_dialogue_plan(), "qa_mode": "skip"},
                                    timeout=60)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "content_policy" and error["field"] == "dialogue_timeline[3].text"
        assert error["details"][0]["rule"] == "text_policy.graphic_violence"
        runs = agent.client.get("/runs").json()["runs"]
    assert runs == []
    registry = RunRegistry(tmp_path / "sparkle.db")
    assert registry.list_runs() == []


def test_validate_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "blocked.json"
    bad.write_text(json.dumps(blocked_dialogue_plan()))
    done = subprocess.run([sys.executable, "-m", "sparkle_motion.cli", "validate", str(bad)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SPARKLE_HOME": str(tmp_path)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "dialogue_timeline[3].text" in done.stderr and "gore" in done.stderr


def test_the_notebook_plan_review_shows_the_policy_violation() -> None:
    pytest.importorskip("ipywidgets")
    from sparkle_motion.notebook.plan_review import PlanReview

    review = PlanReview()
    review.load(copy.deepcopy(blocked_dialogue_plan()), "test")
    assert not review.is_valid and review.plan is None
    assert [v["path"] for v in review.violations] == ["dialogue_timeline[3].text"]
    assert "dialogue_timeline[3].text" in review.violations_view.value
    review.set_field("dialogue_timeline[3].text", "Then we sweep the floor.")
    assert review.is_valid and review.plan is not None
