"""What the diffusion backends of videos_wan share (``wan2.1-flf2v`` and ``ltx-video``).

Both render a fixed grid of frames (``factor*k + 1`` frames, sides a multiple
of the latent cell) between two keyframes, then resample that clip in time and
space to the shot's exact frame count and size; both count denoising steps
through ``callback_on_step_end`` (progress, cancel) and encode the same way.
That contract lives here so neither backend imports the other.

Time resampling: output frame ``j`` of ``N`` sits at source position
``s = j * (M-1) / (N-1)``, so the first and last frames are always the model's
first and last frames (the keyframes).  ``nearest`` takes frame ``round(s)``
(invisible when the counts differ only by the rounding), ``linear`` blends
``f[floor s]`` and ``f[floor s + 1]`` (no judder when a long shot was
stretched past the model's frame cap); ``auto`` picks between them.
"""

from __future__ import annotations

import gc
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from function_tools.videos_wan.keyframes import PreparedKeyframes, default_seed
from function_tools.videos_wan.models import VideosWanRequest, VideosWanResponse, WanGenerationInfo
from sparkle_motion.errors import ConfigError
from sparkle_motion.logs import SparkleLogger
from sparkle_motion.media import VideoWriter
from sparkle_motion.services.context import ToolContext

TEMPORAL_RESAMPLE_MODES = ("auto", "nearest", "linear")
ENCODER_CRF = 18
# Keyframes this close (PSNR, dB) are the same picture for the model: it then renders a near-still clip.
IDENTICAL_KEYFRAMES_PSNR_DB = 45.0


# --------------------------------------------------------------------------- geometry and time

def model_frame_count(shot_frames: int, *, temporal_factor: int, max_frames: int | None) -> int:
    """The ``temporal_factor*k + 1`` frame count nearest ``shot_frames`` (ties up), k >= 1, capped at ``max_frames``.

    k >= 1 because the first and last frames are both given: the model needs
    room between them.  The cap is itself rounded down to a valid count.
    """
    if shot_frames < 1:
        raise ValueError(f"shot_frames must be >= 1 (got {shot_frames})")
    if temporal_factor < 1:
        raise ValueError(f"temporal_factor must be >= 1 (got {temporal_factor})")
    k = math.floor((shot_frames - 1) / temporal_factor + 0.5)   # round half up
    k = max(1, k)
    if max_frames is not None:
        k_cap = (max_frames - 1) // temporal_factor
        if k_cap < 1:
            raise ValueError(f"max_frames={max_frames} leaves no valid {temporal_factor}k+1 count")
        k = min(k, k_cap)
    return temporal_factor * k + 1


def aligned_generation_size(width: int, height: int, multiple: int, max_area: int | None = None) -> tuple[int, int]:
    """Width and height as multiples of ``multiple``, nearest the request, within ``max_area`` pixels.

    Over the cap, both sides scale by ``sqrt(max_area / area)`` (aspect kept)
    and round *down*, so the result never exceeds the cap.
    """
    if width < 1 or height < 1 or multiple < 1:
        raise ValueError(f"bad size {width}x{height} / multiple {multiple}")
    if max_area is not None and width * height > max_area:
        scale = math.sqrt(max_area / (width * height))
        w = max(multiple, math.floor(width * scale / multiple) * multiple)
        h = max(multiple, math.floor(height * scale / multiple) * multiple)
        return w, h
    w = max(multiple, math.floor(width / multiple + 0.5) * multiple)
    h = max(multiple, math.floor(height / multiple + 0.5) * multiple)
    if max_area is not None and w * h > max_area:   # rounding up crossed the cap
        w = max(multiple, math.floor(width / multiple) * multiple)
        h = max(multiple, math.floor(height / multiple) * multiple)
    return w, h


def shrunk_size(width: int, height: int, multiple: int) -> tuple[int, int] | None:
    """Half the area (sides / sqrt 2), aligned down; None when it cannot get smaller."""
    w = max(multiple, math.floor(width / math.sqrt(2) / multiple) * multiple)
    h = max(multiple, math.floor(height / math.sqrt(2) / multiple) * multiple)
    return None if (w, h) == (width, height) else (w, h)


def temporal_positions(source_frames: int, target_frames: int) -> np.ndarray:
    """Source position of each output frame: ``j * (M-1) / (N-1)``; first → 0, last → M-1."""
    if source_frames < 1 or target_frames < 1:
        raise ValueError("frame counts must be >= 1")
    if target_frames == 1:
        return np.zeros(1)
    return np.arange(target_frames, dtype=np.float64) * (source_frames - 1) / (target_frames - 1)


def resolve_resample_mode(mode: str, source_frames: int, target_frames: int, temporal_factor: int) -> str:
    """``none`` when the counts match; ``auto`` → nearest for the k*factor+1 rounding, linear for a stretch."""
    if mode not in TEMPORAL_RESAMPLE_MODES:
        raise ValueError(f"temporal resample mode must be one of {TEMPORAL_RESAMPLE_MODES} (got {mode!r})")
    if source_frames == target_frames:
        return "none"
    if mode != "auto":
        return mode
    return "nearest" if abs(source_frames - target_frames) <= temporal_factor // 2 else "linear"


def resample_frames(frames: np.ndarray, target_frames: int, mode: str) -> np.ndarray:
    """Resample ``frames`` (M, H, W, C) in time to ``target_frames``; mode ``none`` | ``nearest`` | ``linear``.

    Float input stays float; the blend is computed in float32 either way.
    """
    source = frames.shape[0]
    if mode == "none":
        if source != target_frames:
            raise ValueError(f"mode 'none' needs equal counts ({source} != {target_frames})")
        return frames
    positions = temporal_positions(source, target_frames)
    if mode == "nearest":
        return frames[np.minimum(np.floor(positions + 0.5).astype(np.int64), source - 1)]
    if mode != "linear":
        raise ValueError(f"unknown resample mode {mode!r}")
    lower = np.minimum(np.floor(positions).astype(np.int64), source - 1)
    upper = np.minimum(lower + 1, source - 1)
    weight = (positions - lower).astype(np.float32).reshape(-1, *([1] * (frames.ndim - 1)))
    blended = (1.0 - weight) * frames[lower].astype(np.float32) + weight * frames[upper].astype(np.float32)
    return blended if np.issubdtype(frames.dtype, np.floating) else np.clip(np.rint(blended), 0, 255).astype(
        frames.dtype)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Pipeline frames in [0, 1] (float) → uint8 RGB."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def keyframe_psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def model_fingerprint(model: str) -> str:
    """Identity of the weights: a local directory's file names, sizes and mtimes; a hub id as is.

    Part of the warm-cache key, so replacing a local checkpoint on disk makes
    the next call load the new weights instead of serving the stale ones.
    """
    path = Path(model)
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{path.resolve()}#{digest.hexdigest()[:16]}"


def option_value(options: dict[str, Any], name: str, kind: type, default: Any, *, check: Callable[[Any], bool],
            rule: str) -> Any:
    raw = options.get(name, default)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"options.{name} must be {rule} (got {raw!r})", field=f"options.{name}") from None
    if not check(value):
        raise ConfigError(f"options.{name} must be {rule} (got {raw!r})", field=f"options.{name}")
    return value


def quiet_hub_progress() -> None:
    # Per-component "Loading weights" bars would interleave with the JSON log lines.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


@dataclass
class StepProgress:
    """callback_on_step_end target: counts, logs and reports every denoising step; ``passes`` counts pipeline calls.

    ``check_cancelled`` is the ToolContext's (a cancel stops at the next step);
    ``report(step, total, phase)`` is the context's job progress when it has one.
    """

    log: SparkleLogger | None
    check_cancelled: Callable[[], None] | None = None
    report: Callable[[int, int, str], None] | None = None
    event: str = "diffusion.step"
    steps_completed: int = 0
    passes: int = 0
    pass_name: str = ""
    started: float = 0.0

    @classmethod
    def for_context(cls, ctx: ToolContext, event: str) -> StepProgress:
        # ``ctx.progress`` arrives with job support; a context without it still cancels per step.
        return cls(ctx.log, ctx.check_cancelled, getattr(ctx, "progress", None), event)

    def begin(self, name: str) -> None:
        self.pass_name, self.started = name, time.perf_counter()

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.check_cancelled is not None:
            self.check_cancelled()
        self.steps_completed += 1
        total = int(pipe.num_timesteps)
        if self.log is not None:
            self.log.info(self.event, pass_name=self.pass_name, step=step + 1, of=total,
                          elapsed_s=round(time.perf_counter() - self.started, 3))
        if self.report is not None:
            self.report(step + 1, total, self.pass_name)
        return {}


def release_device_memory(device: str) -> None:
    """Before an OOM retry: the failed attempt's tensors died with its traceback; hand their blocks back."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 frames to ``size`` (w, h) with Lanczos; unchanged when already that size."""
    if (frames.shape[2], frames.shape[1]) == size:
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames])


def text_prompt(request: VideosWanRequest) -> str:
    """The models are text-conditioned: the shot's action and its camera move go into one prompt."""
    parts = [request.prompt.strip(), request.motion_prompt.strip()]
    if parts[1]:
        parts[1] = f"Camera: {parts[1]}"
    return ". ".join(p.rstrip(".") for p in parts if p)


def identical_keyframes_warning(start: Image.Image, end: Image.Image, ctx: ToolContext, model: str
                                ) -> tuple[float, list[str]]:
    """PSNR of the two keyframes, and a warning (also logged) when they are the same picture."""
    similarity = keyframe_psnr(start, end)
    if similarity < IDENTICAL_KEYFRAMES_PSNR_DB:
        return similarity, []
    ctx.log.warning("videos_wan.identical_keyframes", psnr_db=similarity)
    return similarity, [f"start and end keyframes are identical (PSNR {similarity:.1f} dB): {model} renders a "
                        "near-still clip between them; give the shot distinct keyframes for motion"]


def encode_clip(ctx: ToolContext, clip: np.ndarray, fps: float, *, crf: int, preset: str) -> tuple[Path, float]:
    """uint8 frames (N, H, W, 3) → an H.264 yuv420p mp4 in staging; returns (path, encode seconds)."""
    height, width = clip.shape[1], clip.shape[2]
    out_path = ctx.staging_path(".mp4")
    writer = VideoWriter(out_path, width, height, fps, crf=crf, preset=preset)
    try:
        for frame in clip:
            writer.write(frame)
        encode_s = writer.close()
    except BaseException:
        writer.abort()
        raise
    if writer.frames_written != clip.shape[0]:  # an internal invariant; never expected
        raise RuntimeError(f"wrote {writer.frames_written} frames, planned {clip.shape[0]}")
    return out_path, encode_s


@dataclass(frozen=True)
class Rendered:
    """What a diffusion backend hands :func:`deliver_clip`: the model's frames and how they were made."""

    frames: np.ndarray            # (M, h, w, 3) float in [0, 1], the model's own grid
    temporal_factor: int          # the VAE's time compression (4 for Wan, 8 for LTX)
    resample: str                 # the profile's temporal_resample
    generation: WanGenerationInfo
    seed: int
    keyframe_psnr_db: float
    warnings: list[str]
    sampler: dict[str, Any]       # scheduler, shift, steps, guidance, negative prompt: as the pipeline ran
    started: float                # perf_counter at the start of the call
    inputs_ready: float           # ... once the keyframes were decoded
    rendered: float               # ... once the model returned


def deliver_clip(ctx: ToolContext, request: VideosWanRequest, keys: PreparedKeyframes, rendered: Rendered, *,
                 model_id: str, crf: int, preset: str) -> VideosWanResponse:
    """Resample to the shot's frames and size, encode, store with full provenance; the response."""
    num_frames, width, height = keys.num_frames, keys.width, keys.height
    generated = rendered.frames.shape[0]
    mode = resolve_resample_mode(rendered.resample, generated, num_frames, rendered.temporal_factor)
    clip = resize_frames(to_uint8(resample_frames(rendered.frames, num_frames, mode)), (width, height))
    out_path, encode_s = encode_clip(ctx, clip, request.fps, crf=crf, preset=preset)
    generation = rendered.generation.model_copy(update={"generated_frames": generated, "temporal_resample": mode})
    duration_s = num_frames / request.fps
    timings = {"load_inputs_s": round(rendered.inputs_ready - rendered.started, 6), "load_s": generation.load_s,
               "inference_s": generation.inference_s,
               "render_wall_s": round(rendered.rendered - rendered.inputs_ready, 6), "encode_wall_s": round(encode_s, 6)}
    params: dict[str, Any] = request.model_dump(exclude={"run_id", "stage", "seed"})
    params.update(width=width, height=height, num_frames=num_frames, steps=generation.steps,
                  guidance_scale=generation.guidance_scale, crf=crf, preset=preset)
    psnr = rendered.keyframe_psnr_db
    manifest = ctx.put_output(
        request, "video", out_path, "video/mp4",
        {"seed": rendered.seed, "steps": generation.steps, "params": params, "num_frames": num_frames,
         "fps": request.fps, "duration_s": duration_s, "model_id": model_id, "sampler": rendered.sampler,
         "load_s": generation.load_s, "inference_s": generation.inference_s, "device": generation.device,
         "dtype": generation.dtype, "peak_vram_mb": generation.peak_vram_mb,
         "process_peak_rss_mb": generation.process_peak_rss_mb,
         "applied_memory_options": generation.applied_memory_options, "memory_plan": generation.memory_plan,
         "load_peak_rss_mb": generation.load_peak_rss_mb,
         "generation": generation.model_dump(mode="json"),
         "inputs": {"start_frame_uri": keys.start_manifest.uri, "end_frame_uri": keys.end_manifest.uri},
         "keyframe_psnr_db": None if math.isinf(psnr) else round(psnr, 3),
         "resized_inputs": [r.model_dump() for r in keys.resized], "warnings": rendered.warnings,
         "encoder": {"codec": "libx264", "pix_fmt": "yuv420p", "crf": crf, "preset": preset}, "timings": timings},
        media={"duration_s": duration_s, "fps": request.fps, "width": width, "height": height},
        ext=".mp4", move=True,
    )
    ctx.log.info("videos_wan.done", backend=ctx.backend, frames=num_frames, generated_frames=generated,
                 resample=mode, size=f"{generation.generated_width}x{generation.generated_height}",
                 steps=generation.steps_completed, oom_events=len(generation.oom_events))
    return VideosWanResponse(
        video=manifest, artifacts=[manifest], num_frames=num_frames, fps=request.fps, duration_s=duration_s,
        width=width, height=height, seed=rendered.seed, resized_inputs=keys.resized, timings=timings,
        warnings=rendered.warnings, generation=generation,
    )


def check_diffusion_stack(device: str) -> None:
    """A diffusion backend's ``load``: fail at start-up, not on the first request, when ffmpeg, the device or
    the diffusers stack is missing.  Weights load lazily under model_context (the device lock is held only
    while working)."""
    from sparkle_motion.gpu_utils import resolve_device
    from sparkle_motion.media import ffmpeg_exe

    ffmpeg_exe()
    resolve_device(device)
    import diffusers  # noqa: F401
    import transformers  # noqa: F401


def request_text(request: VideosWanRequest, default_negative: str) -> tuple[int, str, str]:
    """(seed, prompt, negative prompt) of a request: its own values, else the derived seed and the profile's."""
    seed = request.seed if request.seed is not None else default_seed(request)
    return seed, text_prompt(request), request.negative_prompt or default_negative


def generation_info(telemetry: dict[str, Any], **fields: Any) -> WanGenerationInfo:
    """The ``generation`` record: model_context's telemetry plus the backend's sampling fields."""
    return WanGenerationInfo(
        model_key=telemetry["model_key"], device=telemetry["device"], dtype=telemetry["dtype"],
        load_s=telemetry["load_s"], inference_s=telemetry["inference_s"], reused=telemetry["reused"],
        load_count=telemetry["load_count"], applied_memory_options=telemetry["applied_memory_options"],
        peak_vram_mb=telemetry.get("peak_vram_mb"), process_peak_rss_mb=telemetry.get("process_peak_rss_mb"),
        memory_plan=telemetry.get("memory_plan"), load_peak_rss_mb=telemetry.get("load_peak_rss_mb"),
        temporal_resample="none", **fields)
