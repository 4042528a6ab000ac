"""What a plan will cost before anything runs: its render geometry and a dry run's invocation graph."""

from __future__ import annotations

import math
from typing import Any

from sparkle_motion.config import Settings
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.plan import MoviePlan

# Used only when a profile file sets no `render:` block.
RENDER_FALLBACK = {"fps": 24, "width": 640, "height": 360}


def render_geometry(plan: MoviePlan, settings: Settings) -> tuple[float, int, int]:
    """(fps, width, height): the plan's video settings, unset ones from the profile's render defaults."""
    video = plan.render_profile.video.with_defaults({**RENDER_FALLBACK, **settings.render})
    return float(video.fps), int(video.width), int(video.height)


def estimate(plan: MoviePlan, settings: Settings, qa_mode: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The invocation graph and a resource estimate for a dry run (no tool is called)."""
    fps, width, height = render_geometry(plan, settings)
    lines = [e for e in plan.dialogue_timeline if e.type == "dialogue"]
    closeups = [s.id for s in plan.shots if s.is_talking_closeup]
    frames = round(plan.runtime_s * fps)
    qa = qa_mode == "full"
    rendered = [c for c in plan.characters if c.reference_image_id is None]  # the others are the user's photos
    graph = [
        {"stage": "plan_intake", "tool": None, "calls": 0, "items": [plan.plan_id]},
        {"stage": "cast", "tool": "images_sdxl", "calls": len(rendered),
         "items": [f"cast_{c.id}" for c in plan.characters], "qa_calls": len(rendered) if qa else 0},
        {"stage": "dialogue_audio", "tool": "tts_chatterbox", "calls": len(lines),
         "items": [f"line_{plan.dialogue_timeline.index(e):03d}" for e in lines]},
        {"stage": "base_images", "tool": "images_sdxl", "calls": len(plan.base_images),
         "items": [b.id for b in plan.base_images], "qa_calls": len(plan.base_images) if qa else 0},
        {"stage": "video_clips", "tool": "videos_wan", "calls": len(plan.shots), "items": [s.id for s in plan.shots],
         "qa_calls": len(plan.shots) if qa else 0},
        {"stage": "lipsync", "tool": "lipsync_wav2lip", "calls": len(closeups), "items": closeups},
        {"stage": "assemble", "tool": "assemble_ffmpeg", "calls": 1, "items": ["film"]},
        {"stage": "qa_publish", "tool": "qa_qwen2vl", "calls": 1 if qa else 0, "items": ["film"] if qa else []},
        {"stage": "finalize", "tool": None, "calls": 0, "items": ["video_final"]},
    ]
    backends = {t: settings.tool_profile(t).backend for t in settings.profile}
    # Bytes: PNG keyframes ~1.5 B/pixel, H.264 at crf 18-20 ~0.1 B/pixel/frame (clip + lipsync + film copies).
    pixels = width * height
    estimate_ = {
        "runtime_s": plan.runtime_s, "frames": frames, "fps": fps, "width": width, "height": height,
        "audio_s": plan.runtime_s, "dialogue_lines": len(lines), "tool_calls": sum(g["calls"] + g.get("qa_calls", 0) for g in graph),
        "disk_bytes": int((len(plan.base_images) + 2 * len(plan.characters)) * pixels * 1.5 + 3 * frames * pixels * 0.1 + plan.runtime_s * 24_000 * 2 * 2),
        "backends": backends,
        "gpu_required": any(b in {"sdxl", "wan2.1-flf2v", "ltx-video", "chatterbox", "wav2lip", "qwen2-vl"}
                            for b in backends.values()),
        "peak_vram_gb": max([{"sdxl": 10, "wan2.1-flf2v": 24, "ltx-video": 16, "chatterbox": 4, "wav2lip": 2,
                              "qwen2-vl": 18}.get(b, 0)
                             for b in backends.values()] or [0]),
    }
    if not math.isfinite(estimate_["runtime_s"]):
        raise InvalidInputError("plan runtime is not finite", field="shots")
    return graph, estimate_
