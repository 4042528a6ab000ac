"""Field-level MoviePlan rules: types, bounds, ids, language tags, unknown keys, helpers."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from sparkle_motion.errors import PlanValidationError
from sparkle_motion.ids import is_valid_id, path_safe_id
from sparkle_motion.plan import (
    AUTO_MODEL,
    DialogueLine,
    MoviePlan,
    PlanMetadata,
    RenderProfile,
    SilenceEntry,
    VideoProfile,
    VoiceProfile,
    normalize_language_tag,
    plan_hash,
    plan_violations,
    validate_plan,
)

PLANS = Path(__file__).parent / "data" / "plans"


@pytest.fixture()
def plan() -> dict:
    return json.loads((PLANS / "rooftop_valid.json").read_text())


def violations_at(data: dict, path: str) -> list[dict]:
    return [v for v in plan_violations(data) if v["path"] == path]


def only_violation(data: dict) -> dict:
    found = plan_violations(data)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("name", ["rooftop_valid", "tiny"])
def test_sample_plans_are_valid(name: str) -> None:
    data = json.loads((PLANS / f"{name}.json").read_text())
    assert plan_violations(data) == []
    assert isinstance(validate_plan(data), MoviePlan)


def test_valid_plan_helpers(plan: dict) -> None:
    movie = validate_plan(plan)
    assert movie.runtime_s == 6.0
    assert movie.shot_start_times == [0.0, 3.0]
    assert [line.character_id for line in movie.dialogue_lines] == ["ava", "miko"]
    assert movie.character("miko").name == "Miko"
    assert movie.base_image("frame_002").seed == 99125
    with pytest.raises(KeyError):
        movie.character("nobody")
    assert movie.plan_id == "rooftop_valid"
    assert movie.render_profile.images.model_id == AUTO_MODEL
    assert isinstance(movie.dialogue_timeline[0], SilenceEntry)
    assert isinstance(movie.dialogue_timeline[1], DialogueLine)
    assert movie.dialogue_timeline[1].end_time_sec == pytest.approx(2.9)


def test_plan_id_is_derived_from_content_when_absent(plan: dict) -> None:
    del plan["metadata"]["plan_id"]
    movie = validate_plan(plan)
    assert movie.plan_id == f"plan_{plan_hash(movie)[:16]}"
    other = copy.deepcopy(plan)
    other["title"] = "Another title"
    assert validate_plan(other).plan_id != movie.plan_id


def test_render_profile_defaults_and_with_defaults(plan: dict) -> None:
    plan["render_profile"] = {"video": {"model_id": "wan-2.1"}}
    movie = validate_plan(plan)
    video = movie.render_profile.video
    assert (video.fps, video.width, video.height) == (None, None, None)
    assert movie.render_profile.tts.model_id == AUTO_MODEL
    resolved = video.with_defaults({"fps": 24, "width": 640, "height": 360})
    assert (resolved.model_id, resolved.fps, resolved.width, resolved.height) == ("wan-2.1", 24, 640, 360)
    pinned = VideoProfile(model_id="x", fps=12, width=256, height=144).with_defaults({"fps": 24, "width": 640})
    assert (pinned.fps, pinned.width, pinned.height) == (12, 256, 144)
    with pytest.raises(ValidationError):
        video.with_defaults({"fps": 24, "width": 641, "height": 360})


def test_models_are_frozen(plan: dict) -> None:
    movie = validate_plan(plan)
    with pytest.raises(ValidationError):
        movie.title = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    "mutate, path, rule, fragment",
    [
        (lambda p: p.pop("title"), "title", "missing", "is required"),
        (lambda p: p.update(title="   "), "title", "string_too_short", "at least 1 character"),
        (lambda p: p.pop("render_profile"), "render_profile", "missing", "is required"),
        (lambda p: p["render_profile"].pop("video"), "render_profile.video", "missing", "is required"),
        (lambda p: p["render_profile"]["video"].pop("model_id"), "render_profile.video.model_id", "missing",
         "is required"),
        (lambda p: p["render_profile"]["video"].update(model_id="has space"), "render_profile.video.model_id",
         "string_pattern_mismatch", "'has space'"),
        (lambda p: p["render_profile"]["video"].update(fps=0), "render_profile.video.fps", "greater_than_equal",
         "(got 0)"),
        (lambda p: p["render_profile"]["video"].update(fps=61), "render_profile.video.fps", "less_than_equal",
         "(got 61)"),
        (lambda p: p["render_profile"]["video"].update(width=644), "render_profile.video.width", "multiple_of",
         "multiple of 8"),
        (lambda p: p["render_profile"]["video"].update(height=32), "render_profile.video.height",
         "greater_than_equal", "64"),
        (lambda p: p["render_profile"]["video"].update(width=8192), "render_profile.video.width",
         "less_than_equal", "4096"),
        (lambda p: p["render_profile"]["images"].update(model_id=""), "render_profile.images.model_id",
         "string_pattern_mismatch", "pattern"),
        (lambda p: p["shots"][0].update(duration_sec=0), "shots[0].duration_sec", "greater_than", "(got 0)"),
        (lambda p: p["shots"][0].update(duration_sec=-1.5), "shots[0].duration_sec", "greater_than", "(got -1.5)"),
        (lambda p: p["shots"][0].update(duration_sec=60.5), "shots[0].duration_sec", "less_than_equal", "60"),
        (lambda p: p["shots"][0].update(duration_sec="three"), "shots[0].duration_sec", "float_parsing", "'three'"),
        (lambda p: p["shots"][1].pop("visual_description"), "shots[1].visual_description", "missing", "required"),
        (lambda p: p["shots"][1].update(visual_description=" \n"), "shots[1].visual_description",
         "string_too_short", "at least 1"),
        (lambda p: p["shots"][1].update(motion_prompt="x" * 2001), "shots[1].motion_prompt", "string_too_long",
         "at most 2000"),
        (lambda p: p["shots"][0].update(is_talking_closeup="maybe"), "shots[0].is_talking_closeup", "bool_parsing",
         "maybe"),
        (lambda p: p["base_images"][2].update(seed=-1), "base_images[2].seed", "greater_than_equal", "(got -1)"),
        (lambda p: p["base_images"][2].update(seed=2**32), "base_images[2].seed", "less_than_equal", "4294967295"),
        (lambda p: p["base_images"][0].update(prompt=""), "base_images[0].prompt", "string_too_short", "at least 1"),
        (lambda p: p["characters"][0].update(name=""), "characters[0].name", "string_too_short", "at least 1"),
        (lambda p: p["characters"][0].pop("voice_profile"), "characters[0].voice_profile", "missing", "required"),
        (lambda p: p["characters"][0]["voice_profile"].pop("language"), "characters[0].voice_profile.language",
         "missing", "required"),
        (lambda p: p["characters"][0]["voice_profile"].update(rate=0.1), "characters[0].voice_profile.rate",
         "greater_than_equal", "0.25"),
        (lambda p: p["characters"][0]["voice_profile"].update(rate=5), "characters[0].voice_profile.rate",
         "less_than_equal", "4"),
        (lambda p: p["characters"][0]["voice_profile"].update(pitch=-21), "characters[0].voice_profile.pitch",
         "greater_than_equal", "-20"),
        (lambda p: p["characters"][1]["voice_profile"].update(voice_id=""), "characters[1].voice_profile.voice_id",
         "string_too_short", "at least 1"),
        (lambda p: p["dialogue_timeline"][1].update(text="  "), "dialogue_timeline[1].text", "string_too_short",
         "at least 1"),
        (lambda p: p["dialogue_timeline"][1].update(text="a" * 1001), "dialogue_timeline[1].text",
         "string_too_long", "at most 1000"),
        (lambda p: p["dialogue_timeline"][1].pop("character_id"), "dialogue_timeline[1].character_id", "missing",
         "required"),
        (lambda p: p["dialogue_timeline"][0].pop("type"), "dialogue_timeline[0].type", "union_tag_not_found",
         "'dialogue', 'silence'"),
        (lambda p: p["dialogue_timeline"][0].update(type="pause"), "dialogue_timeline[0].type", "union_tag_invalid",
         "must be one of 'dialogue', 'silence' (got 'pause')"),
        (lambda p: p["metadata"].update(seed=-5), "metadata.seed", "greater_than_equal", "(got -5)"),
        (lambda p: p["metadata"].update(plan_id="../etc"), "metadata.plan_id", "invalid_name_id", "name id"),
        (lambda p: p.update(shots=[]), "shots", "too_short", "at least 1 item"),
        (lambda p: p.update(characters={"ava": {}}), "characters", "list_type", "valid list"),
    ],
)
def test_field_rules_report_path_and_reason(plan: dict, mutate, path: str, rule: str, fragment: str) -> None:
    mutate(plan)
    found = violations_at(plan, path)
    assert found, plan_violations(plan)
    assert found[0]["rule"] == rule
    assert fragment in found[0]["message"], found[0]["message"]
    with pytest.raises(PlanValidationError) as info:
        validate_plan(plan)
    assert {"path": path, "rule": rule, "message": found[0]["message"]} in info.value.details


def test_timeline_numbers_must_be_finite(plan: dict) -> None:
    plan["dialogue_timeline"][4]["duration_sec"] = math.inf
    found = violations_at(plan, "dialogue_timeline[4].duration_sec")
    assert found and "finite" in found[0]["message"]


@pytest.mark.parametrize("bad_id", ["", "..", "a/b", ".hidden", "a..b", "sp ace", "x" * 129, "é"])
@pytest.mark.parametrize("where", ["characters[0].id", "base_images[0].id", "shots[0].id",
                                   "dialogue_timeline[1].character_id", "characters[0].reference_image_id"])
def test_ids_must_be_safe_path_components(plan: dict, bad_id: str, where: str) -> None:
    collection, rest = where.split("[", 1)
    index, field = rest.split("].")
    plan[collection][int(index)][field] = bad_id
    found = violations_at(plan, where)
    assert found, plan_violations(plan)
    assert found[0]["rule"] == "invalid_id"
    assert "safe id" in found[0]["message"] and "'..'" in found[0]["message"]
    assert found[0]["message"].endswith(f"(got {bad_id[:80]!r})")


def test_unknown_keys_are_refused_with_a_hint(plan: dict) -> None:
    plan["base_images"][0]["negative_promt"] = "blurry"
    plan["render_profile"]["video"]["max_fps"] = 24
    plan["shots"][0]["duration"] = 3
    plan["characters"][0]["voice_profile"]["lang"] = "en"
    plan["unexpected"] = True
    found = {v["path"]: v for v in plan_violations(plan)}
    assert found["base_images[0].negative_promt"]["rule"] == "extra_forbidden"
    assert "did you mean 'negative_prompt'?" in found["base_images[0].negative_promt"]["message"]
    assert "did you mean 'fps'?" in found["render_profile.video.max_fps"]["message"]
    assert "model_id, fps, width, height, notes" in found["render_profile.video.max_fps"]["message"]
    assert "did you mean 'duration_sec'?" in found["shots[0].duration"]["message"]
    assert "did you mean 'language'?" in found["characters[0].voice_profile.lang"]["message"]
    assert found["unexpected"]["message"].startswith("unknown field")
    assert len(found) == 5


def test_unknown_key_with_odd_characters_gets_a_quoted_path(plan: dict) -> None:
    plan["shots"][0]["motion prompt"] = "x"
    assert violations_at(plan, 'shots[0]["motion prompt"]')[0]["rule"] == "extra_forbidden"


def test_metadata_keeps_free_provenance(plan: dict) -> None:
    plan["metadata"].update(shot_count="2", model="offline-planner")
    movie = validate_plan(plan)
    assert movie.metadata.model_extra == {"shot_count": "2", "model": "offline-planner"}
    assert movie.metadata.seed == 12345
    assert PlanMetadata().source == "manual" and PlanMetadata().seed == 0


def test_text_is_stripped(plan: dict) -> None:
    plan["dialogue_timeline"][1]["text"] = "  I was scared of losing us.\n"
    assert validate_plan(plan).dialogue_timeline[1].text == "I was scared of losing us."


@pytest.mark.parametrize(
    "tag, canonical",
    [("en-US", "en-US"), ("en", "en"), ("EN-us", "en-US"), ("zh-Hant-TW", "zh-Hant-TW"), ("zh-hant-tw", "zh-Hant-TW"),
     ("sr-Latn", "sr-Latn"), ("es-419", "es-419"), ("de-CH-1996", "de-CH-1996"), ("yue", "yue"),
     ("en-US-x-twain", "en-US-x-twain"), ("x-klingon", "x-klingon"), ("en-a-bbb-x-a-ccc", "en-a-bbb-x-a-ccc"),
     ("zh-cmn-Hans-CN", "zh-cmn-Hans-CN")],
)
def test_bcp47_tags_are_accepted_and_normalized(tag: str, canonical: str) -> None:
    assert normalize_language_tag(tag) == canonical
    assert VoiceProfile(language=tag).language == canonical


@pytest.mark.parametrize("tag", ["", "e", "en US", "1en", "toolonglang", "en-", "-US", "en--US", "en-US-", "123", "en-U",
                                 "en-USA1", "en-x", "x", "en-a", "en-" + "a" * 9, "fr-FR-x-toolongsubtag"])
def test_malformed_bcp47_tags_are_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="BCP-47"):
        normalize_language_tag(tag)


def test_underscore_language_tag_gets_a_fix(plan: dict) -> None:
    plan["characters"][0]["voice_profile"]["language"] = "en_US"
    found = only_violation(plan)
    assert found["path"] == "characters[0].voice_profile.language"
    assert found["rule"] == "invalid_language"
    assert "use 'en-US'" in found["message"]


def test_render_profile_model_requires_video() -> None:
    with pytest.raises(ValidationError):
        RenderProfile.model_validate({"images": {"model_id": "sdxl"}})
    assert RenderProfile.model_validate({"video": {"model_id": "wan-2.1"}}).images.model_id == AUTO_MODEL


def test_non_object_input_is_one_root_violation() -> None:
    assert plan_violations([1, 2]) == [
        {"path": "$", "rule": "model_type", "message": "must be a JSON object holding a MoviePlan (got list)"}]
    with pytest.raises(PlanValidationError) as info:
        validate_plan("plan.json")  # type: ignore[arg-type]
    assert info.value.details[0]["path"] == "$"


@pytest.mark.parametrize("name", ["le-marché-de-nuit", "夜市", "Ночной_рынок", "soirée.2024"])
def test_plan_id_is_a_name_in_any_script(plan: dict, name: str) -> None:
    plan["metadata"]["plan_id"] = name
    assert validate_plan(plan).plan_id == name
    safe = path_safe_id(name)
    assert is_valid_id(safe) and safe != name and path_safe_id(name) == safe
    assert path_safe_id("le-marche-de-nuit") == "le-marche-de-nuit"  # already safe: unchanged


@pytest.mark.parametrize("name", ["../etc", "a/b", "a\\b", ".hidden", "two words", "tab\there", "nul\x00", ""])
def test_plan_id_still_refuses_separators_and_dots(plan: dict, name: str) -> None:
    plan["metadata"]["plan_id"] = name
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(plan)
    assert any(d.get("field", "").endswith("plan_id") or "plan_id" in str(d) for d in caught.value.details)
