"""One way to hold a heavy model on a device: ``model_context`` (the public face of :mod:`sparkle_motion.gpu`).

Every GPU backend (SDXL, Wan, LTX-Video, Chatterbox, Qwen2-VL) loads and runs
its model inside :func:`model_context`, which gives it

* a cross-process **device lock** (``SPARKLE_HOME/locks/<device>.lock``): two
  tool processes never load or run heavy weights on one GPU at once; a device
  held by another process past ``lock_timeout_s`` raises :class:`DeviceBusyError`
  (HTTP 503 + Retry-After) instead of blocking the request forever;
* a per-process **warm cache**: the same ``model_key`` (and device, dtype,
  memory options, plan) within ``keep_warm_s`` is reused; a different key
  evicts the old model first (drop references, ``gc.collect()``,
  ``torch.cuda.empty_cache()``); an idle model is also evicted by a timer after
  ``keep_warm_s``;
* **room on a shared device**: before a load, what it needs is compared with
  the device's free memory, and warm models of other processes are asked to
  leave through the residency records (:mod:`sparkle_motion.gpu.residency`);
* **memory plans by card size** (``memory: auto``, :mod:`sparkle_motion.gpu.memory_plans`);
* **typed OOM**: ``torch.cuda.OutOfMemoryError`` or a RuntimeError that says
  "out of memory" becomes :class:`ModelOOMError` (stage ``load`` or
  ``inference``, a memory snapshot and a hint on what to shrink), and the lock
  is released;
* **telemetry** for artifact metadata: load_s, inference_s, device, dtype,
  peak VRAM (CUDA), peak host RAM, the memory plan and options actually applied.

Importing this module never imports torch: the CPU profile has no torch at
all.  torch is imported lazily, only by functions that need a device.
"""

from __future__ import annotations

from sparkle_motion.gpu.context import LoadSpec, ModelHandle, device_total_bytes, model_context, resolve_plan
from sparkle_motion.gpu.devices import (
    DTYPE_NAMES,
    SIMULATE_OOM_STAGES,
    ModelOOMError,
    default_dtype,
    is_oom_error,
    memory_snapshot,
    raise_simulated_oom,
    resolve_device,
    resolve_dtype,
    torch_dtype_for,
)
from sparkle_motion.gpu.lock import (
    DEVICE_BUSY_RETRY_AFTER_S,
    DeviceBusyError,
    device_lock,
    device_lock_is_free,
    lock_path,
    locks_dir,
)
from sparkle_motion.gpu.memory_options import ATTENTION_CHOICES, MemoryOptions, apply_memory_options
from sparkle_motion.gpu.memory_plans import MemoryPlan, MemoryPlanError, apply_plan, plan_for, qwen2vl_family
from sparkle_motion.gpu.warm import evict, load_count, loaded_key

__all__ = [
    "ATTENTION_CHOICES", "DEVICE_BUSY_RETRY_AFTER_S", "DTYPE_NAMES", "SIMULATE_OOM_STAGES", "DeviceBusyError",
    "LoadSpec", "MemoryOptions", "MemoryPlan", "MemoryPlanError", "ModelHandle", "ModelOOMError",
    "apply_memory_options", "apply_plan", "default_dtype", "device_lock", "device_lock_is_free",
    "device_total_bytes", "evict", "is_oom_error", "load_count", "loaded_key", "lock_path", "locks_dir",
    "memory_snapshot", "model_context", "plan_for", "qwen2vl_family", "raise_simulated_oom", "resolve_device",
    "resolve_dtype", "resolve_plan", "torch_dtype_for",
]
