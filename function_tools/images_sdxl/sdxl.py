"""The ``sdxl`` backend: Stable Diffusion XL keyframes through diffusers.

``StableDiffusionXLPipeline.from_pretrained(profile.model)`` (a hub id or a
local directory) in fp16 on CUDA / fp32 on CPU, the fp16 weight variant when
the checkpoint has one, safetensors only.  Optional refiner
(``options.refiner_model``): its UNet is loaded and an
``StableDiffusionXLImg2ImgPipeline`` is built with ``from_pipe`` so it shares
the base's VAE, second text encoder and tokenizer; the base denoises up to
``denoising_end`` and hands latents to the refiner from ``denoising_start``.

Everything runs under :func:`sparkle_motion.gpu_utils.model_context`: the
device lock, the warm cache, typed OOM and the telemetry that lands in each
PNG's artifact metadata (``gpu``).  Each image has its own seeded CPU
``torch.Generator`` (``request.seed_for(i)``), so image i of a batch is
reproducible on its own and across GPU models.

Profile options (configs/profiles/gpu.yaml): steps, guidance_scale, scheduler,
dtype, device, variant, keep_warm_s, lock_timeout_s, memory (MemoryOptions),
refiner_model, refiner_high_noise_frac, aesthetic_score,
negative_aesthetic_score, original_size / crops_coords_top_left
(micro-conditioning; default: the output size and no crop), the IP-Adapter's
``ip_adapter_*`` (``ip_adapter.py``: keyframes conditioned on portraits) and
``simulate_oom: load|inference`` — a test hook that raises torch's CUDA OOM
error at that stage so the typed-error path can be exercised without a GPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from function_tools.images_sdxl import ip_adapter
from function_tools.images_sdxl.models import GeneratedImage, ImagesSdxlRequest, ImagesSdxlResponse
from function_tools.images_sdxl.output import encode_png, fit_to_frame, output_size
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import BackendError, ConfigError, InvalidInputError
from sparkle_motion.media.geometry import sdxl_bucket
from sparkle_motion.gpu_utils import (SIMULATE_OOM_STAGES, LoadSpec, MemoryOptions, model_context,
                                      raise_simulated_oom, resolve_device, resolve_plan)
from sparkle_motion.services.context import ToolContext

DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
DEFAULT_REFINER_FRAC = 0.8

#: Request scheduler names (the diffusers class name without "Scheduler") → (class, config overrides).
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "EulerDiscrete": ("EulerDiscreteScheduler", {}),
    "EulerAncestralDiscrete": ("EulerAncestralDiscreteScheduler", {}),
    "DPMSolverMultistep": ("DPMSolverMultistepScheduler", {}),
    "DPMSolverMultistepKarras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPMSolverSDE": ("DPMSolverSinglestepScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPCMultistep": ("UniPCMultistepScheduler", {}),
    "HeunDiscrete": ("HeunDiscreteScheduler", {}),
    "LMSDiscrete": ("LMSDiscreteScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
}

#: The memory-plan table of SDXL (sparkle_motion.gpu.memory_plans).
PLAN_FAMILY = "sdxl"


def scheduler_spec(name: str) -> tuple[str, dict[str, Any]]:
    """Map a request/profile scheduler name to its diffusers class; unknown names are a 422 on ``scheduler``."""
    key = name.removesuffix("Scheduler")
    if key not in SCHEDULERS:
        raise InvalidInputError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}", field="scheduler")
    return SCHEDULERS[key]


def _step_reporter(ctx: ToolContext) -> Callable[..., dict[str, Any]]:
    """A diffusers ``callback_on_step_end``: reports the step to ``ctx.progress`` (a job's progress), which
    also stops the pipeline at the next step once the call is cancelled."""

    def on_step_end(pipe: Any, step: int, _timestep: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
        total = getattr(pipe, "num_timesteps", None)
        ctx.progress(step + 1, int(total) if total is not None else None, type(pipe).__name__)
        return {}

    return on_step_end


@dataclass
class SdxlModels:
    """What the loader puts in the warm cache: the base pipeline and, when configured, the refiner."""

    base: Any
    refiner: Any | None
    variant: str | None
    default_scheduler_config: Any


def _has_fp16_variant(model: str) -> bool | None:
    """True/False for a local checkpoint; None (unknown) for a hub id."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    return any(path.glob("unet/*.fp16.safetensors"))


class SdxlBackend:
    """images_sdxl on a GPU (or, with tiny weights, on CPU): real SDXL diffusion."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        options = dict(profile.options)
        self.options = options
        self.memory = MemoryOptions.from_options(options)
        self.device = str(options.get("device", "auto"))
        self.dtype = options.get("dtype")
        self.keep_warm_s = float(options.get("keep_warm_s", 300.0))
        self.lock_timeout_s = float(options.get("lock_timeout_s", 0.0))
        self.refiner_model = options.get("refiner_model")
        self.native_buckets = bool(options.get("native_buckets", True))
        self.ip_adapter = ip_adapter.IpAdapterOptions.from_options(options)
        self.simulate_oom = options.get("simulate_oom")
        if self.simulate_oom is not None and self.simulate_oom not in SIMULATE_OOM_STAGES:
            raise ConfigError(f"options.simulate_oom must be one of {SIMULATE_OOM_STAGES}",
                              field="options.simulate_oom")
        default_scheduler = options.get("scheduler")
        if default_scheduler is not None:
            try:
                scheduler_spec(str(default_scheduler))
            except InvalidInputError as exc:
                raise ConfigError(exc.message, field="options.scheduler") from None

    # ------------------------------------------------------------------ loading

    def _model_key(self, with_refiner: bool) -> str:
        return (f"sdxl:{self.profile.model}" + (f"+refiner:{self.refiner_model}" if with_refiner else "")
                + (self.ip_adapter.key if self.ip_adapter else ""))

    def _loader(self, with_refiner: bool):
        def load(spec: LoadSpec) -> SdxlModels:
            if self.simulate_oom == "load":
                raise_simulated_oom("load")
            return self._load_pipelines(spec, with_refiner)

        return load

    def _load_pipelines(self, spec: LoadSpec, with_refiner: bool) -> SdxlModels:
        from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

        variant = self._variant(spec)
        kwargs: dict[str, Any] = {"dtype": spec.torch_dtype, "use_safetensors": True}
        try:
            try:
                base = StableDiffusionXLPipeline.from_pretrained(self.profile.model, variant=variant, **kwargs)
            except (OSError, ValueError) as exc:
                # A hub checkpoint without fp16 files: fall back to the full-precision files, cast on load.
                if variant is None or "variant" not in str(exc).lower():
                    raise
                variant = None
                base = StableDiffusionXLPipeline.from_pretrained(self.profile.model, **kwargs)
            refiner = None
            if with_refiner:
                refiner_variant = variant if _has_fp16_variant(str(self.refiner_model)) is not False else None
                refiner_unet = UNet2DConditionModel.from_pretrained(self.refiner_model, subfolder="unet",
                                                                    variant=refiner_variant, **kwargs)
                refiner_config = StableDiffusionXLImg2ImgPipeline.load_config(self.refiner_model)
                # Shares VAE, text encoder 2 and tokenizer 2 with the base (no second copy in VRAM);
                # the refiner conditions on encoder 2 only, hence no text_encoder/tokenizer.
                refiner = StableDiffusionXLImg2ImgPipeline.from_pipe(
                    base, unet=refiner_unet, text_encoder=None, tokenizer=None, dtype=spec.torch_dtype,
                    requires_aesthetics_score=bool(refiner_config.get("requires_aesthetics_score", True)),
                    force_zeros_for_empty_prompt=bool(refiner_config.get("force_zeros_for_empty_prompt", False)),
                )
        except OSError as exc:
            raise ConfigError(f"cannot load SDXL weights: {exc}", field="model",
                              context={"model": self.profile.model, "refiner_model": self.refiner_model}) from exc
        base.set_progress_bar_config(disable=True)
        if self.ip_adapter is not None:
            ip_adapter.load_into(base, self.ip_adapter, spec.torch_dtype)
        base = spec.place(base)
        if refiner is not None:
            refiner.set_progress_bar_config(disable=True)
            # The shared components are already placed; the refiner's own UNet follows the same policy.
            if any(option.startswith("cpu_offload") for option in spec.applied_memory_options):
                refiner.enable_model_cpu_offload(device=spec.device)
            else:
                refiner.to(spec.device)
        return SdxlModels(base=base, refiner=refiner, variant=variant,
                          default_scheduler_config=base.scheduler.config)

    def _variant(self, spec: LoadSpec) -> str | None:
        requested = self.options.get("variant", "auto")
        if requested not in ("auto", None, "fp16"):
            raise ConfigError("options.variant must be auto, fp16 or null", field="options.variant")
        if requested is None or spec.dtype != "float16":
            return None  # fp16 files cast to fp32 would only lose precision
        present = _has_fp16_variant(self.profile.model)
        return "fp16" if present is not False else None

    def load(self) -> None:
        # Validate the placement now (a bad device or cpu_offload on CPU fails /ready, not the first call);
        # the weights load lazily under the device lock so an idle tool holds no VRAM.
        device = resolve_device(self.device)
        if self.memory.cpu_offload and device == "cpu":
            raise ConfigError("memory.cpu_offload needs an accelerator; the device is cpu",
                              field="options.memory.cpu_offload")
        resolve_plan(PLAN_FAMILY, self.memory, device)

    def close(self) -> None:
        from sparkle_motion import gpu_utils

        if (gpu_utils.loaded_key() or "").startswith("sdxl:"):
            gpu_utils.evict()

    # ------------------------------------------------------------------ inference

    def _pair(self, name: str, default: tuple[int, int]) -> tuple[int, int]:
        value = self.options.get(name)
        if value is None:
            return default
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)):
            raise ConfigError(f"options.{name} must be [height, width] integers", field=f"options.{name}")
        return int(value[0]), int(value[1])

    def invoke(self, request: ImagesSdxlRequest, ctx: ToolContext) -> ImagesSdxlResponse:
        import torch

        if request.use_refiner and not self.refiner_model:
            raise InvalidInputError("this deployment has no SDXL refiner (profile options.refiner_model)",
                                    field="use_refiner")
        width, height = output_size(request, self.settings)
        # SDXL composes best at its trained buckets: generate at the bucket nearest the frame's
        # aspect (768x1344 for 9:16), then crop-resize to the film's size.
        gen_w, gen_h = sdxl_bucket(width, height) if self.native_buckets else (width, height)
        steps = request.steps or int(self.options.get("steps", DEFAULT_STEPS))
        guidance = request.guidance_scale if request.guidance_scale is not None else float(
            self.options.get("guidance_scale", DEFAULT_GUIDANCE))
        scheduler_name = request.scheduler or self.options.get("scheduler")
        scheduler_cls_name, scheduler_overrides = scheduler_spec(scheduler_name) if scheduler_name else (None, {})
        high_noise_frac = request.refiner_high_noise_frac or float(
            self.options.get("refiner_high_noise_frac", DEFAULT_REFINER_FRAC))
        # SDXL micro-conditioning: telling the model the "original" image was this size and uncropped
        # steers it away from the upscaled/cropped look of small training images.
        target_size = (gen_h, gen_w)
        original_size = self._pair("original_size", target_size)
        crops = self._pair("crops_coords_top_left", (0, 0))
        seeds = [request.seed_for(i) for i in range(request.count)]

        from sparkle_motion import gpu_utils

        # A warm base+refiner serves plain requests too; only a refiner request forces the bigger key.
        with_refiner = request.use_refiner or (
            self.refiner_model is not None and gpu_utils.loaded_key() == self._model_key(True))
        t_all = time.perf_counter()
        with model_context(self._model_key(with_refiner), self._loader(with_refiner), device=self.device,
                           dtype=self.dtype, keep_warm_s=self.keep_warm_s, memory=self.memory,
                           lock_timeout_s=self.lock_timeout_s, plan_family=PLAN_FAMILY,
                           tool="images_sdxl") as handle:
            models: SdxlModels = handle.model
            base = models.base
            if scheduler_cls_name:
                import diffusers

                scheduler_cls = getattr(diffusers, scheduler_cls_name)
                base.scheduler = scheduler_cls.from_config(models.default_scheduler_config, **scheduler_overrides)
            else:  # a warm pipeline must not keep the previous request's scheduler
                base.scheduler = type(base.scheduler).from_config(models.default_scheduler_config)
            generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
            common = dict(prompt=request.prompt, prompt_2=request.prompt_2,
                          negative_prompt=request.negative_prompt or None,
                          negative_prompt_2=request.negative_prompt or None,
                          num_inference_steps=steps, guidance_scale=guidance, num_images_per_prompt=request.count,
                          generator=generators, callback_on_step_end=_step_reporter(ctx))
            ip_kwargs, ip_record = ({}, None) if self.ip_adapter is None else ip_adapter.request_kwargs(
                base, request, ctx, self.ip_adapter, gen_w, gen_h)
            probe = ip_adapter.ImageEmbedsProbe(base.unet) if self.ip_adapter is not None else None
            with ip_adapter.closing(probe), handle.inference():
                if self.simulate_oom == "inference":
                    raise_simulated_oom("inference")
                if request.use_refiner:
                    refiner = models.refiner
                    refiner.scheduler = base.scheduler
                    latents = base(**common, width=gen_w, height=gen_h, original_size=original_size,
                                   target_size=target_size, crops_coords_top_left=crops,
                                   denoising_end=high_noise_frac, output_type="latent", **ip_kwargs).images
                    images = refiner(**common, image=latents, denoising_start=high_noise_frac,
                                     original_size=original_size, target_size=target_size,
                                     crops_coords_top_left=crops,
                                     aesthetic_score=float(self.options.get("aesthetic_score", 6.0)),
                                     negative_aesthetic_score=float(self.options.get("negative_aesthetic_score",
                                                                                       2.5))).images
                else:
                    images = base(**common, width=gen_w, height=gen_h, original_size=original_size,
                                  target_size=target_size, crops_coords_top_left=crops, output_type="pil",
                                  **ip_kwargs).images
            if probe is not None:
                ip_record = {**(ip_record or {}), "unet_image_embeds": probe.seen}
            telemetry = dict(handle.telemetry)
            variant = models.variant
        if len(images) != request.count or any(im.size != (gen_w, gen_h) for im in images):
            raise BackendError("SDXL returned images of the wrong number or size",
                               context={"expected": [request.count, gen_w, gen_h],
                                        "got": [len(images), *(images[0].size if images else ())]})
        images = [fit_to_frame(im, (width, height)) for im in images]
        params: dict[str, Any] = {
            "prompt": request.prompt, "prompt_2": request.prompt_2, "negative_prompt": request.negative_prompt,
            "width": width, "height": height, "generated_size": [gen_w, gen_h], "steps": steps, "guidance_scale": guidance,
            "scheduler": scheduler_name or type(base.scheduler).__name__.removesuffix("Scheduler"),
            "use_refiner": request.use_refiner, "refiner_model": self.refiner_model if request.use_refiner else None,
            "refiner_high_noise_frac": high_noise_frac if request.use_refiner else None,
            "original_size": list(original_size), "target_size": list(target_size),
            "crops_coords_top_left": list(crops), "variant": variant,
            "style": request.style, "characters": request.characters, "ip_adapter": ip_record,
        }
        # Style and characters steer the storyboard; a diffusion model only reads the prompts (and,
        # with an IP-Adapter in the profile, the portraits of `references`).
        ignored = [name for name in ("style", "characters") if getattr(request, name)]
        if request.references and self.ip_adapter is None:
            ignored.append("references")
        total_s = time.perf_counter() - t_all
        timings = {"load_s": float(telemetry["load_s"]), "inference_s": float(telemetry["inference_s"]),
                   "total_s": total_s}
        results = []
        for index, (seed, image) in enumerate(zip(seeds, images)):
            png = encode_png(image.convert("RGB"), {
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "seed": str(seed),
                "parameters": json.dumps({**params, "seed": seed}, sort_keys=True, ensure_ascii=False),
                "Software": f"sparkle-motion {ctx.tool_id}/{ctx.backend} {ctx.model}",
            })
            results.append((index, seed, png))
        out = []
        for index, seed, png in results:
            manifest = ctx.put_output(
                request, "image", png, "image/png",
                {"seed": seed, "index": index, "steps": steps, "params": params, "ignored_options": ignored,
                 "conditioned_on": (ip_record or {}).get("references", []),
                 "gpu": telemetry, "timings": timings},
                media={"width": width, "height": height}, ext=".png",
            )
            out.append(GeneratedImage(index=index, seed=seed, artifact=manifest))
        return ImagesSdxlResponse(images=out, artifacts=[img.artifact for img in out], width=width, height=height,
                                  ignored_options=ignored, timings=timings)
