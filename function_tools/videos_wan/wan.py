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
  and resample in time to the shot's exact frame count (``temporal_resample``,
  see ``diffusion.py``: the first and last frames stay the keyframes).

Sampling (upstream FLF2V)
-------------------------
Wan-Video/Wan2.1's ``generate.py`` samples the FLF2V task with UniPC at a
flow shift of 16, 50 steps and guidance 5.0, with a negative prompt that opens
with shot cuts: a hard cut between the two keyframes is FLF2V's typical failure.
``scheduler: unipc`` swaps the checkpoint's scheduler for
``UniPCMultistepScheduler`` (flow sigmas, flow prediction) at ``flow_shift``;
``scheduler: checkpoint`` keeps what the checkpoint ships.  The scheduler class
and shift the pipeline actually holds are recorded in ``generation``.

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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from function_tools.videos_wan.diffusion import (
    ENCODER_CRF,
    TEMPORAL_RESAMPLE_MODES,
    StepProgress,
    Rendered,
    aligned_generation_size,
    check_diffusion_stack,
    deliver_clip,
    generation_info,
    identical_keyframes_warning,
    model_fingerprint,
    model_frame_count,
    option_value,
    quiet_hub_progress,
    request_text,
    release_device_memory,
    shrunk_size,
    to_uint8,
)
from function_tools.videos_wan.keyframes import prepare_keyframes
from function_tools.videos_wan.models import (
    OomEvent,
    VideosWanRequest,
    VideosWanResponse,
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
from sparkle_motion.services.context import ToolContext

BACKEND_NAME = "wan2.1-flf2v"
#: The memory-plan table of Wan2.1 FLF2V 14B (sparkle_motion.gpu.memory_plans): under 24 GB it names ltx-video.
PLAN_FAMILY = "wan-flf2v-14b"
OOM_POLICIES = ("shrink", "chunk", "fail")
SCHEDULERS = ("unipc", "checkpoint")
# Wan2.1's VAE: 4 frames per latent frame after the first; 8x8 pixels per latent cell.
DEFAULT_TEMPORAL_FACTOR = 4
DEFAULT_MAX_MODEL_FRAMES = 81          # Wan2.1 FLF2V was trained on 81-frame clips
DEFAULT_MAX_AREA = 1280 * 720          # the 720P checkpoint's native area
# Upstream FLF2V sampling (Wan-Video/Wan2.1 generate.py and wan/configs): UniPC, shift 16, 50 steps, guidance 5.
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 5.0
DEFAULT_FLOW_SHIFT = 16.0
# Upstream's FLF2V negative prompt opens with shot cuts (then camera shake) ahead of the shared quality list.
DEFAULT_NEGATIVE_PROMPT = (
    "shot cut, scene change, transition, camera shake, garish colors, overexposed, static, blurry details, "
    "subtitles, style, artwork, painting, still picture, grey cast, worst quality, low quality, JPEG artifacts, "
    "ugly, mutilated, extra fingers, badly drawn hands, badly drawn face, deformed, disfigured, malformed limbs, "
    "fused fingers, motionless frame, cluttered background, three legs, crowded background, walking backwards")
DEFAULT_KEEP_WARM_S = 600.0
DEFAULT_LOCK_TIMEOUT_S = 60.0
DEFAULT_OOM_MAX_RETRIES = 2
DEFAULT_MAX_SEQUENCE_LENGTH = 512
CHUNK_COUNTS = (2, 4, 8)


# --------------------------------------------------------------------------- pure helpers

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
    scheduler: str
    flow_shift: float
    crf: int
    preset: str
    memory: MemoryOptions
    simulate_oom: SimulatedOom | None

    @classmethod
    def from_profile(cls, options: dict[str, Any]) -> WanOptions:
        known = {"steps", "guidance", "dtype", "vae_dtype", "device", "keep_warm_s", "lock_timeout_s", "oom_policy",
                 "oom_max_retries", "max_area", "max_model_frames", "temporal_resample", "max_sequence_length",
                 "negative_prompt", "scheduler", "flow_shift", "crf", "preset", "memory", "simulate_oom"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown videos_wan options {unknown}; known: {sorted(known)}", field="options")
        raw_memory = options.get("memory") or {}
        if raw_memory == "auto":   # the plan of the card's size (sparkle_motion.gpu.memory_plans)
            raw_memory = {"plan": "auto"}
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
            steps=option_value(options, "steps", int, DEFAULT_STEPS, check=lambda v: 1 <= v <= 200, rule="1..200"),
            guidance=option_value(options, "guidance", float, DEFAULT_GUIDANCE, check=lambda v: 0 <= v <= 30,
                             rule="0..30"),
            dtype=options.get("dtype"),
            vae_dtype=str(options.get("vae_dtype", "float32")),
            device=str(options.get("device", "auto")),
            keep_warm_s=option_value(options, "keep_warm_s", float, DEFAULT_KEEP_WARM_S, check=lambda v: v >= 0,
                                rule=">= 0"),
            lock_timeout_s=option_value(options, "lock_timeout_s", float, DEFAULT_LOCK_TIMEOUT_S,
                                   check=lambda v: v >= 0, rule=">= 0"),
            oom_policy=option_value(options, "oom_policy", str, "shrink", check=lambda v: v in OOM_POLICIES,
                               rule=" | ".join(OOM_POLICIES)),
            oom_max_retries=option_value(options, "oom_max_retries", int, DEFAULT_OOM_MAX_RETRIES,
                                    check=lambda v: 0 <= v <= len(CHUNK_COUNTS), rule=f"0..{len(CHUNK_COUNTS)}"),
            max_area=option_value(options, "max_area", int, DEFAULT_MAX_AREA, check=lambda v: v >= 16 * 16,
                             rule=">= 256"),
            max_model_frames=option_value(options, "max_model_frames", int, DEFAULT_MAX_MODEL_FRAMES,
                                     check=lambda v: v >= 5, rule=">= 5"),
            temporal_resample=option_value(options, "temporal_resample", str, "auto",
                                      check=lambda v: v in TEMPORAL_RESAMPLE_MODES,
                                      rule=" | ".join(TEMPORAL_RESAMPLE_MODES)),
            max_sequence_length=option_value(options, "max_sequence_length", int, DEFAULT_MAX_SEQUENCE_LENGTH,
                                        check=lambda v: 1 <= v <= 512, rule="1..512"),
            negative_prompt=str(options.get("negative_prompt", DEFAULT_NEGATIVE_PROMPT)),
            scheduler=option_value(options, "scheduler", str, "unipc", check=lambda v: v in SCHEDULERS,
                                   rule=" | ".join(SCHEDULERS)),
            flow_shift=option_value(options, "flow_shift", float, DEFAULT_FLOW_SHIFT, check=lambda v: 0 < v <= 100,
                                    rule="0 < shift <= 100"),
            crf=option_value(options, "crf", int, ENCODER_CRF, check=lambda v: 0 <= v <= 51, rule="0..51"),
            preset=str(options.get("preset", "veryfast")),
            memory=memory,
            simulate_oom=SimulatedOom.parse(options.get("simulate_oom")),
        )


# --------------------------------------------------------------------------- loading

def make_loader(model: str, options: WanOptions) -> Callable[[LoadSpec], Any]:
    """The model_context loader: VAE and CLIP in ``vae_dtype`` (fp32 keeps the decode clean), the rest in dtype."""

    def load(spec: LoadSpec) -> Any:
        import torch
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel
        from transformers import CLIPVisionModel

        from sparkle_motion.gpu_utils import torch_dtype_for

        if options.simulate_oom is not None and options.simulate_oom.stage == "load":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by options.simulate_oom at load)")
        quiet_hub_progress()
        vae_dtype = torch_dtype_for(options.vae_dtype, spec.device)
        try:
            vae = AutoencoderKLWan.from_pretrained(model, subfolder="vae", dtype=vae_dtype)
            image_encoder = CLIPVisionModel.from_pretrained(model, subfolder="image_encoder", dtype=vae_dtype)
            # A resident plan streams the 32.8 GB transformer straight to the device (no host copy).
            streamed = spec.pretrained_kwargs()
            components = {"transformer": WanTransformer3DModel.from_pretrained(
                model, subfolder="transformer", dtype=spec.torch_dtype, **streamed)} if streamed else {}
            pipe = WanImageToVideoPipeline.from_pretrained(model, vae=vae, image_encoder=image_encoder,
                                                           dtype=spec.torch_dtype, **components)
        except (OSError, ValueError) as exc:  # missing dir / not on the hub / offline without a cache
            raise ConfigError(f"cannot load the Wan FLF2V pipeline from {model!r}: {exc}", field="model",
                              context={"model": model, "exception_type": type(exc).__name__}) from exc
        if getattr(pipe.transformer.config, "image_dim", None) is None \
                or getattr(pipe.transformer.config, "pos_embed_seq_len", None) is None:
            raise ConfigError(f"{model!r} is not a first-last-frame Wan checkpoint (its transformer has no "
                              "image_dim/pos_embed_seq_len); use Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
                              field="model")
        if options.scheduler == "unipc":
            pipe.scheduler = upstream_scheduler(pipe.scheduler.config, options.flow_shift)
        pipe.set_progress_bar_config(disable=True)
        return spec.place(pipe)

    return load


def upstream_scheduler(base_config: Any, flow_shift: float) -> Any:
    """UniPC on flow-matching sigmas at ``flow_shift``: upstream's FLF2V sampler, whatever the checkpoint ships."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config(base_config, flow_shift=flow_shift, use_flow_sigmas=True,
                                               prediction_type="flow_prediction")


def sampler_record(pipe: Any) -> dict[str, Any]:
    """The scheduler the pipeline holds right now (class and shift), for the clip's metadata."""
    config = pipe.scheduler.config
    shift = config.get("flow_shift") if config.get("use_flow_sigmas") else config.get("shift")
    return {"scheduler": type(pipe.scheduler).__name__, "flow_shift": None if shift is None else float(shift)}


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
    chunk_frames = model_frame_count(math.ceil((spec.num_frames - 1) / chunks) + 1, temporal_factor=temporal_factor,
                                   max_frames=None)
    parts: list[np.ndarray] = []
    for index in range(chunks):
        progress.begin(f"chunk {index + 1}/{chunks}")
        clip = render_flf2v(pipe, anchors[index], anchors[index + 1],
                            replace(spec, num_frames=chunk_frames, seed=spec.seed + index + 1), progress,
                            simulate_oom=simulate_oom)
        parts.append(clip if index == 0 else clip[1:])   # a chunk opens on the frame the previous one closed
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- backend

class WanFlf2vBackend:
    """videos_wan on a GPU: Wan2.1 FLF2V between the start and end keyframes."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.options = WanOptions.from_profile(dict(profile.options))

    def load(self) -> None:
        check_diffusion_stack(self.options.device)
        from sparkle_motion.gpu_utils import resolve_device, resolve_plan

        # A card too small for any plan (< 24 GB) is refused here, naming the ltx-video backend.
        resolve_plan(PLAN_FAMILY, self.options.memory, resolve_device(self.options.device))

    def invoke(self, request: VideosWanRequest, ctx: ToolContext) -> VideosWanResponse:
        opts = self.options
        t0 = time.perf_counter()
        keys = prepare_keyframes(request, ctx)
        start, end, width, height, num_frames = keys.start, keys.end, keys.width, keys.height, keys.num_frames
        similarity, warnings = identical_keyframes_warning(start, end, ctx, "Wan2.1 FLF2V")
        seed, prompt, negative = request_text(request, opts.negative_prompt)
        steps = request.steps if request.steps is not None else opts.steps
        guidance = request.guidance_scale if request.guidance_scale is not None else opts.guidance
        t_inputs = time.perf_counter()

        progress = StepProgress.for_context(ctx, "wan.step")
        events: list[OomEvent] = []
        with model_context(f"{BACKEND_NAME}:{model_fingerprint(self.profile.model)}",
                           make_loader(self.profile.model, opts), device=opts.device, dtype=opts.dtype,
                           keep_warm_s=opts.keep_warm_s, memory=opts.memory,
                           lock_timeout_s=opts.lock_timeout_s, plan_family=PLAN_FAMILY,
                           tool="videos_wan") as handle:
            pipe = handle.model
            temporal = int(pipe.vae_scale_factor_temporal)
            multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size[1])
            gen_w, gen_h = aligned_generation_size(width, height, multiple, opts.max_area)
            spec = RenderSpec(width=gen_w, height=gen_h,
                              num_frames=model_frame_count(num_frames, temporal_factor=temporal,
                                                           max_frames=opts.max_model_frames),
                              prompt=prompt, negative_prompt=negative, steps=steps, guidance_scale=guidance,
                              seed=seed, max_sequence_length=opts.max_sequence_length)
            frames, spec, chunks = self._render_with_policy(pipe, handle, start, end, spec, temporal, multiple,
                                                            progress, events, ctx.log)
            sampler = sampler_record(pipe)   # read off the pipeline that just ran, not the options
            telemetry = handle.telemetry   # the context adds the memory peaks as it exits
        t_rendered = time.perf_counter()

        generation = generation_info(
            telemetry,
            steps=steps, steps_completed=progress.steps_completed, passes=progress.passes, guidance_scale=guidance,
            text_prompt=prompt, negative_prompt=negative, scheduler=sampler["scheduler"],
            flow_shift=sampler["flow_shift"], generated_width=spec.width, generated_height=spec.height,
            generated_frames=frames.shape[0], chunks=chunks, oom_policy=opts.oom_policy,
            oom_events=events,
        )
        sampler.update(steps=steps, guidance_scale=guidance, negative_prompt=negative)
        rendered = Rendered(frames=frames, temporal_factor=temporal, resample=opts.temporal_resample,
                            generation=generation, seed=seed, keyframe_psnr_db=similarity, warnings=warnings,
                            sampler=sampler, started=t0, inputs_ready=t_inputs, rendered=t_rendered)
        return deliver_clip(ctx, request, keys, rendered, model_id=self.profile.model, crf=opts.crf,
                            preset=opts.preset)

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
