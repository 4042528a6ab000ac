"""The ``keyframe_motion`` backend: a camera move between two keyframes.

Storyboard keyframes of one set have their figures moved (``figure_motion.py``),
keyframes of different framings cut, and other keyframes take the eased blend
described here (see ``choose_transition``).

Design — each keyframe carries its own crop window, identity at its own end
---------------------------------------------------------------------------
Frame ``i`` of ``N`` has ``t = i / (N - 1)``.  The output is
``blend(S_t, E_t, w(t))`` with ``w = blend_weight(t)`` (half linear, half smoothstep:
eased, yet never flat at the ends), where ``S_t`` is the start
keyframe seen through a crop window and ``E_t`` the end keyframe through its own.
A window is (scale >= 1, centre offset), always inside the picture, so no pixel
is ever invented (no borders, no mirroring).  The start keyframe's window is the
full frame at t=0 and moves *away* along the camera path; the end keyframe's
window moves *into* the full frame at t=1.  With w(0)=0 and w(1)=1, frame 0 is
exactly the start keyframe and the last frame exactly the end keyframe, while
in between both images travel the same direction:

* pan right   — start: window slides right (content drifts left) as it opens a
  margin by zooming in; end: window arrives from the left.  Pan left mirrors it.
* tilt/crane up — the same vertically (content drifts down); down mirrors it.
* push-in     — carried by the start keyframe (zooms 1 → 1+Z); the end keyframe
  is at rest, since zooming *in* towards identity would need pixels outside it.
* pull-out    — carried by the end keyframe (settles from 1+Z to 1); the start
  is at rest, for the same reason.
* handheld    — a seeded sum of sinusoids (0.6–2.2 Hz) in a few-percent margin,
  applied to both windows, with an envelope that is 0 at both ends.
* static      — the eased cross-blend alone.

Moves combine ("slow push-in, pan left, handheld").  "slow/gentle/subtle"
scale the amplitude by 0.6, "fast/dramatic/whip" by 1.5.

Frames are resampled with Pillow's separable C resize of the window box
(bilinear) and blended with ``Image.blend``; raw RGB frames are piped to ffmpeg by ``VideoWriter``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from function_tools.videos_wan.figure_motion import FigureComposer, KeyframeLayout, parse_layout, shares_set
from function_tools.videos_wan.keyframes import default_seed, prepare_keyframes
from function_tools.videos_wan.models import (
    DIFFUSION_OPTIONS,
    CameraMoveInfo,
    VideosWanRequest,
    VideosWanResponse,
)
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.media import VideoWriter
from sparkle_motion.services.context import ToolContext

# Amplitudes at strength 1: the end scale of the window for each move.
ZOOM_AMOUNT = 0.18
PAN_AMOUNT = 0.22
TILT_AMOUNT = 0.22
SHAKE_AMOUNT = 0.035
SHAKE_RAMP = 0.12          # fraction of the clip over which handheld shake fades in/out
ENCODER_CRF = 18
# The first and last frames ARE the keyframes: x264 zones code them at a near-lossless
# quantiser so they match the PNGs (>= 35 dB PSNR) while the in-betweens use the CRF.
KEYFRAME_QP = 4

_MOVE_PATTERNS: list[tuple[str, str, re.Pattern[str]]] = [
    ("zoom", "push_in", re.compile(r"\b(push(?:es|ing)?[\s-]*in|zoom(?:s|ing)?[\s-]*in|dolly(?:ing)?[\s-]*in|"
                                   r"close[\s-]*in|track(?:s|ing)?[\s-]*in|move(?:s)?[\s-]*in)\b", re.I)),
    ("zoom", "pull_out", re.compile(r"\b(pull(?:s|ing)?[\s-]*(?:out|back)|zoom(?:s|ing)?[\s-]*out|"
                                    r"dolly(?:ing)?[\s-]*(?:out|back)|widen(?:s|ing)?|reveal(?:s|ing)?)\b", re.I)),
    ("pan", "left", re.compile(r"\b((?:pan|truck|track|whip)(?:s|ning|ing)?[\s-]*(?:to[\s-]+the[\s-]+)?left)\b",
                               re.I)),
    ("pan", "right", re.compile(r"\b((?:pan|truck|track|whip)(?:s|ning|ing)?[\s-]*(?:to[\s-]+the[\s-]+)?right)\b",
                                re.I)),
    ("tilt", "up", re.compile(r"\b((?:tilt|crane|boom|pedestal)(?:s|ing)?[\s-]*up|rises?|rising)\b", re.I)),
    ("tilt", "down", re.compile(r"\b((?:tilt|crane|boom|pedestal)(?:s|ing)?[\s-]*down|descends?|descending)\b",
                                re.I)),
]
_HANDHELD = re.compile(r"\b(hand[\s-]*held|shak(?:y|e|ing)|jitter(?:y)?|documentary)\b", re.I)
_STATIC = re.compile(r"\b(static|locked[\s-]*off|still|tripod|no[\s-]+camera[\s-]+move(?:ment)?)\b", re.I)
_SLOW = re.compile(r"\b(slow(?:ly)?|gentle|gently|subtle|slight(?:ly)?)\b", re.I)
_FAST = re.compile(r"\b(fast|quick(?:ly)?|dramatic(?:ally)?|rapid(?:ly)?|whip)\b", re.I)


def parse_camera_move(motion_prompt: str) -> CameraMoveInfo:
    """Read the camera move from free text; nothing recognised → static."""
    found: dict[str, tuple[int, str, str]] = {}
    for axis, value, pattern in _MOVE_PATTERNS:
        match = pattern.search(motion_prompt)
        if match and (axis not in found or match.start() < found[axis][0]):
            found[axis] = (match.start(), value, match.group(1))
    handheld = _HANDHELD.search(motion_prompt)
    static = _STATIC.search(motion_prompt)
    matched = [phrase for _, _, phrase in sorted(found.values())]
    if handheld:
        matched.append(handheld.group(1))
    if static and not found and not handheld:
        matched.append(static.group(1))
    strength = 1.0
    if _FAST.search(motion_prompt):
        strength = 1.5
    elif _SLOW.search(motion_prompt):
        strength = 0.6
    parts = []
    zoom = found.get("zoom", (0, None, ""))[1]
    pan = found.get("pan", (0, None, ""))[1]
    tilt = found.get("tilt", (0, None, ""))[1]
    if zoom:
        parts.append(zoom)
    if pan:
        parts.append(f"pan_{pan}")
    if tilt:
        parts.append(f"tilt_{tilt}")
    if handheld:
        parts.append("handheld")
    return CameraMoveInfo(name="+".join(parts) or "static", zoom=zoom, pan=pan, tilt=tilt,
                          handheld=bool(handheld), strength=strength, matched=matched)


def smoothstep(t: float) -> float:
    t = min(1.0, max(0.0, t))
    return t * t * (3.0 - 2.0 * t)


# A pure smoothstep has zero slope at both ends: with a keyframe at rest (pull-out,
# static) the first and last second of a long shot would barely change — a visible
# freeze that QA rightly flags. Mixing in a linear part keeps the ease and the motion.
BLEND_LINEAR_SHARE = 0.5


def blend_weight(t: float) -> float:
    """Weight of the end keyframe at ``t``: 0 at t=0, 1 at t=1, slope >= 0.5 everywhere."""
    t = min(1.0, max(0.0, t))
    return BLEND_LINEAR_SHARE * t + (1.0 - BLEND_LINEAR_SHARE) * smoothstep(t)


@dataclass(frozen=True)
class Window:
    """A crop of a keyframe: ``scale`` >= 1 and the crop centre, in source pixels."""

    scale: float
    cx: float
    cy: float

    def is_identity(self, width: int, height: int) -> bool:
        return abs(self.scale - 1.0) < 1e-9 and abs(self.cx - width / 2) < 1e-6 and abs(self.cy - height / 2) < 1e-6


@dataclass(frozen=True)
class FramePlan:
    index: int
    t: float
    blend: float       # weight of the end keyframe
    start: Window
    end: Window


class MotionPlanner:
    """Per-frame windows and blend weights for a move; a pure function of its inputs."""

    def __init__(self, move: CameraMoveInfo, width: int, height: int, num_frames: int, fps: float, seed: int) -> None:
        if num_frames < 2:
            raise ValueError("num_frames must be >= 2")
        self.move, self.width, self.height = move, width, height
        self.num_frames, self.fps = num_frames, fps
        rng = np.random.default_rng(seed)
        # Three incommensurate sinusoids per axis read as a hand-held wobble, not a loop.
        self._shake = [(rng.uniform(0.6, 2.2, 3), rng.uniform(0, 2 * math.pi, 3), rng.uniform(0.4, 1.0, 3))
                       for _ in range(2)]

    def _shake_offsets(self, t: float) -> tuple[float, float, float]:
        """(extra scale, x, y) of the hand-held wobble at ``t``; x, y in [-1, 1] of the shake margin."""
        if not self.move.handheld:
            return 0.0, 0.0, 0.0
        envelope = smoothstep(min(1.0, t / SHAKE_RAMP, (1.0 - t) / SHAKE_RAMP))
        seconds = t * (self.num_frames - 1) / self.fps
        xy = []
        for freqs, phases, amps in self._shake:
            value = float(np.sum(amps * np.sin(2 * math.pi * freqs * seconds + phases)) / np.sum(amps))
            xy.append(value * envelope)
        return SHAKE_AMOUNT * self.move.strength * envelope, xy[0], xy[1]

    def _window(self, progress: float, *, arriving: bool, shake: tuple[float, float, float]) -> Window:
        """The window of one keyframe.  ``progress`` is 0 where this keyframe is shown as-is.

        The start keyframe moves away along the camera path (progress = t); the end
        keyframe arrives along it (progress = 1 - t), so its direction is mirrored.
        """
        move, strength = self.move, self.move.strength
        scale = 1.0
        ox = oy = 0.0
        if move.zoom == "push_in" and not arriving:
            scale *= 1.0 + ZOOM_AMOUNT * strength * progress
        if move.zoom == "pull_out" and arriving:
            scale *= 1.0 + ZOOM_AMOUNT * strength * progress
        if move.pan:
            scale_pan = 1.0 + PAN_AMOUNT * strength * progress
            scale *= scale_pan
            direction = 1.0 if move.pan == "right" else -1.0
            ox = -direction if arriving else direction
        if move.tilt:
            scale *= 1.0 + TILT_AMOUNT * strength * progress
            direction = -1.0 if move.tilt == "up" else 1.0   # image y grows downwards
            oy = -direction if arriving else direction
        move_scale = scale
        shake_scale, sx, sy = shake
        scale *= 1.0 + shake_scale
        half_w, half_h = self.width / 2.0, self.height / 2.0
        # The move uses the margin its own zoom opened; the shake the extra margin of its zoom.
        move_margin_x, move_margin_y = half_w * (1 - 1 / move_scale), half_h * (1 - 1 / move_scale)
        shake_margin_x = half_w * (1 / move_scale - 1 / scale)
        shake_margin_y = half_h * (1 / move_scale - 1 / scale)
        cx = half_w + ox * move_margin_x + sx * shake_margin_x
        cy = half_h + oy * move_margin_y + sy * shake_margin_y
        return Window(scale, cx, cy)

    def frame(self, index: int) -> FramePlan:
        t = index / (self.num_frames - 1)
        shake = self._shake_offsets(t)
        return FramePlan(index, t, blend_weight(t), self._window(t, arriving=False, shake=shake),
                         self._window(1.0 - t, arriving=True, shake=shake))

    def __iter__(self) -> Iterator[FramePlan]:
        return (self.frame(i) for i in range(self.num_frames))


def _crop_box(window: Window, width: int, height: int) -> tuple[float, float, float, float]:
    """The source rectangle a window shows (stretched over the whole frame)."""
    half_w, half_h = width / (2.0 * window.scale), height / (2.0 * window.scale)
    # Clamping only absorbs float rounding: windows lie inside the frame by construction.
    return (max(0.0, window.cx - half_w), max(0.0, window.cy - half_h),
            min(float(width), window.cx + half_w), min(float(height), window.cy + half_h))


def _view(image: Image.Image, window: Window) -> Image.Image:
    width, height = image.size
    if window.is_identity(width, height):
        return image
    # The window is scale + offset only (no rotation), so a separable resize of the
    # box is exact and ~2.4x faster than a general affine transform.
    return image.resize((width, height), Image.Resampling.BILINEAR, box=_crop_box(window, width, height))


def _through(box: tuple[float, float, float, float], window: Window, width: int, height: int) -> list[int]:
    """A source-pixel box as the window shows it in the frame (rounded outwards, clamped to the frame)."""
    x0, y0, x1, y1 = _crop_box(window, width, height)
    sx, sy = width / (x1 - x0), height / (y1 - y0)
    return [max(0, math.floor((box[0] - x0) * sx)), max(0, math.floor((box[1] - y0) * sy)),
            min(width, math.ceil((box[2] - x0) * sx)), min(height, math.ceil((box[3] - y0) * sy))]


def mouth_track(transition: str, planner: MotionPlanner, composer: FigureComposer | None,
                start_layout: KeyframeLayout | None, end_layout: KeyframeLayout | None,
                ) -> dict[str, list[list[int] | None]]:
    """Per frame, where each named face's mouth is in the clip (None where no single drawing of it shows).

    The lip-sync ``mux`` backend reads this from the clip's metadata and redraws the
    speaker's mouth there.  Frames of a dissolve between the ends hold two copies of
    a face, so only its exact ends are tracked.
    """
    last = planner.num_frames - 1
    size = (planner.width, planner.height)
    track: dict[str, list[list[int] | None]] = {}

    def put(index: int, mouths: dict[str, tuple[float, ...]], window: Window) -> None:
        for name, box in mouths.items():
            track.setdefault(name, [None] * planner.num_frames)[index] = _through(box, window, *size)  # type: ignore[arg-type]

    def recorded(layout: KeyframeLayout | None) -> dict[str, tuple[float, ...]]:
        return {f.name: f.mouth for f in (layout.figures if layout else ()) if f.name and f.mouth}

    identity = Window(1.0, size[0] / 2, size[1] / 2)
    put(0, recorded(start_layout), identity)
    put(last, recorded(end_layout), identity)
    for plan in planner:
        if plan.index in (0, last):
            continue
        if composer is not None:
            window = planner.frame(round(min(plan.t, 1.0 - plan.t) * last)).start  # as render_figure_frames
            put(plan.index, composer.mouths(blend_weight(plan.t)), window)  # type: ignore[arg-type]
        elif transition == "cut":
            put(plan.index, recorded(start_layout), plan.start)
    return track


def render_frames(start: Image.Image, end: Image.Image, planner: MotionPlanner) -> Iterator[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of the clip; both images must already have the output size."""
    size = (planner.width, planner.height)
    if start.size != size or end.size != size or start.mode != "RGB" or end.mode != "RGB":
        raise ValueError(f"keyframes must be RGB {size}, got {start.mode} {start.size} and {end.mode} {end.size}")
    for plan in planner:
        if plan.blend <= 0.0:
            frame = _view(start, plan.start)
        elif plan.blend >= 1.0:
            frame = _view(end, plan.end)
        else:
            frame = Image.blend(_view(start, plan.start), _view(end, plan.end), plan.blend)
        yield np.asarray(frame)


# How the clip gets from the start keyframe to the end one (recorded as ``transition``):
#   figures  — both keyframes show one storyboard set at one framing: the figures move over it
#              (figure_motion.py) and the camera drifts there and back, identity at both ends;
#   cut      — different sets or framings: the start keyframe holds under the camera move and the
#              clip cuts to the end keyframe on its last frame (the end keyframe composes the next
#              shot: a talking close-up keeps its speaker for the whole line);
#   dissolve — keyframes without a storyboard layout (diffusion stills), or a prompt that asks for
#              a dissolve/crossfade: the eased blend above.
# The motion prompt may force one: "cut"/"hard cut" or "dissolve"/"crossfade"/"fade".
_FORCE_CUT = re.compile(r"\b(?:hard|jump|straight)[\s-]+cuts?\b|\bcuts?[\s-]+(?:to|away)\b", re.I)
_FORCE_DISSOLVE = re.compile(r"\b(dissolve[sd]?|cross[\s-]*fade[sd]?|fade[sd]?|blend(?:s|ed)?)\b", re.I)
# A held or there-and-back shot with no move of its own still drifts: a frozen picture
# reads as a stall (QA's frozen_frames), and the drift keeps both ends exact.
IDLE_STRENGTH = 0.25


def choose_transition(motion_prompt: str, start: Image.Image, end: Image.Image,
                      layouts: tuple[KeyframeLayout | None, KeyframeLayout | None],
                      ) -> tuple[str, FigureComposer | None]:
    """The transition for this pair of keyframes (and their parsed layouts), and the composer when figures move."""
    if _FORCE_DISSOLVE.search(motion_prompt):
        return "dissolve", None
    if layouts[0] is None or layouts[1] is None:
        return ("cut" if _FORCE_CUT.search(motion_prompt) else "dissolve"), None
    start_px, end_px = np.asarray(start), np.asarray(end)
    if _FORCE_CUT.search(motion_prompt) or not shares_set(start_px, end_px, layouts[0], layouts[1]):
        return "cut", None
    return "figures", FigureComposer(start_px, end_px, layouts[0], layouts[1])


def camera_for(transition: str, move: CameraMoveInfo) -> CameraMoveInfo:
    """The move the frames follow: ``move`` itself for a dissolve; else one that moves the start's window.

    Cut and figure clips frame everything through the start keyframe's window, which a
    pull-out leaves at rest (it is carried by the end keyframe): there it becomes a
    push-in, and a static shot a slow one (see IDLE_STRENGTH).
    """
    if transition == "dissolve":
        return move
    if move.name == "static" or (move.zoom == "pull_out" and not (move.pan or move.tilt or move.handheld)):
        strength = IDLE_STRENGTH if move.name == "static" else move.strength
        return move.model_copy(update={"zoom": "push_in", "strength": strength})
    return move


def render_cut_frames(start: Image.Image, end: Image.Image, planner: MotionPlanner) -> Iterator[np.ndarray]:
    """The start keyframe under the camera move, then the end keyframe on the last frame."""
    last = planner.num_frames - 1
    for plan in planner:
        yield np.asarray(end if plan.index == last else _view(start, plan.start))


def render_figure_frames(start: Image.Image, end: Image.Image, composer: FigureComposer,
                         planner: MotionPlanner) -> Iterator[np.ndarray]:
    """Figures moving over the shared set; the camera goes out along the move and back (identity at both ends)."""
    last = planner.num_frames - 1
    for plan in planner:
        if plan.index == 0 or plan.index == last:
            yield np.asarray(start if plan.index == 0 else end)
            continue
        picture = composer.frame(blend_weight(plan.t))
        # planner.frame at t' = min(t, 1-t) gives the start window at that progress: out, then back.
        window = planner.frame(round(min(plan.t, 1.0 - plan.t) * last)).start
        yield np.asarray(_view(picture, window))


def keyframe_zone_args(num_frames: int, qp: int = KEYFRAME_QP) -> tuple[str, ...]:
    last = num_frames - 1
    return ("-x264-params", f"zones=0,0,q={qp}/{last},{last},q={qp}")


class KeyframeMotionBackend:
    """videos_wan on CPU: a parsed camera move over an eased blend of the two keyframes."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.crf = int(profile.options.get("crf", ENCODER_CRF))
        self.preset = str(profile.options.get("preset", "veryfast"))

    def load(self) -> None:
        # Fail at start-up, not on the first request, if the ffmpeg binary is missing.
        from sparkle_motion.media import ffmpeg_exe

        ffmpeg_exe()

    def invoke(self, request: VideosWanRequest, ctx: ToolContext) -> VideosWanResponse:
        t0 = time.perf_counter()
        keys = prepare_keyframes(request, ctx)
        start, end, width, height, num_frames = keys.start, keys.end, keys.width, keys.height, keys.num_frames
        start_manifest, end_manifest, resized = keys.start_manifest, keys.end_manifest, keys.resized
        move = parse_camera_move(request.motion_prompt)
        seed = request.seed if request.seed is not None else default_seed(request)
        layouts = parse_layout(keys.start_layout, start.size), parse_layout(keys.end_layout, end.size)
        transition, composer = choose_transition(request.motion_prompt, start, end, layouts)
        camera = camera_for(transition, move)
        planner = MotionPlanner(camera, width, height, num_frames, request.fps, seed)
        mouths = mouth_track(transition, planner, composer, *layouts)
        t_decoded = time.perf_counter()

        out_path = ctx.staging_path(".mp4")
        synth_s = 0.0
        zone_args = keyframe_zone_args(num_frames)
        writer = VideoWriter(out_path, width, height, request.fps, crf=self.crf, preset=self.preset,
                             extra_args=zone_args)
        try:
            if composer is not None:
                frames = render_figure_frames(start, end, composer, planner)
            elif transition == "cut":
                frames = render_cut_frames(start, end, planner)
            else:
                frames = render_frames(start, end, planner)
            while True:
                # progress per frame; a disconnected caller / cancelled job stops here
                ctx.progress(writer.frames_written, num_frames, "frames")
                t_frame = time.perf_counter()
                frame = next(frames, None)
                synth_s += time.perf_counter() - t_frame
                if frame is None:
                    break
                writer.write(frame)
            t_drain = time.perf_counter()
            encode_total_s = writer.close()
            drain_s = time.perf_counter() - t_drain
        except BaseException:
            writer.abort()
            raise
        if writer.frames_written != num_frames:  # an internal invariant; never expected
            raise RuntimeError(f"wrote {writer.frames_written} frames, planned {num_frames}")
        duration_s = num_frames / request.fps
        ignored = [name for name in DIFFUSION_OPTIONS if getattr(request, name) not in (None, "")]
        timings = {
            "load_inputs_s": round(t_decoded - t0, 6),
            "synthesis_s": round(synth_s, 6),
            "encode_wall_s": round(encode_total_s, 6),
            "encode_drain_s": round(drain_s, 6),
            "frames_per_s": round(num_frames / max(encode_total_s, 1e-9), 3),
        }
        params: dict[str, Any] = request.model_dump(exclude={"run_id", "stage", "seed"})
        params.update(width=width, height=height, num_frames=num_frames, crf=self.crf, preset=self.preset)
        manifest = ctx.put_output(
            request, "video", out_path, "video/mp4",
            {"seed": seed, "params": params, "num_frames": num_frames, "fps": request.fps,
             "duration_s": duration_s, "camera_move": move.model_dump(),
             "blend": "0.5*linear+0.5*smoothstep", "transition": transition,
             "camera_path": camera.name if transition != "figures" else f"{camera.name} out and back",
             "moving_figures": composer.moving if composer else 0, "inputs": {"start_frame_uri": start_manifest.uri,
                                                "end_frame_uri": end_manifest.uri},
             "resized_inputs": [r.model_dump() for r in resized], "ignored_options": ignored,
             "encoder": {"codec": "libx264", "pix_fmt": "yuv420p", "crf": self.crf, "preset": self.preset,
                         "keyframe_qp": KEYFRAME_QP, "x264_params": zone_args[1]},
             "mouths": mouths, "timings": timings},
            media={"duration_s": duration_s, "fps": request.fps, "width": width, "height": height},
            ext=".mp4", move=True,
        )
        return VideosWanResponse(
            video=manifest, artifacts=[manifest], num_frames=num_frames, fps=request.fps, duration_s=duration_s,
            width=width, height=height, seed=seed, camera_move=move, resized_inputs=resized,
            ignored_options=ignored, timings=timings,
        )
