"""``MemoryOptions``: the memory-saving switches a profile may ask for, and applying what is possible."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from sparkle_motion.errors import ConfigError
from sparkle_motion.gpu.devices import _torch
from sparkle_motion.gpu.memory_plans import PLAN_NAMES, MemoryPlan

ATTENTION_CHOICES = ("sdpa", "xformers")


@dataclass(frozen=True)
class MemoryOptions:
    """Memory-saving switches a profile may request; only what is possible is applied.

    ``cpu_offload``: ``False``, ``True``/``"model"`` (whole sub-models move to the
    accelerator when used) or ``"sequential"`` (layer by layer: slowest, least VRAM).

    ``plan``: ``auto`` (the plan of the device's total memory,
    :mod:`sparkle_motion.gpu.memory_plans`) or a plan name; it decides the
    offload, so it excludes ``cpu_offload``.  The plan's flags (VAE tiling,
    attention) are added to the ones set here.  ``memory: auto`` in a profile
    is ``{plan: auto}``.

    ``estimate_gb``: what a load needs free on the device, overriding the peak
    measured at the last load and the plan's estimate (docs/gpu.md).

    ``simulate_total_gb`` (test hook, never in a real profile): the device has
    this much memory; free memory is it minus the other processes' residency
    records, in place of ``torch.cuda.mem_get_info``.
    """

    cpu_offload: bool | str = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention: str | None = None
    compile: bool = False
    plan: str | None = None
    estimate_gb: float | None = None
    simulate_total_gb: float | None = None

    def __post_init__(self) -> None:
        if self.cpu_offload not in (False, True, "model", "sequential"):
            raise ConfigError(f"memory.cpu_offload must be false, true, 'model' or 'sequential' "
                              f"(got {self.cpu_offload!r})", field="memory.cpu_offload")
        if self.attention is not None and self.attention not in ATTENTION_CHOICES:
            raise ConfigError(f"memory.attention must be one of {', '.join(ATTENTION_CHOICES)} or null "
                              f"(got {self.attention!r})", field="memory.attention")
        for name in ("vae_tiling", "vae_slicing", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"memory.{name} must be true or false", field=f"memory.{name}")
        if self.plan is not None and self.plan != "auto" and self.plan not in PLAN_NAMES:
            raise ConfigError(f"memory.plan must be auto or one of {', '.join(PLAN_NAMES)} (got {self.plan!r})",
                              field="memory.plan")
        if self.plan is not None and self.cpu_offload:
            raise ConfigError("memory.plan decides the offload; remove memory.cpu_offload", field="memory.cpu_offload")
        for name in ("estimate_gb", "simulate_total_gb"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"memory.{name} must be a positive number of GB", field=f"memory.{name}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> MemoryOptions:
        """Read ``options['memory']`` of a tool profile (a mapping, ``auto`` or absent)."""
        raw = (options or {}).get("memory") or {}
        if raw == "auto":
            raw = {"plan": "auto"}
        if not isinstance(raw, Mapping):
            raise ConfigError("options.memory must be a mapping", field="options.memory")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"options.memory has unknown keys {unknown}; known: {sorted(known)}",
                              field="options.memory")
        return cls(**dict(raw))

    def with_plan(self, plan: MemoryPlan | None) -> MemoryOptions:
        """These options plus the plan's flags (what the loader applies on top of the plan's placement)."""
        if plan is None:
            return self
        return replace(self, vae_tiling=self.vae_tiling or plan.vae_tiling,
                       vae_slicing=self.vae_slicing or plan.vae_slicing, attention=self.attention or plan.attention)


def _xformers_available() -> bool:
    try:
        import xformers  # noqa: F401
    except ImportError:
        return False
    return True


def apply_memory_options(pipe: Any, memory: MemoryOptions | None, device: str) -> list[str]:
    """Apply what is possible of ``memory`` to ``pipe``; return what was actually applied.

    CPU offload needs an accelerator: requesting it on CPU is a ConfigError (it
    would silently do nothing).  VAE tiling/slicing apply when the pipe has a
    VAE that supports them; SDPA when torch has it, xformers when importable;
    torch.compile only on request.  Nothing is recorded that was not applied.
    """
    if memory is None:
        return []
    applied: list[str] = []
    if memory.cpu_offload:
        if device == "cpu":
            raise ConfigError("memory.cpu_offload needs an accelerator; the device is cpu",
                              field="options.memory.cpu_offload")
        sequential = memory.cpu_offload == "sequential"
        method = getattr(pipe, "enable_sequential_cpu_offload" if sequential else "enable_model_cpu_offload", None)
        if method is not None:
            method(device=device)
            applied.append("cpu_offload_sequential" if sequential else "cpu_offload_model")
    vae = getattr(pipe, "vae", None)
    if memory.vae_tiling:
        target = vae if vae is not None and hasattr(vae, "enable_tiling") else None
        if target is not None:
            target.enable_tiling()
            applied.append("vae_tiling")
    if memory.vae_slicing:
        target = vae if vae is not None and hasattr(vae, "enable_slicing") else None
        if target is not None:
            target.enable_slicing()
            applied.append("vae_slicing")
    if memory.attention == "sdpa":
        torch = _torch()
        if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
            if _use_sdpa(pipe):
                applied.append("attention_sdpa")
    elif memory.attention == "xformers":
        method = getattr(pipe, "enable_xformers_memory_efficient_attention", None)
        if method is not None and _xformers_available():
            method()
            applied.append("attention_xformers")
    if memory.compile:
        torch = _torch()
        compiled = False
        for name in ("unet", "transformer"):
            module = getattr(pipe, name, None)
            if module is not None:
                setattr(pipe, name, torch.compile(module))
                compiled = True
        if compiled:
            applied.append("torch_compile")
    return applied


def _use_sdpa(pipe: Any) -> bool:
    """Put the legacy attention processors on SDPA; True when some component runs SDPA.

    Only the generic processors are swapped: a model that brings its own processor
    (Wan's WanAttnProcessor, for one) keeps it — replacing it breaks the model —
    and one already on AttnProcessor2_0 counts as applied without a change.
    """
    try:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    except ImportError:
        return False
    on_sdpa = False
    for component in getattr(pipe, "components", {}).values():
        processors = getattr(component, "attn_processors", None)
        if not processors or not hasattr(component, "set_attn_processor"):
            continue
        kinds = {type(p) for p in processors.values()}
        if kinds <= {AttnProcessor}:
            component.set_attn_processor(AttnProcessor2_0())
            on_sdpa = True
        elif kinds <= {AttnProcessor, AttnProcessor2_0}:
            if AttnProcessor in kinds:
                component.set_attn_processor(AttnProcessor2_0())
            on_sdpa = True
    return on_sdpa


