"""Frame geometry for --aspect, SDXL's buckets, the plan's music field and the music upload checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from function_tools.images_sdxl.output import fit_to_frame
from sparkle_motion.agents.script_agent import PlanRequest, pin_video_geometry
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.uploads import MAX_MUSIC_BYTES, put_music_file
from sparkle_motion.config import get_settings
from sparkle_motion.errors import InvalidInputError, PlanValidationError
from sparkle_motion.media import run_ffmpeg
from sparkle_motion.media.geometry import SDXL_BUCKETS, cover_box, frame_size, parse_aspect, sdxl_bucket
from sparkle_motion.plan import load_plan_file, plan_hash, validate_plan

PLANS = Path(__file__).parent / "data" / "plans"


@pytest.mark.parametrize("aspect, base, expected", [
    ("16:9", (640, 360), (640, 360)), ("9:16", (640, 360), (360, 640)), ("1:1", (640, 360), (480, 480)),
    ("9:16", (1280, 720), (720, 1280)), ("1:1", (1280, 720), (960, 960)), ("9:16", (256, 144), (144, 256)),
])
def test_frame_size_keeps_the_profile_area_in_multiples_of_8(aspect, base, expected):
    width, height = frame_size(aspect, *base)
    assert (width, height) == expected and width % 8 == 0 and height % 8 == 0


@pytest.mark.parametrize("bad", ["4:3", "16x9", "", "vertical"])
def test_unknown_aspects_are_refused_naming_the_field(bad):
    with pytest.raises(InvalidInputError) as caught:
        parse_aspect(bad, field="--aspect")
    assert caught.value.field == "--aspect" and "9:16" in caught.value.message


@pytest.mark.parametrize("size, bucket", [((360, 640), (768, 1344)), ((720, 1280), (768, 1344)),
                                          ((480, 480), (1024, 1024)), ((1280, 720), (1344, 768)),
                                          ((640, 360), (1344, 768))])
def test_sdxl_generates_at_the_trained_bucket_of_the_frame_aspect(size, bucket):
    assert sdxl_bucket(*size) == bucket and bucket in SDXL_BUCKETS
    assert all(side % 64 == 0 for side in bucket)


def test_a_bucket_image_is_centre_cropped_to_the_frame_without_bars():
    image = Image.new("RGB", (768, 1344), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 6, 1344))  # 768x1344 is a little wider than 9:16: the crop drops 6 px a side
    assert cover_box((768, 1344), (360, 640)) == (6, 0, 762, 1344)
    fitted = fit_to_frame(image, (360, 640))
    assert fitted.size == (360, 640) and fitted.getpixel((0, 320))[0] < 40  # the red edge is cut, no bars
    assert fit_to_frame(fitted, (360, 640)) is fitted
    wide = fit_to_frame(Image.new("RGB", (1344, 768), (0, 200, 0)), (480, 480))
    assert wide.size == (480, 480) and wide.getpixel((0, 0)) == (0, 200, 0)


def test_plan_request_turns_aspect_and_fps_into_the_render_profile():
    settings = get_settings()
    video = PlanRequest(prompt="x", aspect="9:16", fps=12).render_profile(settings)["video"]
    base_w, base_h = settings.render["width"], settings.render["height"]
    assert video["fps"] == 12 and (video["width"], video["height"]) == frame_size("9:16", base_w, base_h)
    assert "width" not in PlanRequest(prompt="x").render_profile(settings)["video"]
    with pytest.raises(ValueError):
        PlanRequest(prompt="x", aspect="4:3")


def test_the_asked_geometry_wins_over_what_a_model_wrote():
    plan = load_plan_file(PLANS / "rooftop_valid.json")
    pinned = pin_video_geometry(plan, {"model_id": "auto", "fps": 10, "width": 360, "height": 640})
    assert (pinned.render_profile.video.width, pinned.render_profile.video.height) == (360, 640)
    assert pinned.render_profile.video.fps == 10
    assert pin_video_geometry(plan, {"model_id": "auto"}) is plan


def test_plan_music_field_is_strict_and_absent_music_keeps_the_plan_hash():
    data = json.loads((PLANS / "rooftop_valid.json").read_text())
    digest = plan_hash(data)
    assert "music" not in validate_plan(data).model_dump(mode="json")
    with_music = validate_plan({**data, "music": {"artifact_id": "art_123", "duck_db": 20}})
    assert with_music.music is not None and with_music.music.duck_db == 20 and with_music.music.level_lufs == -26.0
    assert plan_hash(with_music) != digest
    for bad in ({"artifact_id": "../x"}, {"artifact_id": "a", "volume": 3}, {"artifact_id": "a", "duck_db": 2}):
        with pytest.raises(PlanValidationError) as caught:
            validate_plan({**data, "music": bad})
        assert any(d["path"].startswith("music") for d in caught.value.details)


def test_music_upload_checks_size_type_and_stream(tmp_path):
    store = ArtifactStore(tmp_path / "home")
    tone = tmp_path / "tone.wav"
    run_ffmpeg(["-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(tone)])
    manifest = put_music_file(store, tone)
    assert manifest.artifact_type == "music" and manifest.media_type == "audio/wav"
    assert manifest.duration_s == pytest.approx(1.0, abs=0.05)
    assert store.path_for(manifest.uri).read_bytes() == tone.read_bytes()
    big = tmp_path / "big.mp3"
    with big.open("wb") as handle:
        handle.truncate(MAX_MUSIC_BYTES + 1)
    fake = tmp_path / "fake.mp3"
    fake.write_bytes(b"ID3 not really an mp3" * 20)
    short = tmp_path / "short.wav"
    run_ffmpeg(["-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.1", str(short)])
    for path, words in ((tmp_path / "none.mp3", "no such file"), (big, "at most"), (tmp_path / "x.txt", "expected"),
                        (fake, ""), (short, "at least")):
        if path.suffix == ".txt":
            path.write_text("hello")
        with pytest.raises(InvalidInputError) as caught:
            put_music_file(store, path)
        assert caught.value.field == "--music" and words in caught.value.message
    store.close()
