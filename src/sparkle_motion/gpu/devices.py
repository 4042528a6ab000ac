"""Devices and dtypes, OOM recognition and memory snapshots — the torch-touching basics of the GPU tier.

torch is imported lazily, only by functions that need a device: the CPU
profile has no torch at all.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from sparkle_motion.errors import ConfigError, SparkleError

DTYPE_NAMES = ("float16", "bfloat16", "float32")
_OOM_PATTERNS = re.compile(r"out of memory|can't allocate memory|cannot allocate memory", re.IGNORECASE)


class ModelOOMError(SparkleError):
    """The device ran out of memory while loading or running a model.

    HTTP 507 (Insufficient Storage), deliberately not 503: the same request on
    the same device would most likely fail again, and our clients retry 503s
    automatically.  ``context`` holds ``stage`` (load|inference), the model
    key, the device, a memory snapshot and ``hint`` — what to shrink.
    """

    code = "model_oom"
    http_status = 507

    def __init__(self, message: str, *, stage: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.stage = stage



def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # the CPU profile installs no torch
        raise ConfigError("this backend needs torch; install the GPU extra: pip install -e '.[gpu]'",
                          context={"missing": "torch"}) from exc
    return torch


def _torch_if_imported() -> Any:
    """torch only when someone already imported it (never pay the import just to look)."""
    return sys.modules.get("torch")


def device_file_key(device: str) -> str:
    """The host-wide name of ``device`` for the files that coordinate processes on it (lock, residency).

    ``cuda:0`` in a process that sees only some cards (``CUDA_VISIBLE_DEVICES``, which Ray sets for
    each GPU replica) is a different card in each process: the key names the physical card the
    process sees as ``cuda:N`` (``cuda-phys-<id>``), so replicas on different cards of one host do
    not wait for each other, and those sharing one card (fractional ``num_gpus``) still do.
    """
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if visible and match:
        cards = [card.strip() for card in visible.split(",") if card.strip()]
        index = int(match.group(1) or 0)
        if index < len(cards):
            device = f"cuda-phys-{cards[index]}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", device)


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` → ``cuda:0`` when CUDA is available, else ``mps`` when available, else ``cpu``.

    ``cuda`` is normalised to ``cuda:<current index>`` so the lock file names the
    physical device.  Asking for a device that does not exist is a ConfigError.
    """
    device = (device or "auto").strip().lower()
    torch = _torch()
    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if device == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match:
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available", field="options.device")
        index = int(match.group(1)) if match.group(1) else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)",
                              field="options.device")
        return f"cuda:{index}"
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' requested but MPS is not available", field="options.device")
        return "mps"
    raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps", field="options.device")


def default_dtype(device: str) -> str:
    # fp16 halves VRAM on GPUs; CPU kernels for fp16 are slow or missing, so fp32 there.
    return "float16" if device.startswith("cuda") else "float32"


def resolve_dtype(dtype: str | None, device: str) -> str:
    if dtype in (None, "", "auto"):
        return default_dtype(device)
    name = str(dtype).removeprefix("torch.").lower()
    name = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}.get(
        name, name)
    if name not in DTYPE_NAMES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_NAMES)} (got {dtype!r})", field="options.dtype")
    return name


def torch_dtype_for(name: str | None, device: str = "cpu") -> Any:
    """The torch dtype for a name (None/auto → the device default)."""
    return getattr(_torch(), resolve_dtype(name, device))


def is_oom_error(exc: BaseException) -> bool:
    torch = _torch_if_imported()
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_PATTERNS.search(str(exc)))


SIMULATE_OOM_STAGES = ("load", "inference")


def raise_simulated_oom(stage: str) -> None:
    """Raise torch's CUDA OOM error: the ``simulate_oom: load|inference`` profile test hook of GPU backends.

    It raises the real exception class at the process boundary we do not own
    (the CUDA allocator), so the typed-error path runs without a GPU.
    """
    if stage not in SIMULATE_OOM_STAGES:
        raise ConfigError(f"options.simulate_oom must be one of {', '.join(SIMULATE_OOM_STAGES)} (got {stage!r})",
                          field="options.simulate_oom")
    raise _torch().cuda.OutOfMemoryError(f"CUDA out of memory (simulated by options.simulate_oom={stage})")


def memory_snapshot(device: str) -> dict[str, Any]:
    """What the device and the process hold right now (MB), for errors and telemetry."""
    snapshot: dict[str, Any] = {"device": device}
    torch = _torch_if_imported()
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        try:
            free, total = torch.cuda.mem_get_info(device)
            snapshot.update(
                vram_free_mb=round(free / 2**20, 1), vram_total_mb=round(total / 2**20, 1),
                vram_allocated_mb=round(torch.cuda.memory_allocated(device) / 2**20, 1),
                vram_reserved_mb=round(torch.cuda.memory_reserved(device) / 2**20, 1),
                vram_peak_mb=round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            )
        except RuntimeError as exc:  # a wedged CUDA context still must not hide the OOM itself
            snapshot["vram_error"] = str(exc)[:200]
    snapshot.update(_host_memory())
    return snapshot


def _host_memory() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import resource

        # ru_maxrss is KiB on Linux, bytes on macOS.
        scale = 1 if sys.platform == "darwin" else 1024
        info["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)
    except (ImportError, OSError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                info["host_available_mb"] = round(int(line.split()[1]) / 1024, 1)
                break
    except OSError:
        pass
    return info


def _empty_device_cache(device: str) -> None:
    torch = _torch_if_imported()
    if torch is None:
        return
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _peak_vram_mb(device: str) -> float | None:
    torch = _torch_if_imported()
    if torch is None or not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def record_peaks(telemetry: dict[str, Any], device: str) -> None:
    peak = _peak_vram_mb(device)
    if peak is not None:
        telemetry["peak_vram_mb"] = peak
    rss = _host_memory().get("process_peak_rss_mb")
    if rss is not None:  # the host-side peak: what CPU runs and CPU offload cost
        telemetry["process_peak_rss_mb"] = rss


def _shrink_hint(stage: str) -> str:
    if stage == "load":
        return ("the weights do not fit: use options.memory: auto (a plan for this card size), a smaller plan or "
                "options.memory.cpu_offload, use dtype float16 or bfloat16, free the GPU from other processes (lower their keep_warm_s) "
                "or use a smaller model")
    return ("the activations do not fit: lower width/height, frame count or batch count, enable "
            "options.memory.vae_tiling / vae_slicing, or set options.memory.cpu_offload")


def oom_error(exc: BaseException, stage: str, model_key: str, device: str) -> ModelOOMError:
    _empty_device_cache(device)  # before the snapshot, so it shows what is really still held
    return ModelOOMError(
        f"out of memory on {device} during {stage} of {model_key}",
        stage=stage,
        context={"stage": stage, "model_key": model_key, "device": device, "memory": memory_snapshot(device),
                 "hint": _shrink_hint(stage), "exception_type": type(exc).__name__,
                 "exception_message": str(exc)[:500]},
    )
