"""keyframe_motion in-process: move parsing, the identity-at-both-ends windows, directions, request rules."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from function_tools.videos_wan.keyframe_motion import (
    MotionPlanner,
    Window,
    _view,
    parse_camera_move,
    render_frames,
    blend_weight,
    smoothstep,
)
from function_tools.videos_wan.keyframes import fit_keyframe
from function_tools.videos_wan.models import VideosWanRequest

W, H = 160, 96


def textured(seed: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    """A smooth random texture: phase correlation locks onto it, and it has no flat areas."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def blob_image(size: tuple[int, int] = (320, 192)) -> Image.Image:
    """Mid-grey with one bright Gaussian blob at the centre: a landmark to follow."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-(((xx - w / 2) ** 2) + ((yy - h / 2) ** 2)) / (2 * 6.0**2))
    grey = (100 + 150 * blob).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))


def centroid(frame: np.ndarray) -> tuple[float, float]:
    weight = np.clip(frame[..., 0].astype(np.float64) - 110, 0, None)
    yy, xx = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    return float((xx * weight).sum() / weight.sum()), float((yy * weight).sum() / weight.sum())


@pytest.mark.parametrize(("prompt", "name"), [
    ("slow push-in on her face", "push_in"),
    ("Zoom in", "push_in"),
    ("the camera pulls back to reveal the city", "pull_out"),
    ("zoom out", "pull_out"),
    ("pan left across the skyline", "pan_left"),
    ("camera pans to the right", "pan_right"),
    ("crane up over the rooftops", "tilt_up"),
    ("tilt down to the street", "tilt_down"),
    ("handheld, following him", "handheld"),
    ("static shot", "static"),
    ("locked-off tripod", "static"),
    ("", "static"),
    ("a dreamy mood", "static"),
    ("handheld push in while panning left", "push_in+pan_left+handheld"),
])
def test_motion_prompt_parsing(prompt: str, name: str) -> None:
    assert parse_camera_move(prompt).name == name


def test_strength_words() -> None:
    assert parse_camera_move("slow pan left").strength < 1 < parse_camera_move("fast pan left").strength
    assert parse_camera_move("pan left").strength == 1


@pytest.mark.parametrize("prompt", ["static", "push in", "pull out", "pan left", "pan right", "crane up",
                                    "tilt down", "fast handheld push in and pan right"])
def test_windows_are_identity_at_own_end_and_stay_inside_the_frame(prompt: str) -> None:
    planner = MotionPlanner(parse_camera_move(prompt), W, H, 30, 24.0, seed=3)
    plans = list(planner)
    assert plans[0].blend == 0.0 and plans[-1].blend == 1.0
    assert plans[0].start.is_identity(W, H) and plans[-1].end.is_identity(W, H)
    for plan in plans:
        for window in (plan.start, plan.end):
            assert window.scale >= 1.0
            half_w, half_h = W / (2 * window.scale), H / (2 * window.scale)
            assert window.cx - half_w >= -1e-6 and window.cx + half_w <= W + 1e-6
            assert window.cy - half_h >= -1e-6 and window.cy + half_h <= H + 1e-6
    blends = [p.blend for p in plans]
    assert blends == sorted(blends)
    assert blends[1] < 1 / 29 < blends[14] < blends[15]  # eased: slow start, fast middle


def test_smoothstep_shape() -> None:
    assert smoothstep(0) == 0 and smoothstep(1) == 1 and smoothstep(0.5) == 0.5
    assert smoothstep(-1) == 0 and smoothstep(2) == 1


def test_blend_weight_is_eased_but_never_flat_at_the_ends() -> None:
    assert blend_weight(0) == 0 and blend_weight(1) == 1 and blend_weight(0.5) == 0.5
    step = 1e-3
    assert blend_weight(step) / step >= 0.5 and (1 - blend_weight(1 - step)) / step >= 0.5
    assert smoothstep(0.1) < blend_weight(0.1) < 0.1  # between smoothstep and linear
    weights = [blend_weight(i / 100) for i in range(101)]
    assert all(b > a for a, b in zip(weights, weights[1:]))


@pytest.mark.parametrize(("prompt", "sign_x", "sign_y"), [
    ("pan left", 1, 0), ("pan right", -1, 0), ("crane up", 0, 1), ("tilt down", 0, -1)])
def test_camera_direction_moves_content_the_opposite_way(prompt: str, sign_x: int, sign_y: int) -> None:
    image = blob_image()
    planner = MotionPlanner(parse_camera_move(prompt), 320, 192, 24, 24.0, seed=0)
    # The start keyframe moves away along the path, the end keyframe arrives along it:
    # the landmark must travel the same way in both.
    track_start = [centroid(np.asarray(_view(image, planner.frame(i).start))) for i in (0, 8, 16)]
    track_end = [centroid(np.asarray(_view(image, planner.frame(i).end))) for i in (8, 16, 23)]
    for track in (track_start, track_end):
        for (x0, y0), (x1, y1) in zip(track, track[1:]):
            dx, dy = x1 - x0, y1 - y0
            assert (np.sign(round(dx, 1)), np.sign(round(dy, 1))) == (sign_x, sign_y), (prompt, track)
            assert max(abs(dx), abs(dy)) > 2  # a visible move, in pixels


def test_push_in_magnifies_the_start_keyframe() -> None:
    planner = MotionPlanner(parse_camera_move("push in"), W, H, 24, 24.0, seed=0)
    assert planner.frame(12).start.scale > 1.05 and planner.frame(12).end.scale == 1.0
    out = MotionPlanner(parse_camera_move("pull out"), W, H, 24, 24.0, seed=0)
    assert out.frame(12).end.scale > 1.05 and out.frame(12).start.scale == 1.0


def test_view_samples_the_window() -> None:
    image = textured(3)
    assert np.array_equal(np.asarray(_view(image, Window(1.0, W / 2, H / 2))), np.asarray(image))
    # A 2x window on the left half shows the left half, magnified.
    zoomed = np.asarray(_view(image, Window(2.0, W / 4, H / 2)), dtype=np.float64)
    expected = np.asarray(image.crop((0, H // 4, W // 2, 3 * H // 4)).resize((W, H), Image.Resampling.BILINEAR),
                          dtype=np.float64)
    assert np.abs(zoomed - expected)[4:-4, 4:-4].mean() < 3


def test_render_frames_end_exactly_on_the_keyframes_and_move_in_between() -> None:
    start, end = textured(4), textured(5)
    frames = list(render_frames(start, end, MotionPlanner(parse_camera_move("pan right"), W, H, 12, 24.0, 0)))
    assert len(frames) == 12 and all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(frames[0], np.asarray(start)) and np.array_equal(frames[-1], np.asarray(end))
    static = list(render_frames(start, end, MotionPlanner(parse_camera_move("static"), W, H, 12, 24.0, 0)))
    assert np.abs(frames[5].astype(int) - static[5].astype(int)).mean() > 5


def test_handheld_is_seeded() -> None:
    move = parse_camera_move("handheld")
    a = [p.start for p in MotionPlanner(move, W, H, 48, 24.0, seed=1)]
    b = [p.start for p in MotionPlanner(move, W, H, 48, 24.0, seed=1)]
    c = [p.start for p in MotionPlanner(move, W, H, 48, 24.0, seed=2)]
    assert a == b and a != c
    assert max(abs(w.cx - W / 2) for w in a) > 0.5  # it does shake


def test_fit_keyframe_cover_crops_and_records() -> None:
    image = textured(6, (200, 100))
    fitted, record = fit_keyframe(image, (W, H), "end_frame_uri")
    assert fitted.size == (W, H) and record is not None
    assert record.from_size == (200, 100) and record.to_size == (W, H) and record.mode == "cover_crop"
    same, none = fit_keyframe(fitted, (W, H), "end_frame_uri")
    assert same is fitted and none is None


def base_request(**kw) -> dict:
    return {"start_frame_uri": "artifact+fs://r/s/a", "end_frame_uri": "artifact+fs://r/s/b", **kw}


def test_frames_or_duration_rules() -> None:
    assert VideosWanRequest(**base_request(num_frames=24)).frame_count == 24
    assert VideosWanRequest(**base_request(duration_s=2.0, fps=12)).frame_count == 24
    assert VideosWanRequest(**base_request(duration_s=1.0, num_frames=24)).frame_count == 24
    for kw, field in [({}, "duration_s"), ({"num_frames": 24, "duration_s": 2.0}, "duration_s"),
                      ({"duration_s": 100.0}, "duration_s"), ({"num_frames": 1}, "num_frames"),
                      ({"num_frames": 24, "fps": 0}, "fps"), ({"num_frames": 24, "width": 161}, "width")]:
        with pytest.raises(ValidationError) as info:
            VideosWanRequest(**base_request(**kw))
        assert info.value.errors()[0]["loc"] == (field,), kw
