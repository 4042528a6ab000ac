"""load_plan_file (plan JSON and script_agent's plan artifact), the reference sample, plan_hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkle_motion.errors import PlanValidationError
from sparkle_motion.plan import MAX_PLAN_FILE_BYTES, MoviePlan, load_plan_file, plan_hash, validate_plan

PLANS = Path(__file__).parent / "data" / "plans"


def load_error(path: Path) -> PlanValidationError:
    with pytest.raises(PlanValidationError) as info:
        load_plan_file(path)
    return info.value


def test_rooftop_reference_sample_is_invalid_for_the_documented_reasons() -> None:
    """The sample from NOTEBOOK_AGENT_INTEGRATION.md, stored as script_agent's artifact wrapper."""
    error = load_error(PLANS / "rooftop_reference.json")
    found = {d["path"]: d for d in error.details}
    # Its timeline starts at 8.4 s, so the first 8.4 s of the film have no audio plan.
    start = found["validated_plan.dialogue_timeline[0].start_time_sec"]
    assert start["rule"] == "timeline_start"
    assert "must start at 0 s but starts at 8.4 s" in start["message"]
    # ...and line 1 ends at 11.0 s while line 2 starts at 11.2 s.
    gap = found["validated_plan.dialogue_timeline[1].start_time_sec"]
    assert gap["rule"] == "timeline_gap" and "gap of 0.2 s" in gap["message"]
    # render_profile.video names a model (the required part) but uses keys the contract
    # does not have: max_fps (the field is fps) and runtime.
    assert "did you mean 'fps'?" in found["validated_plan.render_profile.video.max_fps"]["message"]
    assert found["validated_plan.render_profile.video.runtime"]["rule"] == "extra_forbidden"
    # Seeds sit in a per-image "metadata" object; BaseImage has a "seed" field instead.
    for index in range(3):
        extra = found[f"validated_plan.base_images[{index}].metadata"]
        assert extra["rule"] == "extra_forbidden"
        assert "id, prompt, negative_prompt, seed" in extra["message"]
    # Everything else is acceptable: keyframe chain, speakers, the end of the timeline (17.5 s),
    # free-form plan metadata such as shot_count="2".
    assert len(error.details) == 7
    assert "starts at 8.4 s" in error.message
    assert error.context["file"].endswith("rooftop_reference.json")


def test_rooftop_reference_with_its_timeline_and_keys_fixed_is_valid() -> None:
    data = json.loads((PLANS / "rooftop_reference.json").read_text())["validated_plan"]
    for image in data["base_images"]:
        image["seed"] = image.pop("metadata")["seed"]
    data["render_profile"]["video"] = {"model_id": "wan-2.1", "fps": 24}
    data["dialogue_timeline"][:0] = [{"type": "silence", "start_time_sec": 0, "duration_sec": 8.4}]
    data["dialogue_timeline"].insert(2, {"type": "silence", "start_time_sec": 11.0, "duration_sec": 0.2})
    movie = validate_plan(data)
    assert movie.runtime_s == 17.5
    assert movie.metadata.seed == 12345  # "12345" in the sample: a numeric string is accepted


@pytest.mark.parametrize("name, runtime, shots, lines", [("rooftop_valid", 6.0, 2, 2), ("tiny", 2.0, 1, 1)])
def test_sample_plans_load(name: str, runtime: float, shots: int, lines: int) -> None:
    movie = load_plan_file(PLANS / f"{name}.json")
    assert isinstance(movie, MoviePlan)
    assert (movie.runtime_s, len(movie.shots), len(movie.base_images), len(movie.dialogue_lines)) == (
        runtime, shots, shots + 1, lines)
    assert any(entry.type == "silence" for entry in movie.dialogue_timeline)
    assert movie.dialogue_timeline[-1].end_time_sec == pytest.approx(runtime, abs=1e-9)


def test_artifact_wrapper_and_bare_plan_give_the_same_plan(tmp_path: Path) -> None:
    bare = json.loads((PLANS / "rooftop_valid.json").read_text())
    wrapped = tmp_path / "artifact.json"
    wrapped.write_text(json.dumps({"request": {"prompt": "x"}, "validated_plan": bare, "metadata": {}}))
    assert load_plan_file(wrapped) == load_plan_file(PLANS / "rooftop_valid.json")
    wrapped.write_text(json.dumps({"request": {}, "validated_plan": [1]}))
    (detail,) = load_error(wrapped).details
    assert detail["path"] == "validated_plan" and "must be a JSON object" in detail["message"]


def test_bad_json_reports_the_position(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{\n  "title": "x",\n  "shots": [1, 2,]\n}')
    error = load_error(path)
    (detail,) = error.details
    assert detail["path"] == "$" and detail["rule"] == "invalid_json"
    assert "line 3 column" in detail["message"]
    assert error.context["file"] == str(path)


@pytest.mark.parametrize("text, fragment", [
    ('{"title": "a", "title": "b"}', "duplicate key 'title'"),
    ('{"title": NaN}', "NaN is not a valid JSON number"),
    ('{"duration": Infinity}', "Infinity is not a valid JSON number"),
    ("", "invalid JSON at line 1 column 1"),
])
def test_json_that_would_silently_lose_data_is_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    (detail,) = load_error(path).details
    assert detail["path"] == "$" and fragment in detail["message"]


def test_non_utf8_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b'{"title": "\xff"}')
    assert "not UTF-8" in load_error(path).details[0]["message"]
    path.write_bytes(b"\xef\xbb\xbf" + (PLANS / "tiny.json").read_bytes())  # a BOM from a Windows editor
    assert load_plan_file(path).title == "Tiny"


def test_size_limit(tmp_path: Path) -> None:
    plan = (PLANS / "tiny.json").read_text()
    path = tmp_path / "big.json"
    path.write_text(plan + " " * (MAX_PLAN_FILE_BYTES - len(plan.encode())))
    assert load_plan_file(path).title == "Tiny"  # exactly at the limit
    with path.open("a") as handle:
        handle.write(" ")
    (detail,) = load_error(path).details
    assert detail["rule"] == "file_too_large" and "5 MiB" in detail["message"]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope.json").details[0]["rule"] == "file_unreadable"
    assert "cannot read plan file" in load_error(tmp_path).details[0]["message"]


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("[]")
    assert load_error(path).details == [
        {"path": "$", "rule": "model_type", "message": "must be a JSON object holding a MoviePlan (got list)"}]


def test_plan_hash_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    data = json.loads((PLANS / "rooftop_valid.json").read_text())
    digest = plan_hash(data)
    assert len(digest) == 64 and int(digest, 16) >= 0
    reordered = json.loads(json.dumps(data, sort_keys=True))
    reordered["shots"][0] = dict(reversed(list(reordered["shots"][0].items())))
    assert plan_hash(reordered) == digest
    assert plan_hash(validate_plan(data)) == digest == plan_hash(load_plan_file(PLANS / "rooftop_valid.json"))
    # Defaults spelled out and integers written as floats are the same plan.
    explicit = json.loads(json.dumps(data))
    explicit["shots"][0]["duration_sec"] = 3
    explicit["render_profile"]["video"].update(fps=None, width=None, height=None)
    assert plan_hash(explicit) == digest
    changed = json.loads(json.dumps(data))
    changed["dialogue_timeline"][1]["text"] = "I was afraid of losing us."
    assert plan_hash(changed) != digest
    # Pinned: caches and resume keys depend on the hash, so a change to the canonical form
    # (or to a model default) must be deliberate. Update this value when it is.
    assert digest == "9ac22c7616cc11bc1cd01d3c42f2a57c74f0bf58dbe5d19e2548b9813104a5c1"


def test_plan_hash_refuses_an_invalid_plan() -> None:
    data = json.loads((PLANS / "tiny.json").read_text())
    data["shots"][0]["duration_sec"] = 3.0
    with pytest.raises(PlanValidationError):
        plan_hash(data)
