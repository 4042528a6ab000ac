"""Cross-field MoviePlan rules: keyframe chain, unique ids, timeline coverage, speakers, bounds.

Each rule has a passing and a failing case, and a broken plan reports every
violation at once, field errors and rule violations together.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from sparkle_motion.errors import PlanValidationError
from sparkle_motion.plan import (
    MAX_CHARACTERS,
    MAX_RUNTIME_S,
    MAX_SHOTS,
    MAX_TIMELINE_ENTRIES,
    MoviePlan,
    plan_violations,
    validate_plan,
    violations_from_validation_error,
)

PLANS = Path(__file__).parent / "data" / "plans"


@pytest.fixture()
def plan() -> dict:
    return json.loads((PLANS / "rooftop_valid.json").read_text())


def make_plan(durations: list[float], *, characters: int = 1, timeline: list[dict] | None = None) -> dict:
    """A valid plan with the given shot durations, one silence covering the runtime unless a timeline is given."""
    return {
        "title": "Generated",
        "characters": [{"id": f"c{i}", "name": f"C{i}", "voice_profile": {"language": "en"}}
                       for i in range(characters)],
        "base_images": [{"id": f"f{i}", "prompt": f"frame {i}"} for i in range(len(durations) + 1)],
        "shots": [{"id": f"s{i}", "duration_sec": d, "setting": "", "visual_description": f"shot {i}",
                   "start_base_image_id": f"f{i}", "end_base_image_id": f"f{i + 1}", "motion_prompt": ""}
                  for i, d in enumerate(durations)],
        "dialogue_timeline": timeline if timeline is not None else
        [{"type": "silence", "start_time_sec": 0, "duration_sec": sum(durations)}],
        "render_profile": {"video": {"model_id": "auto"}},
    }


def by_rule(data: dict, rule: str) -> list[dict]:
    return [v for v in plan_violations(data) if v["rule"] == rule]


# -- keyframe chain ------------------------------------------------------------------------------

def test_continuity_message_names_the_expected_keyframe(plan: dict) -> None:
    plan["shots"][1]["start_base_image_id"] = "frame_000"
    assert plan_violations(plan) == [{
        "path": "shots[1].start_base_image_id", "rule": "keyframe_continuity",
        "message": "must equal base_images[1].id ('frame_001'), got 'frame_000'"}]


def test_continuity_end_frame_and_unknown_id(plan: dict) -> None:
    plan["shots"][0]["end_base_image_id"] = "frame_999"
    (found,) = plan_violations(plan)
    assert found["path"] == "shots[0].end_base_image_id"
    assert found["message"] == ("must equal base_images[1].id ('frame_001'), got 'frame_999', "
                                "which is not the id of any base image")


def test_base_image_count_must_be_shots_plus_one(plan: dict) -> None:
    plan["base_images"].pop()
    (found,) = plan_violations(plan)
    assert found["path"] == "base_images" and found["rule"] == "base_image_count"
    assert "len(shots) + 1 = 3" in found["message"] and "got 2" in found["message"]
    plan = make_plan([1.0, 1.0])
    plan["base_images"].append({"id": "extra", "prompt": "one too many"})
    assert [v["rule"] for v in plan_violations(plan)] == ["base_image_count"]


def test_reordered_base_images_break_every_affected_link(plan: dict) -> None:
    plan["base_images"][1], plan["base_images"][2] = plan["base_images"][2], plan["base_images"][1]
    paths = [v["path"] for v in by_rule(plan, "keyframe_continuity")]
    assert paths == ["shots[0].end_base_image_id", "shots[1].start_base_image_id", "shots[1].end_base_image_id"]


# -- unique ids ----------------------------------------------------------------------------------

@pytest.mark.parametrize("collection", ["characters", "base_images", "shots"])
def test_ids_are_unique_per_collection(collection: str) -> None:
    data = make_plan([1.0, 1.0, 1.0], characters=3)
    data[collection][2]["id"] = data[collection][0]["id"]
    found = by_rule(data, "duplicate_id")
    assert len(found) == 1
    assert found[0]["path"] == f"{collection}[2].id"
    assert f"already used by {collection}[0].id" in found[0]["message"]


def test_same_id_in_different_collections_is_fine() -> None:
    data = make_plan([1.0], characters=1)
    data["characters"][0]["id"] = "s0"  # same as the shot id: separate namespaces
    assert plan_violations(data) == []


# -- timeline ------------------------------------------------------------------------------------

def timeline(*entries: tuple[str, float, float]) -> list[dict]:
    out = []
    for kind, start, duration in entries:
        entry = {"type": kind, "start_time_sec": start, "duration_sec": duration}
        if kind == "dialogue":
            entry.update(character_id="c0", text="Hello.")
        out.append(entry)
    return out


def test_timeline_must_start_at_zero() -> None:
    data = make_plan([3.0], timeline=timeline(("dialogue", 0.5, 2.5)))
    (found,) = plan_violations(data)
    assert found["path"] == "dialogue_timeline[0].start_time_sec" and found["rule"] == "timeline_start"
    assert "must start at 0 s but starts at 0.5 s" in found["message"]


def test_timeline_gap_is_reported_with_its_size() -> None:
    data = make_plan([4.0], timeline=timeline(("dialogue", 0, 1.0), ("silence", 1.25, 2.75)))
    (found,) = plan_violations(data)
    assert found["path"] == "dialogue_timeline[1].start_time_sec" and found["rule"] == "timeline_gap"
    assert "gap of 0.25 s after dialogue_timeline[0], which ends at 1 s" in found["message"]


def test_timeline_overlap_is_reported() -> None:
    data = make_plan([3.0], timeline=timeline(("dialogue", 0, 2.0), ("silence", 1.5, 1.5)))
    (found,) = plan_violations(data)
    assert found["rule"] == "timeline_overlap" and found["path"] == "dialogue_timeline[1].start_time_sec"
    assert "before dialogue_timeline[0] ends at 2 s" in found["message"]


def test_timeline_out_of_order_is_reported() -> None:
    data = make_plan([3.0], timeline=timeline(("silence", 1.0, 2.0), ("dialogue", 0, 1.0)))
    rules = [v["rule"] for v in plan_violations(data)]
    assert rules == ["timeline_start", "timeline_overlap", "timeline_end"]


def test_timeline_must_end_at_the_runtime() -> None:
    short = make_plan([2.0, 2.0], timeline=timeline(("silence", 0, 3.5)))
    (found,) = plan_violations(short)
    assert found["path"] == "dialogue_timeline[0]" and found["rule"] == "timeline_end"
    assert "ends at 3.5 s" in found["message"] and "shots run 4 s" in found["message"]
    long = make_plan([2.0, 2.0], timeline=timeline(("silence", 0, 4.5)))
    assert by_rule(long, "timeline_end")


def test_empty_timeline_is_reported() -> None:
    data = make_plan([2.0], timeline=[])
    (found,) = plan_violations(data)
    assert found["path"] == "dialogue_timeline" and "is empty" in found["message"]


@pytest.mark.parametrize("error, ok", [(0.0009, True), (-0.0009, True), (0.001, True), (0.0011, False),
                                       (-0.0011, False), (0.05, False)])
def test_timeline_tolerance_is_one_millisecond(error: float, ok: bool) -> None:
    # The error is applied to the start of the middle entry and to the end of the last one.
    data = make_plan([1.0, 1.0], timeline=timeline(("silence", 0, 1.0), ("silence", 1.0 + error, 1.0)))
    assert (plan_violations(data) == []) is ok


def test_decimal_timings_do_not_accumulate_float_error() -> None:
    entries = [("silence", round(i * 0.1, 1), 0.1) for i in range(300)]
    data = make_plan([10.0, 10.0, 10.0], timeline=timeline(*entries))
    assert plan_violations(data) == []


# -- dialogue ------------------------------------------------------------------------------------

def test_dialogue_must_name_a_defined_character(plan: dict) -> None:
    plan["dialogue_timeline"][3]["character_id"] = "kai"
    (found,) = plan_violations(plan)
    assert found["path"] == "dialogue_timeline[3].character_id" and found["rule"] == "unknown_character"
    assert "unknown character 'kai' (known: 'ava', 'miko')" in found["message"]


def test_dialogue_without_any_characters(plan: dict) -> None:
    plan["characters"] = []
    found = by_rule(plan, "unknown_character")
    assert [v["path"] for v in found] == ["dialogue_timeline[1].character_id", "dialogue_timeline[3].character_id"]
    assert "the plan defines no characters" in found[0]["message"]


def test_silent_film_needs_no_characters() -> None:
    assert plan_violations(make_plan([2.0], characters=0)) == []


# -- bounds --------------------------------------------------------------------------------------

def test_shot_count_bound() -> None:
    assert plan_violations(make_plan([1.0] * MAX_SHOTS)) == []
    found = plan_violations(make_plan([1.0] * (MAX_SHOTS + 1)))
    assert {v["path"] for v in found} == {"shots", "base_images"}
    assert all("at most" in v["message"] for v in found)


def test_character_count_bound() -> None:
    assert plan_violations(make_plan([1.0], characters=MAX_CHARACTERS)) == []
    (found,) = plan_violations(make_plan([1.0], characters=MAX_CHARACTERS + 1))
    assert found["path"] == "characters" and "at most 50" in found["message"]


def test_timeline_entry_bound() -> None:
    entries = [("silence", i * 0.01, 0.01) for i in range(MAX_TIMELINE_ENTRIES + 1)]
    runtime = round((MAX_TIMELINE_ENTRIES + 1) * 0.01, 2)
    found = plan_violations(make_plan([runtime], timeline=timeline(*entries)))
    assert [v["path"] for v in found] == ["dialogue_timeline"]
    assert "at most 2000" in found[0]["message"]


def test_runtime_bound_is_thirty_minutes() -> None:
    assert plan_violations(make_plan([60.0] * 30)) == []
    found = plan_violations(make_plan([60.0] * 30 + [0.5],
                                      timeline=timeline(("silence", 0, 900.0), ("silence", 900.0, 900.5))))
    assert [v["rule"] for v in found] == ["runtime_limit"]
    assert found[0]["path"] == "shots"
    assert "1800.5 s exceeds the limit of 1800 s" in found[0]["message"]
    assert MAX_RUNTIME_S == 1800


# -- complete reports ----------------------------------------------------------------------------

def test_every_violation_is_reported_at_once(plan: dict) -> None:
    plan["render_profile"]["video"].pop("model_id")               # field error
    plan["shots"][0]["motion_prompt"] = 7                         # field error
    plan["shots"][1]["start_base_image_id"] = "frame_002"         # continuity
    plan["base_images"][2]["id"] = "frame_000"                    # duplicate (+ continuity)
    plan["dialogue_timeline"][3]["character_id"] = "kai"          # unknown speaker
    plan["dialogue_timeline"][0]["start_time_sec"] = 0.2          # timeline start
    with pytest.raises(PlanValidationError) as info:
        validate_plan(plan)
    error = info.value
    got = {(d["path"], d["rule"]) for d in error.details}
    assert got == {
        ("render_profile.video.model_id", "missing"),
        ("shots[0].motion_prompt", "string_type"),
        ("shots[1].start_base_image_id", "keyframe_continuity"),
        ("shots[1].end_base_image_id", "keyframe_continuity"),
        ("base_images[2].id", "duplicate_id"),
        ("dialogue_timeline[3].character_id", "unknown_character"),
        ("dialogue_timeline[0].start_time_sec", "timeline_start"),
        ("dialogue_timeline[1].start_time_sec", "timeline_overlap"),
    }
    assert error.code == "plan_invalid" and error.http_status == 422
    assert error.context["violation_count"] == 8
    assert error.message.startswith("MoviePlan is invalid (8 violations): ")
    assert "render_profile.video.model_id: is required" in error.message
    assert all(set(d) == {"path", "rule", "message"} for d in error.details)


def test_rejected_values_do_not_cause_follow_on_rule_violations() -> None:
    data = make_plan([2.0, 2.0])
    data["shots"][0]["duration_sec"] = -2.0          # field error; runtime is then unknown
    data["dialogue_timeline"][0]["start_time_sec"] = "soon"
    found = plan_violations(data)
    assert [v["path"] for v in found] == ["shots[0].duration_sec", "dialogue_timeline[0].start_time_sec"]


def test_rules_still_run_on_the_valid_parts_when_fields_are_invalid(plan: dict) -> None:
    plan["title"] = ""
    plan["dialogue_timeline"][0]["start_time_sec"] = 0.1
    rules = [v["rule"] for v in plan_violations(plan)]
    assert rules == ["string_too_short", "timeline_start", "timeline_overlap"]


def test_model_validate_enforces_the_rules_too(plan: dict) -> None:
    plan["shots"][1]["start_base_image_id"] = "frame_000"
    with pytest.raises(ValidationError) as info:
        MoviePlan.model_validate(plan)
    (error,) = info.value.errors()
    assert error["type"] == "plan_rules"
    assert "shots[1].start_base_image_id: must equal base_images[1].id ('frame_001')" in error["msg"]


def test_violations_from_a_model_that_embeds_a_plan(plan: dict) -> None:
    class ProduceRequest(BaseModel):
        plans: list[MoviePlan]

    plan["shots"][1]["start_base_image_id"] = "frame_000"
    bad_field = json.loads((PLANS / "tiny.json").read_text())
    bad_field["dialogue_timeline"][0]["text"] = ""
    with pytest.raises(ValidationError) as info:
        ProduceRequest.model_validate({"plans": [plan, bad_field]})
    found = violations_from_validation_error(info.value, ProduceRequest)
    assert [(v["path"], v["rule"]) for v in found] == [
        ("plans[0].shots[1].start_base_image_id", "keyframe_continuity"),
        ("plans[1].dialogue_timeline[0].text", "string_too_short"),
    ]


def test_validate_plan_revalidates_an_instance(plan: dict) -> None:
    movie = validate_plan(plan)
    assert validate_plan(movie) == movie
    broken = MoviePlan.model_construct(**{**movie.__dict__, "shots": movie.shots[:1]})
    with pytest.raises(PlanValidationError) as info:
        validate_plan(broken)
    assert {d["rule"] for d in info.value.details} == {"base_image_count", "timeline_end"}
