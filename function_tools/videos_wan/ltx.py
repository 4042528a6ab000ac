"""The ``ltx-video`` backend: LTX-Video keyframe interpolation through diffusers, for 24 GB cards.

Wan2.1 FLF2V (``wan2.1-flf2v``) is a 14B transformer with an 11 GB text
encoder: it does not run on a 24 GB card.  LTX-Video renders the same request
(a clip between a start and an end keyframe) with ``LTXConditionPipeline``:

* Conditioning: two ``LTXVideoCondition`` items, the start keyframe at frame 0
  (its latent replaces the first latent frame) and the end keyframe at the last
  generated frame (its latent is appended as extra tokens placed at that frame's
  position), each at ``keyframe_strength``.
* Geometry: the VAE compresses 32x32 pixels and 8 frames per latent cell, so the
  model renders ``8k+1`` frames (nearest the shot, at most ``max_model_frames``)
  at sides that are multiples of 32 (within ``max_area``).  The clip is then
  resampled to the shot's exact frame count and resized to the requested size
  by the shared ``diffusion.deliver_clip``, exactly as the Wan backend does.
* Sampling: the distilled checkpoints (``Lightricks/LTX-Video-0.9.8-13B-distilled``
  in configs/profiles/gpu-24gb.yaml) are guidance- and timestep-distilled:
  ``guidance: 1.0`` and the fixed ``timesteps`` list from the diffusers docs;
  ``decode_timestep`` / ``decode_noise_scale`` feed the timestep-aware VAE.
  A non-distilled checkpoint takes ``steps`` and ``guidance`` instead.
* Progress and cancel: ``callback_on_step_end`` checks the context's cancel
  token and reports ``step/total`` every step (``diffusion.StepProgress``).

Memory: ``memory: auto`` picks the plan of the card's size from the ``ltx-video``
table of :mod:`sparkle_motion.gpu.memory_plans` (48 GB+ resident with T5 moved in
for the encode only, 32-48 GB model offload, 12-32 GB group offload with fp8
layerwise casting, under 12 GB refused at start-up naming the card's size; the
plan lands in the clip's ``memory_plan``).  Without a plan the loader applies the
profile's ``memory`` (``gpu_utils.MemoryOptions``: model CPU offload, VAE
tiling/slicing) and, with ``fp8_storage: true``, stores the transformer's weights
in float8 and computes in ``dtype`` (``enable_layerwise_casting``): the 13B
transformer then holds ~13 GB instead of ~26 GB.  A plan that casts the
transformer itself (``group_offload_fp8``) is not cast twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from function_tools.videos_wan.diffusion import (
    ENCODER_CRF,
    TEMPORAL_RESAMPLE_MODES,
    Rendered,
    StepProgress,
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
)
from function_tools.videos_wan.keyframes import prepare_keyframes
from function_tools.videos_wan.models import VideosWanRequest, VideosWanResponse
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import ConfigError
from sparkle_motion.gpu_utils import LoadSpec, MemoryOptions, model_context, resolve_dtype
from sparkle_motion.services.context import ToolContext

BACKEND_NAME = "ltx-video"
LTX_SIZE_MULTIPLE = 32                 # LTXConditionPipeline.check_inputs: sides divisible by 32
DEFAULT_MAX_AREA = 768 * 512           # the resolution LTX-Video is trained and documented at
DEFAULT_MAX_MODEL_FRAMES = 161         # 8k+1; the distilled 0.9.8 checkpoints go longer
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 3.0
DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted, shot cut, scene change"
DEFAULT_MAX_SEQUENCE_LENGTH = 128
DEFAULT_KEEP_WARM_S = 600.0
DEFAULT_LOCK_TIMEOUT_S = 60.0
#: The memory-plan table of LTX-Video (sparkle_motion.gpu.memory_plans): under 12 GB it refuses the card.
PLAN_FAMILY = "ltx-video"


@dataclass(frozen=True)
class LtxOptions:
    steps: int
    timesteps: tuple[float, ...] | None
    guidance: float
    guidance_rescale: float
    decode_timestep: float
    decode_noise_scale: float
    image_cond_noise_scale: float
    keyframe_strength: float
    dtype: str | None
    device: str
    keep_warm_s: float
    lock_timeout_s: float
    max_area: int
    max_model_frames: int
    temporal_resample: str
    max_sequence_length: int
    negative_prompt: str
    crf: int
    preset: str
    fp8_storage: bool
    memory: MemoryOptions

    @classmethod
    def from_profile(cls, options: dict[str, Any]) -> LtxOptions:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown videos_wan options for ltx-video {unknown}; known: {sorted(known)}",
                              field="options")
        try:
            resolve_dtype(options.get("dtype"), "cpu")
        except ConfigError as exc:
            raise ConfigError(exc.message, field="options.dtype") from None
        raw_memory = options.get("memory") or {}
        if raw_memory == "auto":   # the plan of the card's size (sparkle_motion.gpu.memory_plans)
            raw_memory = {"plan": "auto"}
        if not isinstance(raw_memory, dict):
            raise ConfigError("options.memory must be a mapping", field="options.memory")
        timesteps = options.get("timesteps")
        if timesteps is not None:
            if not isinstance(timesteps, list) or not timesteps or not all(
                    isinstance(t, (int, float)) and 0 <= t <= 1000 for t in timesteps) \
                    or list(timesteps) != sorted(timesteps, reverse=True):
                raise ConfigError("options.timesteps must be a decreasing list of numbers in 0..1000 (or null)",
                                  field="options.timesteps")
            timesteps = tuple(float(t) for t in timesteps)
        fp8 = options.get("fp8_storage", False)
        if not isinstance(fp8, bool):
            raise ConfigError("options.fp8_storage must be true or false", field="options.fp8_storage")

        def unit(name: str, default: float) -> float:
            return option_value(options, name, float, default, check=lambda v: 0 <= v <= 1, rule="0..1")

        return cls(
            steps=option_value(options, "steps", int, DEFAULT_STEPS, check=lambda v: 1 <= v <= 200, rule="1..200"),
            timesteps=timesteps,
            guidance=option_value(options, "guidance", float, DEFAULT_GUIDANCE, check=lambda v: 0 <= v <= 30,
                                  rule="0..30"),
            guidance_rescale=unit("guidance_rescale", 0.0),
            decode_timestep=unit("decode_timestep", 0.05),
            decode_noise_scale=unit("decode_noise_scale", 0.025),
            image_cond_noise_scale=unit("image_cond_noise_scale", 0.0),
            keyframe_strength=unit("keyframe_strength", 1.0),
            dtype=options.get("dtype"),
            device=str(options.get("device", "auto")),
            keep_warm_s=option_value(options, "keep_warm_s", float, DEFAULT_KEEP_WARM_S, check=lambda v: v >= 0,
                                     rule=">= 0"),
            lock_timeout_s=option_value(options, "lock_timeout_s", float, DEFAULT_LOCK_TIMEOUT_S,
                                        check=lambda v: v >= 0, rule=">= 0"),
            max_area=option_value(options, "max_area", int, DEFAULT_MAX_AREA,
                                  check=lambda v: v >= LTX_SIZE_MULTIPLE ** 2, rule=">= 1024"),
            max_model_frames=option_value(options, "max_model_frames", int, DEFAULT_MAX_MODEL_FRAMES,
                                          check=lambda v: v >= 9, rule=">= 9"),
            temporal_resample=option_value(options, "temporal_resample", str, "auto",
                                           check=lambda v: v in TEMPORAL_RESAMPLE_MODES,
                                           rule=" | ".join(TEMPORAL_RESAMPLE_MODES)),
            max_sequence_length=option_value(options, "max_sequence_length", int, DEFAULT_MAX_SEQUENCE_LENGTH,
                                             check=lambda v: 1 <= v <= 512, rule="1..512"),
            negative_prompt=str(options.get("negative_prompt", DEFAULT_NEGATIVE_PROMPT)),
            crf=option_value(options, "crf", int, ENCODER_CRF, check=lambda v: 0 <= v <= 51, rule="0..51"),
            preset=str(options.get("preset", "veryfast")),
            fp8_storage=fp8,
            memory=MemoryOptions.from_options({"memory": {"vae_tiling": True, **raw_memory}}),
        )


# --------------------------------------------------------------------------- loading

def _apply_storage_dtype(pipe: Any, options: LtxOptions, spec: LoadSpec) -> None:
    """fp8 weight storage for the transformer (compute stays in ``dtype``) unless the memory plan casts it."""
    if not options.fp8_storage or (spec.plan is not None and spec.plan.name == "group_offload_fp8"):
        return
    import torch

    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=spec.torch_dtype)
    spec.record("layerwise_casting_fp8")


def make_loader(model: str, options: LtxOptions) -> Callable[[LoadSpec], Any]:
    """The model_context loader: a diffusers-format LTX-Video repo or directory as ``LTXConditionPipeline``."""

    def load(spec: LoadSpec) -> Any:
        from diffusers import LTXConditionPipeline

        quiet_hub_progress()
        try:
            # A resident plan on CUDA streams the transformer straight to the device (no host copy).
            streamed = spec.pretrained_kwargs()
            if streamed:
                from diffusers import LTXVideoTransformer3DModel

                streamed = {"transformer": LTXVideoTransformer3DModel.from_pretrained(
                    model, subfolder="transformer", dtype=spec.torch_dtype, **streamed)}
            pipe = LTXConditionPipeline.from_pretrained(model, dtype=spec.torch_dtype, **streamed)
        except (OSError, ValueError) as exc:  # missing dir / not on the hub / offline without a cache
            raise ConfigError(f"cannot load an LTX-Video pipeline from {model!r}: {exc}", field="model",
                              context={"model": model, "exception_type": type(exc).__name__}) from exc
        _apply_storage_dtype(pipe, options, spec)
        pipe.set_progress_bar_config(disable=True)
        return spec.place(pipe)

    return load


# --------------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class LtxRenderSpec:
    """One LTXConditionPipeline call."""

    width: int
    height: int
    num_frames: int
    frame_rate: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    seed: int


def keyframe_conditions(pipe: Any, start: Image.Image, end: Image.Image, spec: LtxRenderSpec,
                        strength: float) -> list[Any]:
    """The start keyframe at frame 0 and the end keyframe at the last generated frame."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    size = (spec.width, spec.height)
    start = start if start.size == size else start.resize(size, Image.Resampling.LANCZOS)
    end = end if end.size == size else end.resize(size, Image.Resampling.LANCZOS)
    return [LTXVideoCondition(image=start, frame_index=0, strength=strength),
            LTXVideoCondition(image=end, frame_index=spec.num_frames - 1, strength=strength)]


def render_ltx(pipe: Any, start: Image.Image, end: Image.Image, spec: LtxRenderSpec, options: LtxOptions,
               progress: StepProgress) -> np.ndarray:
    """One pipeline call; frames (num_frames, H, W, 3) float in [0, 1].  Noise from a CPU generator."""
    import torch

    sampling: dict[str, Any] = ({"timesteps": list(options.timesteps)} if options.timesteps
                                else {"num_inference_steps": spec.steps})
    output = pipe(conditions=keyframe_conditions(pipe, start, end, spec, options.keyframe_strength),
                  prompt=spec.prompt, negative_prompt=spec.negative_prompt or None, height=spec.height,
                  width=spec.width, num_frames=spec.num_frames, frame_rate=spec.frame_rate,
                  guidance_scale=spec.guidance_scale, guidance_rescale=options.guidance_rescale,
                  image_cond_noise_scale=options.image_cond_noise_scale, decode_timestep=options.decode_timestep,
                  decode_noise_scale=options.decode_noise_scale,
                  generator=torch.Generator(device="cpu").manual_seed(spec.seed),
                  max_sequence_length=options.max_sequence_length, output_type="np",
                  callback_on_step_end=progress, **sampling)
    progress.passes += 1
    frames = np.asarray(output.frames[0], dtype=np.float32)
    if frames.shape != (spec.num_frames, spec.height, spec.width, 3):
        raise RuntimeError(f"pipeline returned {frames.shape}, expected "
                           f"{(spec.num_frames, spec.height, spec.width, 3)}")
    return frames


# --------------------------------------------------------------------------- backend

class LtxVideoBackend:
    """videos_wan on a 24 GB GPU: LTX-Video conditioned on the start and end keyframes."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.options = LtxOptions.from_profile(dict(profile.options))

    def load(self) -> None:
        check_diffusion_stack(self.options.device)
        from sparkle_motion.gpu_utils import resolve_device, resolve_plan

        # A card too small for any plan (< 12 GB) is refused here, naming its size.
        resolve_plan(PLAN_FAMILY, self.options.memory, resolve_device(self.options.device))

    def invoke(self, request: VideosWanRequest, ctx: ToolContext) -> VideosWanResponse:
        opts = self.options
        t0 = time.perf_counter()
        keys = prepare_keyframes(request, ctx)
        similarity, warnings = identical_keyframes_warning(keys.start, keys.end, ctx, "LTX-Video")
        seed, prompt, negative = request_text(request, opts.negative_prompt)
        # Distilled checkpoints run a fixed timestep list: its length is the step count.
        steps = len(opts.timesteps) if opts.timesteps else (request.steps or opts.steps)
        guidance = request.guidance_scale if request.guidance_scale is not None else opts.guidance
        t_inputs = time.perf_counter()

        progress = StepProgress.for_context(ctx, "ltx.step")
        with model_context(f"{BACKEND_NAME}:{model_fingerprint(self.profile.model)}",
                           make_loader(self.profile.model, opts), device=opts.device, dtype=opts.dtype,
                           keep_warm_s=opts.keep_warm_s, memory=opts.memory,
                           lock_timeout_s=opts.lock_timeout_s, plan_family=PLAN_FAMILY,
                           tool="videos_wan") as handle:
            pipe = handle.model
            temporal = int(pipe.vae_temporal_compression_ratio)
            multiple = max(LTX_SIZE_MULTIPLE, int(pipe.vae_spatial_compression_ratio))
            gen_w, gen_h = aligned_generation_size(keys.width, keys.height, multiple, opts.max_area)
            spec = LtxRenderSpec(width=gen_w, height=gen_h,
                                 num_frames=model_frame_count(keys.num_frames, temporal_factor=temporal,
                                                              max_frames=opts.max_model_frames),
                                 frame_rate=max(1, round(request.fps)), prompt=prompt, negative_prompt=negative,
                                 steps=steps, guidance_scale=guidance, seed=seed)
            progress.begin("full")
            with handle.inference():
                frames = render_ltx(pipe, keys.start, keys.end, spec, opts, progress)
            scheduler = type(pipe.scheduler).__name__
            telemetry = handle.telemetry
        t_rendered = time.perf_counter()

        generation = generation_info(
            telemetry,
            steps=steps, steps_completed=progress.steps_completed, passes=progress.passes, guidance_scale=guidance,
            text_prompt=prompt, negative_prompt=negative, scheduler=scheduler,
            conditioning_frames=[0, spec.num_frames - 1], generated_width=gen_w, generated_height=gen_h,
            generated_frames=frames.shape[0], oom_policy="fail",
        )
        sampler = {"scheduler": scheduler, "steps": steps, "timesteps": list(opts.timesteps or []),
                   "guidance_scale": guidance, "guidance_rescale": opts.guidance_rescale,
                   "decode_timestep": opts.decode_timestep, "decode_noise_scale": opts.decode_noise_scale,
                   "image_cond_noise_scale": opts.image_cond_noise_scale,
                   "keyframe_strength": opts.keyframe_strength, "negative_prompt": negative}
        rendered = Rendered(frames=frames, temporal_factor=temporal, resample=opts.temporal_resample,
                            generation=generation, seed=seed, keyframe_psnr_db=similarity, warnings=warnings,
                            sampler=sampler, started=t0, inputs_ready=t_inputs, rendered=t_rendered)
        return deliver_clip(ctx, request, keys, rendered, model_id=self.profile.model, crf=opts.crf,
                            preset=opts.preset)
