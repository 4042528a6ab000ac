"""keyframe_motion frames/s at 640x360 vs a plain ffmpeg encode of the same frames.

Measured in one run on the same two storyboard keyframes, same encoder settings
(the backend's CRF, preset and keyframe zones):

* ``keyframe_motion``: what the backend does per clip — plan the move, resample
  and blend every frame with Pillow, pipe it to ffmpeg (VideoWriter), wait for
  the encode to finish;
* ``baseline``: the very same raw frames, rendered beforehand and held in
  memory, piped straight to VideoWriter — the cost of the encode alone;
* ``synthesis only``: frame rendering without any encoder (one core).

Run: ``.venv/bin/python bench/bench_keyframe_motion.py [--frames 96] [--repeats 3] [--motion "..."]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from function_tools.images_sdxl.scene import describe_scene
from function_tools.images_sdxl.storyboard import render_frame
from function_tools.videos_wan.keyframe_motion import (
    ENCODER_CRF,
    MotionPlanner,
    keyframe_zone_args,
    parse_camera_move,
    render_frames,
)
from sparkle_motion.media import VideoWriter, decode_video_frames

WIDTH, HEIGHT, FPS = 640, 360, 24.0
PRESET = "veryfast"


def keyframes() -> tuple:
    prompts = ("Two friends on a neon rooftop before sunrise", "The same rooftop at noon, the city awake below")
    return tuple(render_frame(p, 1, WIDTH, HEIGHT, scene=describe_scene(p), characters=["Maya", "Leo"])
                 for p in prompts)


def writer(path: Path, frames: int) -> VideoWriter:
    return VideoWriter(path, WIDTH, HEIGHT, FPS, crf=ENCODER_CRF, preset=PRESET, extra_args=keyframe_zone_args(frames))


def run_motion(start, end, motion: str, frames: int, path: Path) -> float:
    t0 = time.perf_counter()
    planner = MotionPlanner(parse_camera_move(motion), WIDTH, HEIGHT, frames, FPS, seed=1)
    with writer(path, frames) as out:
        for frame in render_frames(start, end, planner):
            out.write(frame)
    return time.perf_counter() - t0


def run_baseline(raw_frames: list, path: Path) -> float:
    t0 = time.perf_counter()
    with writer(path, len(raw_frames)) as out:
        for frame in raw_frames:
            out.write(frame)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--motion", action="append",
                        help="motion prompt(s); default: static, pan left, handheld push in and pan right")
    args = parser.parse_args()
    motions = args.motion or ["static", "pan left", "handheld push in and pan right"]
    start, end = keyframes()
    print(f"keyframe_motion vs plain encode: {args.frames} frames {WIDTH}x{HEIGHT} @ {FPS:g} fps, "
          f"libx264 crf {ENCODER_CRF} preset {PRESET}, median of {args.repeats}")
    print(f"{'motion':<34}{'synth-only f/s':>16}{'keyframe_motion f/s':>21}{'baseline f/s':>14}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for motion in motions:
            planner = MotionPlanner(parse_camera_move(motion), WIDTH, HEIGHT, args.frames, FPS, seed=1)
            t0 = time.perf_counter()
            raw = [frame.copy() for frame in render_frames(start, end, planner)]
            synth_fps = args.frames / (time.perf_counter() - t0)
            motion_s, base_s = [], []
            for i in range(args.repeats):
                # Interleave the two so machine load drifts hit both alike.
                motion_s.append(run_motion(start, end, motion, args.frames, Path(tmp) / f"m{i}.mp4"))
                base_s.append(run_baseline(raw, Path(tmp) / f"b{i}.mp4"))
            decoded = sum(1 for _ in decode_video_frames(Path(tmp) / "m0.mp4"))
            if decoded != args.frames:
                raise SystemExit(f"encoded clip has {decoded} frames, expected {args.frames}")
            motion_fps = args.frames / statistics.median(motion_s)
            base_fps = args.frames / statistics.median(base_s)
            print(f"{motion:<34}{synth_fps:>16.1f}{motion_fps:>21.1f}{base_fps:>14.1f}{motion_fps / base_fps:>8.2f}")
    print("ratio = keyframe_motion f/s / baseline f/s (1.0 = frame synthesis fully hidden behind the encode)")


if __name__ == "__main__":
    main()
