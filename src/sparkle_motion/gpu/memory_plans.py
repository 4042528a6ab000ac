"""Memory plans by card size: how each model family is placed on a device of a given total memory.

``memory: auto`` in a tool profile asks :func:`plan_for` for the plan of the
device's total memory; the loader applies it with :func:`apply_plan` (through
``LoadSpec.place``) and the plan lands in every artifact's metadata.  The
tables are documented, with the VRAM each stage is expected to take, in
``docs/gpu.md`` ("Memory plans"); change both together.

Plans (``MemoryPlan.name``):

* ``resident`` — every component on the device; with ``text_encoder_offload``
  the text encoder sits on the host and is moved in for each encode only.
  Weights stream to the device while loading (``device_map``) when
  ``stream_weights`` is set, so host RAM never holds the whole model.
* ``model_offload`` — diffusers ``enable_model_cpu_offload``: one whole
  component on the device at a time.
* ``sequential_offload`` — layer by layer (slowest, least VRAM).
* ``group_offload_fp8`` — the denoiser with diffusers group offload (leaf
  level, ``use_stream=True`` on CUDA: the next layer's weights copy while the
  current one computes) and layerwise casting (weights stored in
  ``float8_e4m3fn``, computed in the pipeline dtype); text encoder moved in
  for encoding only; the other components resident.
* ``device_map_offload`` — transformers/accelerate ``device_map`` with a VRAM
  cap: the layers that do not fit stay on the host (Qwen2-VL).
* ``host`` — the device is the CPU: nothing to plan.

Card sizes are nominal decimal GB; a card qualifies for a tier from
``CARD_SLACK`` of its size on (drivers and ECC keep a few percent: an "80 GB"
H100 reports ~79.6 GiB, a 24 GB card ~22.5-24 GiB).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from sparkle_motion.errors import ConfigError

GB = 10**9
CARD_SLACK = 0.92
PLAN_NAMES = ("resident", "model_offload", "sequential_offload", "group_offload_fp8", "device_map_offload", "host")


class MemoryPlanError(ConfigError):
    """No plan of this model family fits the device: the error names what to use instead."""

    code = "memory_plan_refused"


@dataclass(frozen=True)
class MemoryPlan:
    family: str
    name: str
    total_bytes: int | None          # the device's total memory it was chosen for (None: host)
    simulated: bool = False          # total_bytes came from the simulate_total_gb test hook
    estimate_bytes: int = 0          # expected peak on the device: what a load needs free
    text_encoder_offload: bool = False
    stream_weights: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention: str | None = None
    reason: str = ""

    def metadata(self) -> dict[str, Any]:
        """What artifacts record as ``memory_plan``."""
        data = asdict(self)
        data["card_gb"] = None if self.total_bytes is None else round(self.total_bytes / GB, 1)
        data["estimate_gb"] = round(self.estimate_bytes / GB, 1)
        return data


@dataclass(frozen=True)
class _Tier:
    min_gb: float                    # nominal card size from which this tier applies
    name: str                        # a PLAN_NAMES entry, or "refuse"
    estimate_gb: float
    text_encoder_offload: bool = False
    stream_weights: bool = False
    use_instead: str = ""            # for "refuse": what to run instead


_VAE = {"vae_tiling": True}
#: family -> (tiers from the largest card down, flags every plan of the family gets)
PLANS: dict[str, tuple[tuple[_Tier, ...], dict[str, Any]]] = {
    # Transformer 32.8 GB bf16, UMT5 11.4 GB bf16, CLIP ViT-H 2.5 GB + VAE 0.5 GB fp32; ~6 GB activations at
    # 1280x720x81 (75,600 tokens).
    "wan-flf2v-14b": ((
        _Tier(80, "resident", 42, text_encoder_offload=True, stream_weights=True),
        _Tier(40, "model_offload", 39),
        _Tier(24, "group_offload_fp8", 15, text_encoder_offload=True),
        _Tier(0, "refuse", 0, use_instead="the ltx-video backend of videos_wan (configs/profiles/gpu-24gb.yaml)"),
    ), _VAE),
    # LTX-Video 13B (distilled) 26 GB bf16, T5-XXL 9.5 GB bf16, VAE 0.8 GB: also fits the 2B checkpoints.
    "ltx-video": ((
        _Tier(48, "resident", 38, text_encoder_offload=True, stream_weights=True),
        _Tier(32, "model_offload", 30),
        _Tier(12, "group_offload_fp8", 11, text_encoder_offload=True),
        _Tier(0, "refuse", 0, use_instead="a card with 12 GB or more, or device: cpu"),
    ), _VAE),
    # UNet 5.1 GB + text encoders 1.6 GB + VAE 0.2 GB in fp16; 1024x1024 decode is the peak.
    "sdxl": ((
        _Tier(16, "resident", 10),
        _Tier(8, "model_offload", 6),
        _Tier(0, "sequential_offload", 3),
    ), {"vae_tiling": True, "vae_slicing": True, "attention": "sdpa"}),
    # T3 (0.5B Llama) + S3Gen + HiFT vocoder + voice encoder in fp32: ~4 GB; not a diffusers pipeline.
    "chatterbox": ((
        _Tier(6, "resident", 4),
        _Tier(0, "refuse", 0, use_instead="device: cpu for tts_chatterbox"),
    ), {}),
    "qwen2-vl-7b": ((   # 8.3B params bf16: 16.6 GB + frames' visual tokens
        _Tier(24, "resident", 19, stream_weights=True),
        _Tier(12, "device_map_offload", 11, stream_weights=True),
        _Tier(0, "refuse", 0, use_instead="model: Qwen/Qwen2-VL-2B-Instruct"),
    ), {"attention": "sdpa"}),
    "qwen2-vl-2b": ((   # 2.2B params bf16: 4.4 GB
        _Tier(8, "resident", 6, stream_weights=True),
        _Tier(0, "device_map_offload", 3, stream_weights=True),
    ), {"attention": "sdpa"}),
}


def qwen2vl_family(model: str) -> str:
    """``qwen2-vl-2b`` for a 2B checkpoint id, else ``qwen2-vl-7b`` (the conservative choice for unknown ids)."""
    match = re.search(r"(\d+(?:\.\d+)?)B\b", model, re.IGNORECASE)
    return "qwen2-vl-2b" if match and float(match.group(1)) <= 3 else "qwen2-vl-7b"


def _family(family: str) -> tuple[tuple[_Tier, ...], dict[str, Any]]:
    if family not in PLANS:
        raise ConfigError(f"no memory plans for model family {family!r}; known: {sorted(PLANS)}",
                          field="options.memory.plan")
    return PLANS[family]


def plan_for(family: str, total_bytes: int | None, *, simulated: bool = False) -> MemoryPlan:
    """The plan of ``family`` for a device of ``total_bytes`` (None: the CPU); MemoryPlanError when none fits."""
    tiers, flags = _family(family)
    if total_bytes is None:
        return MemoryPlan(family=family, name="host", total_bytes=None, reason="the device is the CPU", **flags)
    for tier in tiers:
        if total_bytes >= tier.min_gb * GB * CARD_SLACK:
            break
    card_gb = round(total_bytes / GB, 1)
    if tier.name == "refuse":
        smallest = min(t.min_gb for t in tiers if t.name != "refuse")
        raise MemoryPlanError(
            f"{family} needs a card of at least {smallest:g} GB; this device has {card_gb:g} GB. "
            f"Use {tier.use_instead}.", field="options.memory",
            context={"family": family, "card_gb": card_gb, "min_gb": smallest, "use_instead": tier.use_instead,
                     "simulated": simulated})
    return _build(family, tier, flags, total_bytes, simulated,
                  reason=f"{card_gb:g} GB card: the {tier.min_gb:g} GB+ tier of {family}")


def plan_named(family: str, name: str, total_bytes: int | None, *, simulated: bool = False) -> MemoryPlan:
    """A plan chosen by name in the profile (``memory: {plan: model_offload}``), whatever the card."""
    tiers, flags = _family(family)
    for tier in tiers:
        if tier.name == name:
            return _build(family, tier, flags, total_bytes, simulated, reason="named in the profile")
    names = [t.name for t in tiers if t.name != "refuse"]
    raise ConfigError(f"memory plan {name!r} is not one of {family}'s plans {names} (or auto)",
                      field="options.memory.plan")


def _build(family: str, tier: _Tier, flags: dict[str, Any], total_bytes: int | None, simulated: bool,
           reason: str) -> MemoryPlan:
    return MemoryPlan(family=family, name=tier.name, total_bytes=total_bytes, simulated=simulated,
                      estimate_bytes=int(tier.estimate_gb * GB), text_encoder_offload=tier.text_encoder_offload,
                      stream_weights=tier.stream_weights, reason=reason, **flags)


# --------------------------------------------------------------------------- applying a plan

def _denoiser(pipe: Any) -> tuple[str, Any] | tuple[None, None]:
    for name in ("transformer", "unet"):
        module = getattr(pipe, name, None)
        if module is not None:
            return name, module
    return None, None


def _text_encoders(pipe: Any) -> list[tuple[str, Any]]:
    return [(n, m) for n in ("text_encoder", "text_encoder_2", "text_encoder_3")
            if (m := getattr(pipe, n, None)) is not None and hasattr(m, "register_forward_pre_hook")]


def offload_text_encoder_between_calls(module: Any, device: str) -> None:
    """Keep ``module`` on the host and move it to ``device`` for each forward only.

    The prompt embeddings it returns stay on the device; the 11 GB of UMT5
    (Wan) leave it before the denoiser runs.  Idempotent.
    """
    if getattr(module, "_sparkle_offload_hooks", None):
        return
    def onload(mod: Any, args: Any) -> None:   # a hook that returned a value would replace the inputs
        mod.to(device)

    def offload(mod: Any, args: Any, output: Any) -> None:
        mod.to("cpu")

    module.to("cpu")
    module._sparkle_offload_hooks = (module.register_forward_pre_hook(onload), module.register_forward_hook(offload))


def apply_plan(pipe: Any, plan: MemoryPlan, device: str) -> list[str]:
    """Place ``pipe`` (a diffusers pipeline) on ``device`` as ``plan`` says; returns what was applied.

    Flags (VAE tiling, attention) are applied by the caller through
    ``apply_memory_options``.  On a CPU device (a simulated card in tests)
    ``use_stream`` needs CUDA, so group offload runs without a stream and
    says so: ``group_offload_leaf(no_stream)``.
    """
    import torch

    applied = [f"plan:{plan.name}"]
    if plan.name == "sequential_offload" and device == "cpu":
        # accelerate cannot offload layer by layer onto the CPU itself (a simulated card in tests): say so.
        pipe.to(device)
        return applied + ["cpu_offload_sequential(not applied: device is cpu)"]
    if plan.name in ("model_offload", "sequential_offload"):
        sequential = plan.name == "sequential_offload"
        getattr(pipe, "enable_sequential_cpu_offload" if sequential else "enable_model_cpu_offload")(device=device)
        return applied + ["cpu_offload_sequential" if sequential else "cpu_offload_model"]
    encoders = _text_encoders(pipe) if plan.text_encoder_offload else []
    moved: set[int] = {id(m) for _, m in encoders}
    if plan.name == "group_offload_fp8":
        name, denoiser = _denoiser(pipe)
        if denoiser is None:
            raise ConfigError(f"memory plan {plan.name} needs a pipeline with a transformer or unet",
                              field="options.memory.plan")
        compute = next(p.dtype for p in denoiser.parameters() if p.is_floating_point())
        denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        use_stream = device.startswith("cuda")
        denoiser.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                      offload_type="leaf_level", use_stream=use_stream)
        applied += [f"layerwise_casting_fp8({name})",
                    f"group_offload_leaf({name}{'' if use_stream else ', no_stream'})"]
        moved.add(id(denoiser))
    for _, module in encoders:
        offload_text_encoder_between_calls(module, device)
    if encoders:
        applied.append("text_encoder_offload")
    for module in getattr(pipe, "components", {}).values():
        if isinstance(module, torch.nn.Module) and id(module) not in moved:
            module.to(device)
    return applied


def module_bytes(model: Any) -> int:
    """Bytes of the parameters and buffers of every torch module in ``model`` (a module or a pipeline)."""
    import torch

    modules = [model] if isinstance(model, torch.nn.Module) else [
        m for m in getattr(model, "components", {}).values() if isinstance(m, torch.nn.Module)]
    if not modules:
        modules = [m for m in vars(model).values() if isinstance(m, torch.nn.Module)] if hasattr(model, "__dict__") \
            else []
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total
