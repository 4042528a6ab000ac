"""videos_wan `keyframe_motion` over HTTP against the real process.

Keyframes are real storyboard frames stored in the artifact store; every clip
is checked by decoding it with PyAV (frames, rate, duration, codec, pixel format,
pixels at the keyframes), never from the tool's own metadata.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from function_tools.images_sdxl.output import encode_png
from function_tools.images_sdxl.scene import describe_scene
from function_tools.images_sdxl.storyboard import render_frame
from sparkle_motion.artifacts import ArtifactManifest, ArtifactStore
from sparkle_motion.testing import RunningTool
from test_images_sdxl_service import assert_entry_point_serves  # tests/ is on sys.path (rootdir conftest)
from tool_fixtures import module_tool_fixtures

pytestmark = pytest.mark.xdist_group("videos_wan")

RUN = "videos-test"
INPUTS = "videos-inputs"
BAD_RUN = "videos-bad"
W, H = 160, 96


home, tool, store = module_tool_fixtures("videos_wan")


def put_png(store: ArtifactStore, image: Image.Image) -> ArtifactManifest:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return store.put(INPUTS, "keyframes", "image", buf.getvalue(), "image/png",
                     media={"width": image.width, "height": image.height}, ext=".png")


def storyboard(prompt: str, size: tuple[int, int] = (W, H)) -> Image.Image:
    image = render_frame(prompt, 9, *size, scene=describe_scene(prompt), characters=["Maya"])
    return Image.open(io.BytesIO(encode_png(image, {}))).convert("RGB")


@pytest.fixture(scope="module")
def keyframes(store: ArtifactStore) -> dict[str, Any]:
    start = storyboard("A neon city street at night in the rain")
    end = storyboard("The same street at dawn, the rain has stopped")
    wide = storyboard("A beach at sunset", size=(200, 100))
    return {"start": start, "end": end, "wide": wide, "start_uri": put_png(store, start).uri,
            "end_uri": put_png(store, end).uri, "wide_uri": put_png(store, wide).uri}


def invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    reply = tool.client.post("/invoke", json=payload, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def decode(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "rate": stream.average_rate, "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "duration_s": float(stream.duration * stream.time_base) if stream.duration else None}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return frames, info


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_pan_clip_decodes_with_exact_frames_and_keyframes_at_both_ends(
        tool: RunningTool, store: ArtifactStore, keyframes: dict[str, Any]) -> None:
    body = invoke(tool, start_frame_uri=keyframes["start_uri"], end_frame_uri=keyframes["end_uri"],
                  motion_prompt="slow pan left across the street", prompt="the rain stops", num_frames=24, fps=24,
                  steps=20, seed=4)
    manifest = store.get(body["video"]["uri"])
    assert manifest.media_type == "video/mp4"
    frames, info = decode(store.path_for(manifest.uri))
    assert len(frames) == 24
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["rate"] == Fraction(24) and (info["width"], info["height"]) == (W, H)
    assert info["duration_s"] == pytest.approx(1.0, abs=1 / 24)
    assert psnr(frames[0], np.asarray(keyframes["start"])) >= 35
    assert psnr(frames[-1], np.asarray(keyframes["end"])) >= 35
    # In between: neither keyframe, and not just a cross-fade either (compared below with static).
    mid = frames[12]
    assert psnr(mid, np.asarray(keyframes["start"])) < 25 and psnr(mid, np.asarray(keyframes["end"])) < 25
    assert body["camera_move"]["name"] == "pan_left" and body["camera_move"]["strength"] < 1
    assert body["num_frames"] == 24 and body["duration_s"] == pytest.approx(1.0)
    assert body["ignored_options"] == ["steps"]
    meta = manifest.metadata
    assert meta["tool"] == "videos_wan" and meta["backend"] == "keyframe_motion" and meta["seed"] == 4
    assert meta["camera_move"]["pan"] == "left" and meta["num_frames"] == 24
    assert meta["inputs"] == {"start_frame_uri": keyframes["start_uri"], "end_frame_uri": keyframes["end_uri"]}
    assert meta["timings"]["encode_wall_s"] > 0 and meta["timings"]["synthesis_s"] > 0
    assert manifest.fps == 24 and manifest.width == W and manifest.duration_s == pytest.approx(1.0)

    static = invoke(tool, start_frame_uri=keyframes["start_uri"], end_frame_uri=keyframes["end_uri"],
                    motion_prompt="static", num_frames=24, fps=24)
    static_frames, _ = decode(store.path_for(static["video"]["uri"]))
    assert static["camera_move"]["name"] == "static"
    assert np.abs(static_frames[12].astype(int) - mid.astype(int)).mean() > 4  # the pan moved the pixels
    assert psnr(static_frames[0], frames[0]) >= 35 and psnr(static_frames[-1], frames[-1]) >= 35


def test_duration_and_fps_set_the_frame_count(tool: RunningTool, store: ArtifactStore,
                                              keyframes: dict[str, Any]) -> None:
    body = invoke(tool, start_frame_uri=keyframes["start_uri"], end_frame_uri=keyframes["end_uri"],
                  motion_prompt="push in", duration_s=0.75, fps=12)
    frames, info = decode(store.path_for(body["video"]["uri"]))
    assert len(frames) == 9 and info["rate"] == Fraction(12)
    assert info["duration_s"] == pytest.approx(0.75, abs=1 / 12)
    assert psnr(frames[0], np.asarray(keyframes["start"])) >= 35
    assert psnr(frames[-1], np.asarray(keyframes["end"])) >= 35


def test_same_seed_gives_the_same_decoded_frames(tool: RunningTool, store: ArtifactStore,
                                                 keyframes: dict[str, Any]) -> None:
    request = dict(start_frame_uri=keyframes["start_uri"], end_frame_uri=keyframes["end_uri"],
                   motion_prompt="handheld crane up", num_frames=16, seed=77)
    first, _ = decode(store.path_for(invoke(tool, **request)["video"]["uri"]))
    second, _ = decode(store.path_for(invoke(tool, **request)["video"]["uri"]))
    other, _ = decode(store.path_for(invoke(tool, **{**request, "seed": 78})["video"]["uri"]))
    assert len(first) == len(second) == 16
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))  # the seed drives the shake


def test_keyframes_of_another_size_are_resized_and_recorded(tool: RunningTool, store: ArtifactStore,
                                                            keyframes: dict[str, Any]) -> None:
    body = invoke(tool, start_frame_uri=keyframes["start_uri"], end_frame_uri=keyframes["wide_uri"],
                  num_frames=6)  # no width/height: the start frame's size
    frames, info = decode(store.path_for(body["video"]["uri"]))
    assert (info["width"], info["height"]) == (W, H) and len(frames) == 6
    assert body["resized_inputs"] == [{"field": "end_frame_uri", "from_size": [200, 100], "to_size": [W, H],
                                       "mode": "cover_crop"}]
    expected_end = ImageOps.fit(keyframes["wide"], (W, H), method=Image.Resampling.LANCZOS)
    stretched = keyframes["wide"].resize((W, H), Image.Resampling.LANCZOS)
    # Resampling a text-heavy frame adds colour detail 4:2:0 cannot carry, so the bar is
    # lower than for a keyframe at the output size; the crop must still beat a stretch clearly.
    assert psnr(frames[-1], np.asarray(expected_end)) >= 30
    assert psnr(frames[-1], np.asarray(expected_end)) > psnr(frames[-1], np.asarray(stretched)) + 5
    assert store.get(body["video"]["uri"]).metadata["resized_inputs"][0]["field"] == "end_frame_uri"

    bigger = invoke(tool, start_frame_uri=keyframes["start_uri"], end_frame_uri=keyframes["end_uri"],
                    num_frames=4, width=320, height=192)
    frames, info = decode(store.path_for(bigger["video"]["uri"]))
    assert (info["width"], info["height"]) == (320, 192) and len(frames) == 4
    assert {r["field"] for r in bigger["resized_inputs"]} == {"start_frame_uri", "end_frame_uri"}


@pytest.fixture(scope="module")
def bad_inputs(store: ArtifactStore, keyframes: dict[str, Any]) -> dict[str, str]:
    corrupt = store.put(INPUTS, "keyframes", "image", b"this is not a png at all" * 10, "image/png", ext=".png")
    truncated_png = io.BytesIO()
    keyframes["start"].save(truncated_png, format="PNG")
    truncated = store.put(INPUTS, "keyframes", "image", truncated_png.getvalue()[:200], "image/png", ext=".png")
    not_image = store.put(INPUTS, "notes", "json", b'{"a": 1}', "application/json", ext=".json")
    return {"corrupt": corrupt.uri, "truncated": truncated.uri, "json": not_image.uri}


def bad_cases() -> list[tuple[str, dict[str, Any], str]]:
    return [
        ("missing start", {"start_frame_uri": None}, "start_frame_uri"),
        ("malformed uri", {"start_frame_uri": "not a uri"}, "start_frame_uri"),
        ("file scheme", {"start_frame_uri": "file:///etc/passwd"}, "start_frame_uri"),
        ("escape", {"end_frame_uri": "artifact+fs://../../etc/passwd"}, "end_frame_uri"),
        ("dotdot id", {"end_frame_uri": "artifact+fs://videos-inputs/keyframes/..%2F..%2Fx"}, "end_frame_uri"),
        ("unknown artifact", {"end_frame_uri": "artifact+fs://videos-inputs/keyframes/image_000000000000"},
         "end_frame_uri"),
        ("corrupt png", {"start_frame_uri": "@corrupt"}, "start_frame_uri"),
        ("truncated png", {"end_frame_uri": "@truncated"}, "end_frame_uri"),
        ("not an image", {"end_frame_uri": "@json"}, "end_frame_uri"),
        ("no length", {"num_frames": None}, "duration_s"),
        ("inconsistent length", {"num_frames": 24, "duration_s": 3.0}, "duration_s"),
        ("one frame", {"num_frames": 1}, "num_frames"),
        ("too many frames", {"num_frames": 5000}, "num_frames"),
        ("fps zero", {"fps": 0}, "fps"),
        ("fps high", {"fps": 240}, "fps"),
        ("odd width", {"width": 161, "height": 96}, "width"),
        ("huge width", {"width": 4096, "height": 96}, "width"),
        ("tiny height", {"width": 160, "height": 16}, "height"),
        ("work cap", {"num_frames": 1441, "width": 2048, "height": 2048}, "num_frames"),
        ("unknown field", {"camera": "pan"}, "camera"),
        ("negative seed", {"seed": -3}, "seed"),
    ]


@pytest.mark.parametrize(("case", "change", "field"), bad_cases(), ids=[c[0] for c in bad_cases()])
def test_bad_input_is_4xx_naming_the_field_and_stores_nothing(
        tool: RunningTool, store: ArtifactStore, keyframes: dict[str, Any], bad_inputs: dict[str, str],
        case: str, change: dict[str, Any], field: str) -> None:
    payload: dict[str, Any] = {"run_id": BAD_RUN, "start_frame_uri": keyframes["start_uri"],
                               "end_frame_uri": keyframes["end_uri"], "num_frames": 8}
    for key, value in change.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = bad_inputs[value[1:]] if isinstance(value, str) and value.startswith("@") else value
    inputs_before = store.list(INPUTS)
    reply = tool.client.post("/invoke", json=payload, timeout=60)
    assert 400 <= reply.status_code < 500, reply.text
    error = reply.json()["error"]
    assert error["field"] == field, error
    assert error["message"]
    assert store.list(BAD_RUN) == []
    assert store.list(INPUTS) == inputs_before
    staging = Path(store.staging_dir())
    assert not [p for p in staging.iterdir() if p.name.startswith("videos_wan-")]
    assert tool.client.get("/health").status_code == 200


def test_service_still_renders_after_bad_requests(tool: RunningTool, store: ArtifactStore,
                                                  keyframes: dict[str, Any]) -> None:
    bad = tool.client.post("/invoke", json={"start_frame_uri": "nope", "end_frame_uri": "nope", "num_frames": 2})
    assert bad.status_code == 422
    body = invoke(tool, start_frame_uri=keyframes["start_uri"], end_frame_uri=keyframes["end_uri"], num_frames=2)
    frames, _ = decode(store.path_for(body["video"]["uri"]))
    assert len(frames) == 2
    assert psnr(frames[0], np.asarray(keyframes["start"])) >= 35
    assert psnr(frames[1], np.asarray(keyframes["end"])) >= 35


def test_python_dash_m_entry_point_serves(tmp_path: Path) -> None:
    assert_entry_point_serves("videos_wan", tmp_path)
