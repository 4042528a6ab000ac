"""``model_context``: load (or reuse) a model under the device lock, make room for it, plan its memory.

See ``docs/gpu.md``.  Before a load: the memory plan of the card
(:mod:`~sparkle_motion.gpu.memory_plans`, when the profile says ``memory:
auto`` or names a plan), what the load needs (the profile's ``estimate_gb``,
else the peak measured at the last load of this model and plan, else the
plan's estimate), and — when the device's free memory is short — eviction
requests to the other processes' warm models (:mod:`~sparkle_motion.gpu.residency`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sparkle_motion.errors import ConfigError
from sparkle_motion.gpu import residency, warm
from sparkle_motion.gpu.devices import (_empty_device_cache, _host_memory, _torch, _torch_if_imported, is_oom_error,
                                        oom_error, record_peaks, resolve_device, resolve_dtype, torch_dtype_for)
from sparkle_motion.gpu.lock import device_lock
from sparkle_motion.gpu.memory_options import MemoryOptions, apply_memory_options
from sparkle_motion.gpu.memory_plans import GB, MemoryPlan, apply_plan, module_bytes, plan_for, plan_named


@dataclass
class LoadSpec:
    """What a loader gets: where to put the model, in which dtype, with which memory options and plan.

    A loader that builds a diffusers pipeline calls :meth:`place` instead of
    ``pipe.to(device)``: it applies the plan and the memory options (recording
    what was applied) and moves the model unless the plan or an offload
    manages placement.  :meth:`pretrained_kwargs` are the ``from_pretrained``
    arguments that stream weights straight to the device where the plan allows.
    """

    device: str
    dtype: str
    memory: MemoryOptions
    plan: MemoryPlan | None = None
    applied_memory_options: list[str] = field(default_factory=list)

    @property
    def torch_dtype(self) -> Any:
        return torch_dtype_for(self.dtype)

    def record(self, option: str) -> None:
        """Record a memory option the loader applied by itself (e.g. attn_implementation='sdpa')."""
        if option not in self.applied_memory_options:
            self.applied_memory_options.append(option)

    def pretrained_kwargs(self) -> dict[str, Any]:
        """``device_map`` for a transformers/diffusers model: straight to the device, or capped for offload.

        Empty on the CPU or without a streaming plan (the default load path).
        """
        plan = self.plan
        if plan is None or not plan.stream_weights or not self.device.startswith("cuda"):
            return {}
        if plan.name == "device_map_offload" and plan.total_bytes:
            index = int(self.device.partition(":")[2] or 0)
            cap = int(plan.total_bytes * 0.75)   # room for the activations and the CUDA context
            return {"device_map": "auto", "max_memory": {index: cap, "cpu": int(_host_available_bytes())}}
        return {"device_map": self.device}

    def place(self, model: Any) -> Any:
        plan = self.plan
        placed = False
        if plan is not None and plan.name != "host":
            if hasattr(model, "components"):   # a diffusers pipeline
                for option in apply_plan(model, plan, self.device):
                    self.record(option)
                placed = True
            else:
                self.record(f"plan:{plan.name}")
                placed = plan.name == "device_map_offload" and self.device.startswith("cuda")
        for option in apply_memory_options(model, self.memory, self.device):
            self.record(option)
        offloaded = any(o.startswith("cpu_offload") for o in self.applied_memory_options)
        if not placed and not offloaded and hasattr(model, "to"):
            moved = model.to(self.device)
            model = moved if moved is not None else model
        return model


def _host_available_bytes() -> float:
    return _host_memory().get("host_available_mb", 0.0) * 2**20


def device_total_bytes(device: str, memory: MemoryOptions) -> tuple[int | None, bool]:
    """(total bytes, simulated): the simulate_total_gb hook, else CUDA's total; None for cpu/mps."""
    if memory.simulate_total_gb is not None:
        return int(memory.simulate_total_gb * GB), True
    if device.startswith("cuda"):
        return int(_torch().cuda.mem_get_info(device)[1]), False
    return None, False


def resolve_plan(family: str | None, memory: MemoryOptions, device: str) -> MemoryPlan | None:
    """The memory plan the profile asks for on ``device`` (None: no plan asked or no family given).

    Backends call it in ``load()`` too, so a card too small for the model is
    refused at start-up (``MemoryPlanError``), not on the first request.
    """
    if memory.plan is None or family is None:
        return None
    total, simulated = device_total_bytes(device, memory)
    if memory.plan == "auto":
        return plan_for(family, total, simulated=simulated)
    return plan_named(family, memory.plan, total, simulated=simulated)


def _free_bytes_fn(device: str, memory: MemoryOptions) -> Callable[[], int] | None:
    if memory.simulate_total_gb is not None:
        total = int(memory.simulate_total_gb * GB)
        return lambda: total - residency.used_bytes(device)
    if device.startswith("cuda"):
        torch = _torch()
        return lambda: int(torch.cuda.mem_get_info(device)[0])
    return None


def _peak_key(model_key: str, plan: MemoryPlan | None) -> str:
    return f"{model_key}|{plan.name if plan else 'no-plan'}"


def _need_bytes(model_key: str, memory: MemoryOptions, plan: MemoryPlan | None) -> tuple[int, str]:
    """(bytes, where the figure came from): profile estimate > measured peak > plan estimate > unknown (0)."""
    if memory.estimate_gb is not None:
        return int(memory.estimate_gb * GB), "profile"
    measured = residency.remembered_peak(_peak_key(model_key, plan))
    if measured:
        return measured, "measured"
    if plan is not None and plan.estimate_bytes:
        return plan.estimate_bytes, "plan"
    return 0, "unknown"


def _resident_bytes(model: Any, device: str) -> int:
    torch = _torch_if_imported()
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.memory_reserved(device))
    return module_bytes(model)


class ModelHandle:
    """What ``model_context`` yields: the model and its telemetry."""

    def __init__(self, model: Any, telemetry: dict[str, Any], device: str) -> None:
        self.model = model
        self.telemetry = telemetry
        self.device = device

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Time the block into ``telemetry['inference_s']``; OOM inside becomes ModelOOMError(stage=inference)."""
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            if is_oom_error(exc):
                raise oom_error(exc, "inference", self.telemetry["model_key"], self.device) from exc
            raise
        finally:
            self.telemetry["inference_s"] = round(
                self.telemetry.get("inference_s", 0.0) + time.perf_counter() - started, 4)
            record_peaks(self.telemetry, self.device)


@contextmanager
def model_context(
    model_key: str,
    loader: Callable[[LoadSpec], Any],
    *,
    device: str = "auto",
    dtype: str | None = None,
    keep_warm_s: float = 300.0,
    memory: MemoryOptions | None = None,
    lock_timeout_s: float = 0.0,
    plan_family: str | None = None,
    tool: str | None = None,
) -> Iterator[ModelHandle]:
    """Load (or reuse) a model under the device lock; see the module docstring.

    ``plan_family`` names the model's memory-plan table (``wan-flf2v-14b``,
    ``ltx-video``, ``sdxl``, ``chatterbox``, ``qwen2-vl-2b|7b``); ``tool`` is
    what the residency record calls this process (default: the family or key).
    """
    if not model_key:
        raise ConfigError("model_key must not be empty", field="model_key")
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    memory = memory or MemoryOptions()
    if memory.cpu_offload and resolved_device == "cpu":  # fail before taking the lock or loading anything
        raise ConfigError("memory.cpu_offload needs an accelerator; the device is cpu",
                          field="options.memory.cpu_offload")
    plan = resolve_plan(plan_family, memory, resolved_device)   # a refusal comes before the lock
    effective = memory.with_plan(plan)
    identity = (model_key, resolved_device, resolved_dtype, memory, plan)
    owner = tool or plan_family or model_key.split(":")[0]
    free_bytes = _free_bytes_fn(resolved_device, memory)
    deadline = time.monotonic() + lock_timeout_s
    with device_lock(resolved_device, lock_timeout_s):
        torch = _torch()
        if resolved_device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(resolved_device)
        residency.touch(resolved_device)
        entry = warm.claim(identity)
        reusable = entry is not None
        evicted: str | None = None
        try:
            if entry is None:
                if warm.current() is not None:
                    evicted = warm.evict()
                entry = _load_making_room(model_key, loader, identity, resolved_device, resolved_dtype, memory,
                                          effective, plan, keep_warm_s, free_bytes, deadline, owner)
            telemetry: dict[str, Any] = {
                "model_key": model_key,
                "device": resolved_device,
                "dtype": resolved_dtype,
                "load_s": 0.0 if reusable else entry.load_s,
                "reused": reusable,
                "evicted": evicted,
                "load_count": warm.load_count(model_key),
                "applied_memory_options": list(entry.applied_memory_options),
                "memory_plan": plan.metadata() if plan is not None else None,
                "load_peak_rss_mb": entry.extra.get("load_peak_rss_mb"),
                "inference_s": 0.0,
            }
            if not reusable and entry.extra.get("fit") is not None:
                telemetry["fit"] = entry.extra["fit"]
            handle = ModelHandle(entry.model, telemetry, resolved_device)
            try:
                yield handle
            except BaseException as exc:
                if is_oom_error(exc):
                    raise oom_error(exc, "inference", model_key, resolved_device) from exc
                raise
            finally:
                record_peaks(telemetry, resolved_device)
                handle.model = None  # the cache owns the model; a handle kept by a caller must not pin it
                if resolved_device.startswith("cuda") and torch.cuda.is_available():
                    peak = max(int(torch.cuda.max_memory_allocated(resolved_device)), entry.extra.get("peak_bytes", 0))
                    entry.extra["peak_bytes"] = peak
                    residency.remember_peak(_peak_key(model_key, plan), peak)
        finally:
            if entry is not None:
                warm.release(entry, keep_warm_s)


def _load_making_room(model_key: str, loader: Callable[[LoadSpec], Any], identity: tuple[Any, ...], device: str,
                      dtype: str, memory: MemoryOptions, effective: MemoryOptions, plan: MemoryPlan | None,
                      keep_warm_s: float, free_bytes: Callable[[], int] | None, deadline: float,
                      owner: str) -> warm.WarmEntry:
    """Ask other processes to make room when the device is short, load, then record our residency."""
    need, need_source = _need_bytes(model_key, memory, plan)
    fit: dict[str, Any] | None = None
    if free_bytes is not None and need > 0:
        fit = residency.make_room(device, need, free_bytes, deadline, tool=owner)
        fit["need_source"] = need_source
    entry = _load(model_key, loader, identity, device, dtype, effective, plan, keep_warm_s)
    entry.extra["fit"] = fit
    if free_bytes is not None:
        resident = max(need, _resident_bytes(entry.model, device))
        entry.extra["resident_bytes"] = resident
        try:
            residency.register(device, tool=owner, model_key=model_key, bytes_=resident,
                               plan=plan.name if plan else None, on_request=warm.evict_if_idle)
        except BaseException:
            warm.release(entry, 0.0)
            raise
    return entry

def _load(model_key: str, loader: Callable[[LoadSpec], Any], identity: tuple[Any, ...], device: str, dtype: str,
          memory: MemoryOptions, plan: MemoryPlan | None, keep_warm_s: float) -> warm.WarmEntry:
    spec = LoadSpec(device=device, dtype=dtype, memory=memory, plan=plan)
    started = time.perf_counter()
    try:
        model = loader(spec)
    except BaseException as exc:
        gc.collect()   # the half-built model is garbage now; free it before reporting
        if is_oom_error(exc):
            raise oom_error(exc, "load", model_key, device) from exc
        _empty_device_cache(device)
        raise
    entry = warm.WarmEntry(model_key=model_key, identity=identity, model=model, device=device, dtype=dtype,
                           load_s=round(time.perf_counter() - started, 4),
                           applied_memory_options=list(spec.applied_memory_options), keep_warm_s=keep_warm_s,
                           last_used=time.monotonic(),
                           extra={"load_peak_rss_mb": _host_memory().get("process_peak_rss_mb")})
    warm.install(entry)
    return entry
