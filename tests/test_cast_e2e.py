"""The cast stage over the whole cpu mesh: portraits, keyframes that look like them, and what a change re-renders.

One mesh, one held-out two-character plan (tests/data/plans/two_characters.json):
each character's look stays within the documented appearance distance across
shots and their portrait; two characters dressed differently differ by more;
a user's photo becomes the portrait byte for byte and conditions the keyframes;
changing one description re-renders that portrait and exactly the keyframes and
clips that show the character (step counts from the registry).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from function_tools.qa_qwen2vl.checks import load_policy
from function_tools.qa_qwen2vl.consistency import appearance_distance, figure_pixels, portrait_pixels
from mesh_harness import running_mesh, wait_for_status
from sparkle_motion.agents.contact_sheet import CONTACT_SHEET_ITEM
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.uploads import put_image_file
from sparkle_motion.media import write_wav

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mesh")]

PLAN = Path(__file__).parent / "data" / "plans" / "two_characters.json"
THRESHOLD = load_policy().character_consistency.max_distance


@pytest.fixture(scope="module")
def mesh_settings(tmp_path_factory):
    home = tmp_path_factory.mktemp("cast_mesh")
    with running_mesh(home) as settings:
        yield settings


@pytest.fixture(scope="module")
def production(mesh_settings):
    with httpx.Client(base_url=mesh_settings.url_for("production_agent"), timeout=60) as client:
        yield client


def run(production: httpx.Client, plan: dict) -> tuple[dict, dict]:
    response = production.post("/invoke", json={"plan": plan, "mode": "run", "qa_mode": "full"})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    status = wait_for_status(production, run_id, {"succeeded", "failed"}, timeout=600)
    assert status["status"] == "succeeded", status["error"]
    arts = production.get("/artifacts", params={"run_id": run_id}).json()
    return status, {a["artifact_id"]: a for a in arts["artifacts"]}


def outputs(status: dict, arts: dict, stage: str) -> dict[str, dict]:
    """item -> the artifact a stage's step produced last (its portrait, keyframe or clip)."""
    found = {}
    for step in status["steps"]:
        if step["stage"] == stage and ".qa" not in step["item"] and step["item"] != CONTACT_SHEET_ITEM \
                and step["status"] in ("succeeded", "cached"):
            found[step["item"]] = arts[step["artifact_ids"][-1]]
    return found


def redone(status: dict) -> dict[str, set[str]]:
    """stage -> the items recomputed (not cached) in this run."""
    done = defaultdict(set)
    for step in status["steps"]:
        if step["status"] == "succeeded":
            done[step["stage"]].add(step["item"])
    return dict(done)


def looks(keyframes: dict[str, dict], portraits: dict[str, dict]) -> dict[str, list[np.ndarray]]:
    """Each character's clothes pixels in every keyframe that shows them facing the camera, and in the portrait."""
    found: dict[str, list[np.ndarray]] = {"Kit": [], "Ravi": []}
    for art in keyframes.values():
        with Image.open(art["local_path"]) as frame:
            for name in found:
                pixels, _ = figure_pixels(frame, name)
                if pixels is not None:
                    found[name].append(pixels)
    for name, art in zip(("Kit", "Ravi"), (portraits["cast_kit"], portraits["cast_ravi"])):
        with Image.open(art["local_path"]) as image:
            found[name].append(portrait_pixels(image))
    return found


def test_cast_portraits_keep_each_character_and_a_change_re_renders_only_what_shows_it(production, mesh_settings,
                                                                                        tmp_path):
    plan = json.loads(PLAN.read_text())
    status, arts = run(production, plan)
    portraits, keyframes = outputs(status, arts, "cast"), outputs(status, arts, "base_images")
    assert set(portraits) == {"cast_kit", "cast_ravi"}
    assert {a["artifact_type"] for a in portraits.values()} == {"portrait"}
    assert all(arts[s["artifact_ids"][-1]]["stage"] == "cast" for s in status["steps"] if s["stage"] == "cast")

    # Each character looks like their portrait in every shot; the two look different.
    found = looks(keyframes, portraits)
    assert len(found["Kit"]) == 4 and len(found["Ravi"]) == 3, {k: len(v) for k, v in found.items()}
    same = {name: max(appearance_distance(a, b) for a, b in itertools.combinations(px, 2))
            for name, px in found.items()}
    apart = min(appearance_distance(a, b) for a in found["Kit"] for b in found["Ravi"])
    print(f"appearance distance: same character max {same}, two characters min {apart:.3f}, limit {THRESHOLD}")
    assert max(same.values()) < THRESHOLD < apart
    # The keyframes say which portraits conditioned them, and QA compared them.
    frame0 = keyframes["frame_000"]["metadata"]["conditioned_on"]
    assert {c["character"]: c["uri"] for c in frame0} == {"Kit": portraits["cast_kit"]["uri"],
                                                         "Ravi": portraits["cast_ravi"]["uri"]}
    qa_steps = [s for s in status["steps"] if s["stage"] == "base_images" and s["item"].endswith(".qa")]
    report = json.loads(Path(arts[qa_steps[0]["artifact_ids"][0]]["local_path"]).read_text())
    consistency = next(c for c in report["checks"] if c["name"] == "character_consistency")
    assert consistency["status"] == "passed" and set(consistency["metrics"]["distances"]) == {"Kit", "Ravi"}

    # The same plan again: every step cached, the portraits included.
    again, _ = run(production, plan)
    assert {s["status"] for s in again["steps"]} == {"cached"}

    # Ravi's description changes: his portrait, the keyframes showing him (000, 003) and the clips
    # between them (shot_001: 000→001, shot_003: 002→003) are redone; nothing of Kit's is.
    changed = copy.deepcopy(plan)
    changed["characters"][1]["description"] = "a tall engineer in a green coat with black hair"
    status2, arts2 = run(production, changed)
    assert redone(status2) == {
        # (the contact sheet after the portraits and after the keyframes shows the new portrait)
        "plan_intake": {None}, "cast": {"cast_ravi", "cast_ravi.qa", CONTACT_SHEET_ITEM},
        "base_images": {"frame_000", "frame_000.qa", "frame_003", "frame_003.qa", CONTACT_SHEET_ITEM},
        "video_clips": {"shot_001", "shot_001.qa", "shot_003", "shot_003.qa"},
        "assemble": {None}, "qa_publish": {"final.qa"}, "finalize": {None}}

    # Kit's portrait is the user's photo: the portrait artifact is that image, and the keyframes use it.
    photo = tmp_path / "kit.png"
    rgb = np.zeros((96, 96, 3), np.uint8)
    rgb[:] = (240, 236, 228)
    rgb[8:30, 30:66] = (40, 30, 20)        # hair
    rgb[30:60, 34:62] = (224, 172, 132)    # face
    rgb[64:, 16:80] = (230, 150, 20)       # an orange jacket
    Image.fromarray(rgb).save(photo)
    store = ArtifactStore(mesh_settings.home)
    uploaded = put_image_file(store, photo)
    # ... and Ravi's voice is a clip: espeak cannot clone, and says so in the line's metadata.
    clip_path = tmp_path / "ravi.wav"
    t = np.arange(48_000) / 24_000
    write_wav(clip_path, (0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float32), 24_000)
    clip = store.put("uploads", "uploads", "voice_clip", clip_path, "audio/wav")
    with_photo = copy.deepcopy(plan)
    with_photo["characters"][0]["reference_image_id"] = uploaded.artifact_id
    with_photo["characters"][1]["voice_profile"]["reference_audio_id"] = clip.artifact_id
    status3, arts3 = run(production, with_photo)
    portrait = outputs(status3, arts3, "cast")["cast_kit"]
    assert portrait["checksum"] == f"sha256:{uploaded.sha256}" or portrait["checksum"] == uploaded.sha256
    assert portrait["metadata"]["source"] == "user"
    assert redone(status3)["cast"] == {"cast_kit", CONTACT_SHEET_ITEM}  # a photo is not QA'd
    frames3 = outputs(status3, arts3, "base_images")
    for frame_id in ("frame_000", "frame_001", "frame_002"):
        used = {c["character"]: c for c in frames3[frame_id]["metadata"]["conditioned_on"]}
        assert used["Kit"]["uri"] == portrait["uri"] and used["Kit"]["sha256"] == uploaded.sha256
        assert used["Kit"]["look"]["body"] == [230, 150, 20]  # the photo's jacket is Kit's clothes now
    assert "frame_003" in frames3 and "frame_003" not in redone(status3)["base_images"]
    assert redone(status3)["dialogue_audio"] == {"line_002", "timeline"}  # Ravi's line only, then the stitch
    ravi_line = next(s for s in status3["steps"] if s["stage"] == "dialogue_audio" and s["item"] == "line_002")
    wav = next(arts3[a] for a in ravi_line["artifact_ids"] if arts3[a]["media_type"] == "audio/wav")
    assert wav["metadata"]["params"]["ignored"]["fields"]["reference_audio_uri"] == clip.uri
