"""The cast pieces in-process: looks from descriptions and portraits, the consistency check, --cast, the estimate."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from function_tools.images_sdxl.looks import LAYOUT_KEY, look_from_description, look_from_portrait
from function_tools.images_sdxl.models import CharacterReference, ImagesSdxlRequest
from function_tools.images_sdxl.output import encode_png
from function_tools.images_sdxl.scene import describe_scene
from function_tools.images_sdxl.storyboard import render_storyboard
from function_tools.qa_qwen2vl.checks import load_policy
from function_tools.qa_qwen2vl.consistency import (appearance_distance, check_character_consistency, faces_camera,
                                                   figure_pixels, portrait_pixels)
from sparkle_motion.agents.cast_stage import cast_plan, parse_cast_option, portrait_prompt, portrait_seed
from sparkle_motion.agents.production_estimate import estimate
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.uploads import put_image_file
from sparkle_motion.config import load_settings
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.plan import validate_plan

PLAN = Path(__file__).parent / "data" / "plans" / "two_characters.json"
THRESHOLD = load_policy().character_consistency.max_distance


def storyboard_png(prompt: str, seed: int, names: list[str], looks: dict, size=(256, 144)) -> Image.Image:
    image, layout = render_storyboard(prompt, seed, *size, scene=describe_scene(prompt), characters=names,
                                      looks=looks)
    return Image.open(io.BytesIO(encode_png(image, {LAYOUT_KEY: json.dumps(layout)})))


def cast_of(plan: dict) -> tuple[dict, dict]:
    """Each character's storyboard portrait (from the description) and the look read back from it."""
    portraits, looks = {}, {}
    for character in plan["characters"]:
        c = validate_plan(plan).characters[plan["characters"].index(character)]
        portraits[c.name] = storyboard_png(portrait_prompt(c), portrait_seed(21, c.id), [c.name],
                                           {c.name: look_from_description(c.name, c.description)}, (144, 144))
        looks[c.name] = look_from_portrait(portraits[c.name])
    return portraits, looks


def keyframe_pixels(plan: dict) -> dict[str, list[np.ndarray]]:
    portraits, looks = cast_of(plan)
    found: dict[str, list[np.ndarray]] = {name: [portrait_pixels(p)] for name, p in portraits.items()}
    for base in plan["base_images"]:
        names = [n for n in looks if n in base["prompt"]]
        frame = storyboard_png(base["prompt"], base["seed"], names, {n: looks[n] for n in names})
        for name in names:
            pixels, why = figure_pixels(frame, name)
            assert pixels is not None, why
            found[name].append(pixels)
    return found


def test_each_character_keeps_their_look_and_two_dressed_differently_look_different():
    plan = json.loads(PLAN.read_text())
    found = keyframe_pixels(plan)
    same = max(appearance_distance(a, b) for px in found.values() for a, b in itertools.combinations(px, 2))
    apart = min(appearance_distance(a, b) for a in found["Kit"] for b in found["Ravi"])
    assert same < THRESHOLD < apart, (same, apart)
    # Dressed alike (same words), they look alike: the description, not the name, sets the clothes.
    for character in plan["characters"]:
        character["description"] = "a courier in a grey jacket"
    alike = keyframe_pixels(plan)
    assert min(appearance_distance(a, b) for a in alike["Kit"] for b in alike["Ravi"]) < THRESHOLD


def test_a_photo_is_read_as_a_centred_subject():
    rgb = np.full((120, 100, 3), 250, np.uint8)
    rgb[90:, 20:80] = (20, 120, 60)
    rgb[4:18, 35:65] = (200, 180, 60)
    look = look_from_portrait(Image.fromarray(rgb))
    assert look.body == (20, 120, 60) and look.hair == (200, 180, 60) and look.source == "portrait"


def test_description_words_set_clothes_hair_and_build():
    look = look_from_description("Ravi", "a tall engineer in a blue coat with black hair")
    assert look.body[2] > look.body[0] and look.hair == (30, 30, 34) and look.height > 1.0
    assert look_from_description("A", "broad shoulders").shoulders > 1.0
    assert look_from_description("A", "a poet") != look_from_description("A", "a sailor")


def test_consistency_check_fails_a_keyframe_whose_character_is_dressed_unlike_the_portrait(tmp_path):
    red = look_from_description("Kit", "in a red jacket")
    blue = look_from_description("Kit", "in a blue jacket")
    portrait = tmp_path / "portrait.png"
    image, layout = render_storyboard("Portrait of Kit, facing the camera", 1, 144, 144,
                                      scene=describe_scene("portrait"), characters=["Kit"], looks={"Kit": red})
    portrait.write_bytes(encode_png(image, {LAYOUT_KEY: json.dumps(layout)}))
    prompt = "Medium shot of Kit facing the camera in a park"
    results = {}
    for name, look in (("same", red), ("other", blue)):
        image, layout = render_storyboard(prompt, 5, 256, 144, scene=describe_scene(prompt), characters=["Kit"],
                                          looks={"Kit": look})
        path = tmp_path / f"{name}.png"
        path.write_bytes(encode_png(image, {LAYOUT_KEY: json.dumps(layout)}))
        results[name] = check_character_consistency(path, name, prompt, [("Kit", portrait)],
                                                    max_distance=THRESHOLD, bins=8)
    assert results["same"].status == "passed" and results["same"].score < THRESHOLD
    assert results["other"].status == "failed" and results["other"].score > THRESHOLD
    away = check_character_consistency(tmp_path / "other.png", "x", "Kit walks off, back to the camera",
                                       [("Kit", portrait)], max_distance=THRESHOLD, bins=8)
    assert away.status == "passed" and "faces the camera" in away.detail


def test_faces_camera_rule():
    assert faces_camera("Close-up of Kit in the rain", "Kit")
    assert faces_camera("Kit faces the camera", "kit")
    assert not faces_camera("Kit walks away from us, back to the camera", "Kit")
    assert not faces_camera("Ravi facing the camera", "Kit")
    assert not faces_camera("Kit looks at the sea", "Kit")


def test_references_must_name_a_character_in_the_frame():
    with pytest.raises(ValueError, match="references"):
        ImagesSdxlRequest(prompt="x", characters=["Kit"], references=[CharacterReference(character="Ravi")])


def test_cast_option_and_plan(tmp_path):
    assert parse_cast_option(["kit=a/b.png", " Ravi = c.jpg"]) == {"kit": "a/b.png", "Ravi": "c.jpg"}
    with pytest.raises(InvalidInputError):
        parse_cast_option(["kit"])
    plan = json.loads(PLAN.read_text())
    cast = cast_plan(plan, {"RAVI": "img_1"})
    assert cast["characters"][1]["reference_image_id"] == "img_1" and "reference_image_id" not in plan["characters"][1]
    with pytest.raises(InvalidInputError, match="no such character"):
        cast_plan(plan, {"zed": "img_1"})
    store = ArtifactStore(tmp_path / "home")
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"hello")
    with pytest.raises(InvalidInputError):
        put_image_file(store, bad)
    good = tmp_path / "kit.png"
    Image.new("RGB", (80, 80), (10, 20, 30)).save(good)
    manifest = put_image_file(store, good)
    assert manifest.artifact_type == "reference_image" and manifest.run_id == "uploads"


def test_dry_run_counts_the_cast(tmp_path):
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    plan = validate_plan(json.loads(PLAN.read_text()))
    graph, resources = estimate(plan, settings, "full")
    cast = next(g for g in graph if g["stage"] == "cast")
    assert cast["items"] == ["cast_kit", "cast_ravi"] and cast["calls"] == 2 and cast["qa_calls"] == 2
    assert [g["stage"] for g in graph][:3] == ["plan_intake", "cast", "dialogue_audio"]
    assert portrait_seed(21, "kit") != portrait_seed(21, "ravi") != portrait_seed(22, "ravi")


def test_notebook_cast_tab_uploads_a_portrait_into_the_draft(tmp_path):
    from sparkle_motion.notebook.cast_upload import upload_portrait
    from sparkle_motion.notebook.plan_review import PlanReview

    store = ArtifactStore(tmp_path / "home")
    review = PlanReview(store_factory=lambda: store)
    review.load(json.loads(PLAN.read_text()), "test")
    assert len(review.cast_view.children) == 3  # the note and one row per character
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 40, 40)).save(buffer, format="PNG")
    artifact_id = upload_portrait(review, store, 0, "kit.png", buffer.getvalue())
    assert review.draft["characters"][0]["reference_image_id"] == artifact_id and review.is_valid
    assert store.get(artifact_id).artifact_type == "reference_image"
    assert review.plan.characters[0].reference_image_id == artifact_id
    with pytest.raises(InvalidInputError):
        upload_portrait(review, store, 1, "ravi.png", b"not an image")
    assert "reference_image_id" not in review.draft["characters"][1]


def test_consistency_without_portraits_passes_saying_so(tmp_path):
    frame = tmp_path / "f.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(frame)
    result = check_character_consistency(frame, "f", "Kit faces the camera", [], max_distance=THRESHOLD, bins=8)
    assert result.status == "passed" and "no portraits" in result.detail
