"""The ``wan2.1-flf2v`` backend: Wan2.1 first-last-frame-to-video through diffusers.

``WanImageToVideoPipeline`` gets the start keyframe as ``image=`` and the end
keyframe as ``last_image=``: the VAE encodes both into the first and last latent
frames of the conditioning video (the mask marks them as given), and CLIP
encodes both side by side for the FLF2V transformer's image cross-attention.

Geometry and time
-----------------
* Size: the transformer sees latents of ``vae_scale_factor_spatial`` x
  ``patch_size`` pixel cells (8 x 2 = 16 for Wan2.1), so the generation size is
  the output size rounded to that multiple (and scaled down to ``max_area``).
  Frames are resized back to the requested output size when the two differ.
* Frames: the Wan VAE compresses time 4:1 with a leading frame, so the model
  renders ``4k+1`` frames.  We ask for the ``4k+1`` count nearest the shot
  (ties go up; at most ``max_model_frames``, the length the model was trained on)
  and resample in time to the shot's exact frame count.  Output frame ``j`` of
  ``N`` sits at source position ``s = j * (M-1) / (N-1)``, so the first and
  last frames are always the model's first and last frames:
  - ``nearest``: frame ``round(s)`` — when the counts differ only by the 4k+1
    rounding (<= 2 frames) a dropped or repeated frame is invisible, while a
    blend would soften every frame;
  - ``linear``: ``(1-a) f[floor s] + a f[floor s + 1]`` with ``a = s - floor s`` —
    when the model's frame cap stretched a long shot, repeating frames would judder.
  - ``auto`` (default) picks ``nearest`` for the rounding case, ``linear`` otherwise.

Out of memory (``oom_policy``)
------------------------------
* ``fail``: the typed ``ModelOOMError`` (HTTP 507) goes to the caller.
* ``shrink``: retry with half the pixel area (sides x 1/sqrt 2, aligned down),
  up to ``oom_max_retries`` times; frames are resized back to the output size.
* ``chunk``: render the shot in ``c`` = 2, 4, 8 time chunks.  A short first pass
  (``max(4, c) + 1`` frames) from the start to the end keyframe gives ``c + 1``
  anchor frames; each chunk is then a first-last-frame render between two
  consecutive anchors, and the chunks are joined without their duplicated
  boundary frames.  Every chunk holds ~1/c of the tokens, so attention and VAE
  memory shrink with it, and the anchors keep the chunks on one trajectory.
Every attempt is recorded in ``generation.oom_events`` and the artifact metadata.

Test hook: ``options.simulate_oom`` (``load`` | ``inference`` | a mapping
``{stage, min_area, min_frames}``) raises torch's own ``OutOfMemoryError`` at
that process boundary — in the loader, or instead of a pipeline call whose
size is at least ``min_area`` pixels and ``min_frames`` frames — so tests on CPU
drive the same OOM handling a GPU hits.  Never set it in a real profile.
"""

from __future__ import annotations

import gc
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from function_tools.videos_wan.keyframes import default_seed, prepare_keyframes
from function_tools.videos_wan.models import (
    OomEvent,
    VideosWanRequest,
    VideosWanResponse,
    WanGenerationInfo,
)
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import ConfigError
from sparkle_motion.gpu_utils import (
    LoadSpec,
    MemoryOptions,
    ModelOOMError,
    model_context,
    resolve_dtype,
)
from sparkle_motion.logs import SparkleLogger
from sparkle_motion.media import VideoWriter
from sparkle_motion.services.context import ToolContext

BACKEND_NAME = "wan2.1-flf2v"
OOM_POLICIES = ("shrink", "chunk", "fail")
TEMPORAL_RESAMPLE_MODES = ("auto", "nearest", "linear")
# Wan2.1's VAE: 4 frames per latent frame after the first; 8x8 pixels per latent cell.
DEFAULT_TEMPORAL_FACTOR = 4
DEFAULT_MAX_MODEL_FRAMES = 81          # Wan2.1 FLF2V was trained on 81-frame clips
DEFAULT_MAX_AREA = 1280 * 720          # the 720P checkpoint's native area
DEFAULT_STEPS = 40
DEFAULT_GUIDANCE = 5.5
DEFAULT_KEEP_WARM_S = 600.0
DEFAULT_LOCK_TIMEOUT_S = 60.0
DEFAULT_OOM_MAX_RETRIES = 2
DEFAULT_MAX_SEQUENCE_LENGTH = 512
ENCODER_CRF = 18
# Keyframes this close (PSNR, dB) are the same picture for the model: Wan then renders a near-still clip.
IDENTICAL_KEYFRAMES_PSNR_DB = 45.0
CHUNK_COUNTS = (2, 4, 8)


# --------------------------------------------------------------------------- pure helpers

def wan_frame_count(shot_frames: int, *, temporal_factor: int = DEFAULT_TEMPORAL_FACTOR,
                    max_frames: int | None = DEFAULT_MAX_MODEL_FRAMES) -> int:
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


def resolve_resample_mode(mode: str, source_frames: int, target_frames: int,
                          temporal_factor: int = DEFAULT_TEMPORAL_FACTOR) -> str:
    """``none`` when the counts match; ``auto`` → nearest for the 4k+1 rounding, linear for a stretch."""
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


def chunk_anchor_frames(chunks: int) -> int:
    """Frames of the anchor pass for ``chunks`` chunks: a 4k+1 count whose ends and c-1 evenly spaced frames exist."""
    if chunks not in CHUNK_COUNTS:
        raise ValueError(f"chunks must be one of {CHUNK_COUNTS}")
    return max(DEFAULT_TEMPORAL_FACTOR, chunks) + 1


def next_chunk_count(chunks: int) -> int | None:
    """1 → 2 → 4 → 8 → None (no finer split)."""
    if chunks == 1:
        return CHUNK_COUNTS[0]
    index = CHUNK_COUNTS.index(chunks) + 1
    return CHUNK_COUNTS[index] if index < len(CHUNK_COUNTS) else None


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


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class SimulatedOom:
    """The test hook (see module docstring)."""

    stage: str
    min_area: int = 0
    min_frames: int = 0

    @classmethod
    def parse(cls, raw: Any) -> SimulatedOom | None:
        if raw in (None, False, ""):
            return None
        if isinstance(raw, str):
            raw = {"stage": raw}
        if not isinstance(raw, dict) or raw.get("stage") not in ("load", "inference") \
                or set(raw) - {"stage", "min_area", "min_frames"}:
            raise ConfigError("options.simulate_oom must be 'load', 'inference' or "
                              "{stage, min_area, min_frames}", field="options.simulate_oom")
        return cls(stage=raw["stage"], min_area=int(raw.get("min_area", 0)), min_frames=int(raw.get("min_frames", 0)))

    def fires(self, width: int, height: int, frames: int) -> bool:
        return self.stage == "inference" and width * height >= self.min_area and frames >= self.min_frames


def _option(options: dict[str, Any], name: str, kind: type, default: Any, *, check: Callable[[Any], bool],
            rule: str) -> Any:
    raw = options.get(name, default)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"options.{name} must be {rule} (got {raw!r})", field=f"options.{name}") from None
    if not check(value):
        raise ConfigError(f"options.{name} must be {rule} (got {raw!r})", field=f"options.{name}")
    return value


@dataclass(frozen=True)
class WanOptions:
    steps: int
    guidance: float
    dtype: str | None
    vae_dtype: str
    device: str
    keep_warm_s: float
    lock_timeout_s: float
    oom_policy: str
    oom_max_retries: int
    max_area: int
    max_model_frames: int
    temporal_resample: str
    max_sequence_length: int
    negative_prompt: str
    crf: int
    preset: str
    memory: MemoryOptions
    simulate_oom: SimulatedOom | None

    @classmethod
    def from_profile(cls, options: dict[str, Any]) -> WanOptions:
        known = {"steps", "guidance", "dtype", "vae_dtype", "device", "keep_warm_s", "lock_timeout_s", "oom_policy",
                 "oom_max_retries", "max_area", "max_model_frames", "temporal_resample", "max_sequence_length",
                 "negative_prompt", "crf", "preset", "memory", "simulate_oom"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown videos_wan options {unknown}; known: {sorted(known)}", field="options")
        raw_memory = options.get("memory") or {}
        if not isinstance(raw_memory, dict):
            raise ConfigError("options.memory must be a mapping", field="options.memory")
        # VAE tiling is on unless the profile says otherwise: decoding 81 frames of 720p untiled is the usual OOM.
        memory = MemoryOptions.from_options({"memory": {"vae_tiling": True, **raw_memory}})
        if memory.attention is not None:
            # The generic processors replace WanAttnProcessor and break WanAttention (no spatial_norm);
            # Wan's own processor already dispatches to torch SDPA.
            raise ConfigError(f"options.memory.attention={memory.attention!r} is not supported by Wan: its own "
                              "attention processor already uses scaled_dot_product_attention; remove the key",
                              field="options.memory.attention")
        for name in ("dtype", "vae_dtype"):   # fail at start-up on a typo, not on the first request
            try:
                resolve_dtype(options.get(name), "cpu")
            except ConfigError as exc:
                raise ConfigError(exc.message, field=f"options.{name}") from None
        return cls(
            steps=_option(options, "steps", int, DEFAULT_STEPS, check=lambda v: 1 <= v <= 200, rule="1..200"),
            guidance=_option(options, "guidance", float, DEFAULT_GUIDANCE, check=lambda v: 0 <= v <= 30,
                             rule="0..30"),
            dtype=options.get("dtype"),
            vae_dtype=str(options.get("vae_dtype", "float32")),
            device=str(options.get("device", "auto")),
            keep_warm_s=_option(options, "keep_warm_s", float, DEFAULT_KEEP_WARM_S, check=lambda v: v >= 0,
                                rule=">= 0"),
            lock_timeout_s=_option(options, "lock_timeout_s", float, DEFAULT_LOCK_TIMEOUT_S,
                                   check=lambda v: v >= 0, rule=">= 0"),
            oom_policy=_option(options, "oom_policy", str, "shrink", check=lambda v: v in OOM_POLICIES,
                               rule=" | ".join(OOM_POLICIES)),
            oom_max_retries=_option(options, "oom_max_retries", int, DEFAULT_OOM_MAX_RETRIES,
                                    check=lambda v: 0 <= v <= len(CHUNK_COUNTS), rule=f"0..{len(CHUNK_COUNTS)}"),
            max_area=_option(options, "max_area", int, DEFAULT_MAX_AREA, check=lambda v: v >= 16 * 16,
                             rule=">= 256"),
            max_model_frames=_option(options, "max_model_frames", int, DEFAULT_MAX_MODEL_FRAMES,
                                     check=lambda v: v >= 5, rule=">= 5"),
            temporal_resample=_option(options, "temporal_resample", str, "auto",
                                      check=lambda v: v in TEMPORAL_RESAMPLE_MODES,
                                      rule=" | ".join(TEMPORAL_RESAMPLE_MODES)),
            max_sequence_length=_option(options, "max_sequence_length", int, DEFAULT_MAX_SEQUENCE_LENGTH,
                                        check=lambda v: 1 <= v <= 512, rule="1..512"),
            negative_prompt=str(options.get("negative_prompt", "")),
            crf=_option(options, "crf", int, ENCODER_CRF, check=lambda v: 0 <= v <= 51, rule="0..51"),
            preset=str(options.get("preset", "veryfast")),
            memory=memory,
            simulate_oom=SimulatedOom.parse(options.get("simulate_oom")),
        )


# --------------------------------------------------------------------------- loading

def _quiet_hub_progress() -> None:
    # Per-component "Loading weights" bars would interleave with the JSON log lines.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def make_loader(model: str, options: WanOptions) -> Callable[[LoadSpec], Any]:
    """The model_context loader: VAE and CLIP in ``vae_dtype`` (fp32 keeps the decode clean), the rest in dtype."""

    def load(spec: LoadSpec) -> Any:
        import torch
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
        from transformers import CLIPVisionModel

        from sparkle_motion.gpu_utils import torch_dtype_for

        if options.simulate_oom is not None and options.simulate_oom.stage == "load":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by options.simulate_oom at load)")
        _quiet_hub_progress()
        vae_dtype = torch_dtype_for(options.vae_dtype, spec.device)
        try:
            vae = AutoencoderKLWan.from_pretrained(model, subfolder="vae", dtype=vae_dtype)
            image_encoder = CLIPVisionModel.from_pretrained(model, subfolder="image_encoder", dtype=vae_dtype)
            pipe = WanImageToVideoPipeline.from_pretrained(model, vae=vae, image_encoder=image_encoder,
                                                           dtype=spec.torch_dtype)
        except (OSError, ValueError) as exc:  # missing dir / not on the hub / offline without a cache
            raise ConfigError(f"cannot load the Wan FLF2V pipeline from {model!r}: {exc}", field="model",
                              context={"model": model, "exception_type": type(exc).__name__}) from exc
        if getattr(pipe.transformer.config, "image_dim", None) is None \
                or getattr(pipe.transformer.config, "pos_embed_seq_len", None) is None:
            raise ConfigError(f"{model!r} is not a first-last-frame Wan checkpoint (its transformer has no "
                              "image_dim/pos_embed_seq_len); use Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
                              field="model")
        pipe.set_progress_bar_config(disable=True)
        return spec.place(pipe)

    return load


# --------------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class RenderSpec:
    """One pipeline call: geometry, frames and the sampler settings."""

    width: int
    height: int
    num_frames: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    seed: int
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH


@dataclass
class StepProgress:
    """callback_on_step_end target: counts, logs and reports every denoising step; ``passes`` counts pipeline calls.

    ``report`` is the ToolContext's ``progress``: a job shows the step, and a cancel
    raised from it stops the pipeline at the next step.
    """

    log: SparkleLogger | None
    report: Callable[[int, int | None, str], None] | None = None
    steps_completed: int = 0
    passes: int = 0
    pass_name: str = ""
    started: float = 0.0

    def begin(self, name: str) -> None:
        self.pass_name, self.started = name, time.perf_counter()

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        self.steps_completed += 1
        if self.log is not None:
            self.log.info("wan.step", pass_name=self.pass_name, step=step + 1, of=pipe.num_timesteps,
                          elapsed_s=round(time.perf_counter() - self.started, 3))
        if self.report is not None:
            self.report(step + 1, int(pipe.num_timesteps), self.pass_name)
        return {}


def render_flf2v(pipe: Any, start: Image.Image, end: Image.Image, spec: RenderSpec, progress: StepProgress,
                 *, simulate_oom: SimulatedOom | None = None) -> np.ndarray:
    """One WanImageToVideoPipeline call; frames (num_frames, H, W, 3) float in [0, 1].

    Keyframes are resized to the generation size here (they already have its
    aspect) so the pipeline's own preprocessing never distorts them.  The noise
    comes from a CPU ``torch.Generator``: the same seed gives the same latents
    on any device.
    """
    import torch

    size = (spec.width, spec.height)
    start = start if start.size == size else start.resize(size, Image.Resampling.LANCZOS)
    end = end if end.size == size else end.resize(size, Image.Resampling.LANCZOS)
    if simulate_oom is not None and simulate_oom.fires(spec.width, spec.height, spec.num_frames):
        raise torch.OutOfMemoryError(f"CUDA out of memory (simulated by options.simulate_oom at "
                                     f"{spec.width}x{spec.height}x{spec.num_frames})")
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)
    output = pipe(image=start, last_image=end, prompt=spec.prompt, negative_prompt=spec.negative_prompt or None,
                  height=spec.height, width=spec.width, num_frames=spec.num_frames,
                  num_inference_steps=spec.steps, guidance_scale=spec.guidance_scale, generator=generator,
                  max_sequence_length=spec.max_sequence_length, output_type="np",
                  callback_on_step_end=progress)
    progress.passes += 1
    frames = np.asarray(output.frames[0], dtype=np.float32)
    if frames.shape != (spec.num_frames, spec.height, spec.width, 3):
        raise RuntimeError(f"pipeline returned {frames.shape}, expected "
                           f"{(spec.num_frames, spec.height, spec.width, 3)}")
    return frames


def render_chunked(pipe: Any, start: Image.Image, end: Image.Image, spec: RenderSpec, chunks: int,
                   temporal_factor: int, progress: StepProgress, *,
                   simulate_oom: SimulatedOom | None = None) -> np.ndarray:
    """The shot in ``chunks`` FLF2V renders between anchor frames of a short first pass (module docstring)."""
    anchor_frames = chunk_anchor_frames(chunks)
    progress.begin(f"anchors/{chunks}")
    anchors_clip = render_flf2v(pipe, start, end, replace(spec, num_frames=anchor_frames), progress,
                                simulate_oom=simulate_oom)
    stride = (anchor_frames - 1) // chunks
    anchors = [start] + [Image.fromarray(to_uint8(anchors_clip[i * stride])) for i in range(1, chunks)] + [end]
    chunk_frames = wan_frame_count(math.ceil((spec.num_frames - 1) / chunks) + 1, temporal_factor=temporal_factor,
                                   max_frames=None)
    parts: list[np.ndarray] = []
    for index in range(chunks):
        progress.begin(f"chunk {index + 1}/{chunks}")
        clip = render_flf2v(pipe, anchors[index], anchors[index + 1],
                            replace(spec, num_frames=chunk_frames, seed=spec.seed + index + 1), progress,
                            simulate_oom=simulate_oom)
        parts.append(clip if index == 0 else clip[1:])   # a chunk opens on the frame the previous one closed
    return np.concatenate(parts, axis=0)


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
    """Wan is text-conditioned: the shot's action and its camera move go into one prompt."""
    parts = [request.prompt.strip(), request.motion_prompt.strip()]
    if parts[1]:
        parts[1] = f"Camera: {parts[1]}"
    return ". ".join(p.rstrip(".") for p in parts if p)


# --------------------------------------------------------------------------- backend

class WanFlf2vBackend:
    """videos_wan on a GPU: Wan2.1 FLF2V between the start and end keyframes."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.options = WanOptions.from_profile(dict(profile.options))

    def load(self) -> None:
        # Fail at start-up, not on the first request, when the stack or ffmpeg is missing.
        # Weights load lazily under model_context (the device lock is only held while working).
        from sparkle_motion.gpu_utils import resolve_device
        from sparkle_motion.media import ffmpeg_exe

        ffmpeg_exe()
        resolve_device(self.options.device)
        import diffusers  # noqa: F401
        import transformers  # noqa: F401

    def invoke(self, request: VideosWanRequest, ctx: ToolContext) -> VideosWanResponse:
        opts = self.options
        t0 = time.perf_counter()
        keys = prepare_keyframes(request, ctx)
        start, end, width, height, num_frames = keys.start, keys.end, keys.width, keys.height, keys.num_frames
        start_manifest, end_manifest, resized = keys.start_manifest, keys.end_manifest, keys.resized
        warnings: list[str] = []
        similarity = keyframe_psnr(start, end)
        if similarity >= IDENTICAL_KEYFRAMES_PSNR_DB:
            message = (f"start and end keyframes are identical (PSNR {similarity:.1f} dB): Wan2.1 FLF2V renders a "
                       "near-still clip between them; give the shot distinct keyframes for motion")
            warnings.append(message)
            ctx.log.warning("wan.identical_keyframes", psnr_db=similarity, start=start_manifest.uri,
                            end=end_manifest.uri)
        seed = request.seed if request.seed is not None else default_seed(request)
        prompt = text_prompt(request)
        negative = request.negative_prompt or opts.negative_prompt
        steps = request.steps if request.steps is not None else opts.steps
        guidance = request.guidance_scale if request.guidance_scale is not None else opts.guidance
        t_inputs = time.perf_counter()

        progress = StepProgress(ctx.log, ctx.progress)
        events: list[OomEvent] = []
        with model_context(f"{BACKEND_NAME}:{model_fingerprint(self.profile.model)}",
                           make_loader(self.profile.model, opts), device=opts.device, dtype=opts.dtype,
                           keep_warm_s=opts.keep_warm_s, memory=opts.memory,
                           lock_timeout_s=opts.lock_timeout_s) as handle:
            pipe = handle.model
            temporal = int(pipe.vae_scale_factor_temporal)
            multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size[1])
            gen_w, gen_h = aligned_generation_size(width, height, multiple, opts.max_area)
            spec = RenderSpec(width=gen_w, height=gen_h,
                              num_frames=wan_frame_count(num_frames, temporal_factor=temporal,
                                                         max_frames=opts.max_model_frames),
                              prompt=prompt, negative_prompt=negative, steps=steps, guidance_scale=guidance,
                              seed=seed, max_sequence_length=opts.max_sequence_length)
            frames, spec, chunks = self._render_with_policy(pipe, handle, start, end, spec, temporal, multiple,
                                                            progress, events, ctx.log)
            telemetry = handle.telemetry   # the context adds the memory peaks as it exits
        t_rendered = time.perf_counter()

        generated_frames = frames.shape[0]
        mode = resolve_resample_mode(opts.temporal_resample, generated_frames, num_frames, temporal)
        clip = resize_frames(to_uint8(resample_frames(frames, num_frames, mode)), (width, height))
        out_path = ctx.staging_path(".mp4")
        writer = VideoWriter(out_path, width, height, request.fps, crf=opts.crf, preset=opts.preset)
        try:
            for frame in clip:
                writer.write(frame)
            encode_s = writer.close()
        except BaseException:
            writer.abort()
            raise
        if writer.frames_written != num_frames:  # an internal invariant; never expected
            raise RuntimeError(f"wrote {writer.frames_written} frames, planned {num_frames}")

        generation = WanGenerationInfo(
            model_key=telemetry["model_key"], device=telemetry["device"], dtype=telemetry["dtype"],
            load_s=telemetry["load_s"], inference_s=telemetry["inference_s"], reused=telemetry["reused"],
            load_count=telemetry["load_count"], applied_memory_options=telemetry["applied_memory_options"],
            peak_vram_mb=telemetry.get("peak_vram_mb"),
            process_peak_rss_mb=telemetry.get("process_peak_rss_mb"), steps=steps, steps_completed=progress.steps_completed,
            passes=progress.passes, guidance_scale=guidance, text_prompt=prompt, negative_prompt=negative,
            generated_width=spec.width, generated_height=spec.height, generated_frames=generated_frames,
            temporal_resample=mode, chunks=chunks, oom_policy=opts.oom_policy, oom_events=events,
        )
        duration_s = num_frames / request.fps
        timings = {
            "load_inputs_s": round(t_inputs - t0, 6),
            "load_s": generation.load_s,
            "inference_s": generation.inference_s,
            "render_wall_s": round(t_rendered - t_inputs, 6),
            "encode_wall_s": round(encode_s, 6),
        }
        params: dict[str, Any] = request.model_dump(exclude={"run_id", "stage", "seed"})
        params.update(width=width, height=height, num_frames=num_frames, steps=steps, guidance_scale=guidance,
                      crf=opts.crf, preset=opts.preset)
        manifest = ctx.put_output(
            request, "video", out_path, "video/mp4",
            {"seed": seed, "steps": steps, "params": params, "num_frames": num_frames, "fps": request.fps,
             "duration_s": duration_s, "model_id": self.profile.model,
             "load_s": generation.load_s, "inference_s": generation.inference_s, "device": generation.device,
             "dtype": generation.dtype, "peak_vram_mb": generation.peak_vram_mb,
             "process_peak_rss_mb": generation.process_peak_rss_mb,
             "applied_memory_options": generation.applied_memory_options,
             "generation": generation.model_dump(mode="json"),
             "inputs": {"start_frame_uri": start_manifest.uri, "end_frame_uri": end_manifest.uri},
             "keyframe_psnr_db": None if math.isinf(similarity) else round(similarity, 3),
             "resized_inputs": [r.model_dump() for r in resized], "warnings": warnings,
             "encoder": {"codec": "libx264", "pix_fmt": "yuv420p", "crf": opts.crf, "preset": opts.preset},
             "timings": timings},
            media={"duration_s": duration_s, "fps": request.fps, "width": width, "height": height},
            ext=".mp4", move=True,
        )
        ctx.log.info("wan.done", frames=num_frames, generated_frames=generated_frames, resample=mode,
                     size=f"{spec.width}x{spec.height}", steps=progress.steps_completed, oom_events=len(events))
        return VideosWanResponse(
            video=manifest, artifacts=[manifest], num_frames=num_frames, fps=request.fps, duration_s=duration_s,
            width=width, height=height, seed=seed, resized_inputs=resized, timings=timings, warnings=warnings,
            generation=generation,
        )

    def _render_with_policy(self, pipe: Any, handle: Any, start: Image.Image, end: Image.Image, spec: RenderSpec,
                            temporal: int, multiple: int, progress: StepProgress, events: list[OomEvent],
                            log: SparkleLogger) -> tuple[np.ndarray, RenderSpec, int]:
        """Render under ``oom_policy``; returns (frames, the spec that succeeded, chunk count or 1)."""
        opts = self.options
        chunks = 1
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                release_device_memory(handle.device)
            try:
                with handle.inference():
                    if chunks == 1:
                        progress.begin("full")
                        return render_flf2v(pipe, start, end, spec, progress,
                                            simulate_oom=opts.simulate_oom), spec, 1
                    return render_chunked(pipe, start, end, spec, chunks, temporal, progress,
                                          simulate_oom=opts.simulate_oom), spec, chunks
            except ModelOOMError as oom:
                event = OomEvent(attempt=attempt, action="fail", size=(spec.width, spec.height),
                                 num_frames=spec.num_frames, chunks=chunks, error=oom.message)
                next_size = shrunk_size(spec.width, spec.height, multiple) if opts.oom_policy == "shrink" else None
                next_chunks = next_chunk_count(chunks) if opts.oom_policy == "chunk" else None
                retry = attempt <= opts.oom_max_retries
                if retry and next_size is not None:
                    event = event.model_copy(update={"action": "shrink", "retry_size": next_size})
                    spec = replace(spec, width=next_size[0], height=next_size[1])
                elif retry and next_chunks is not None:
                    event = event.model_copy(update={"action": "chunk", "retry_chunks": next_chunks})
                    chunks = next_chunks
                events.append(event)
                log.warning("wan.oom", policy=opts.oom_policy, **event.model_dump(mode="json"))
                if event.action == "fail":
                    oom.context["oom_policy"] = opts.oom_policy
                    oom.context["oom_events"] = [e.model_dump(mode="json") for e in events]
                    raise
