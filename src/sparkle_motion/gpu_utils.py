"""One way to hold a heavy model on a device: ``model_context``.

Every GPU backend (SDXL, Wan, Chatterbox, Qwen2-VL) loads and runs its model
inside :func:`model_context`, which gives it

* a cross-process **device lock** (``SPARKLE_HOME/locks/<device>.lock``): two
  tool processes never load or run heavy weights on one GPU at once; a device
  held by another process past ``lock_timeout_s`` raises :class:`DeviceBusyError`
  (HTTP 503 + Retry-After) instead of blocking the request forever;
* a per-process **warm cache**: the same ``model_key`` (and device, dtype,
  memory options) within ``keep_warm_s`` is reused; a different key evicts the
  old model first (drop references, ``gc.collect()``, ``torch.cuda.empty_cache()``);
  an idle model is also evicted by a timer after ``keep_warm_s`` so its VRAM goes
  back to the other tool processes sharing the GPU;
* **typed OOM**: ``torch.cuda.OutOfMemoryError`` or a RuntimeError that says
  "out of memory" becomes :class:`ModelOOMError` (stage ``load`` or
  ``inference``, a memory snapshot and a hint on what to shrink), and the lock
  is released;
* **telemetry** for artifact metadata: load_s, inference_s, device, dtype,
  peak VRAM (CUDA), the memory options that were actually applied.

Importing this module never imports torch: the CPU profile has no torch at
all.  torch is imported lazily, only by functions that need a device.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sparkle_motion.errors import ConfigError, ServiceBusyError, SparkleError

DTYPE_NAMES = ("float16", "bfloat16", "float32")
ATTENTION_CHOICES = ("sdpa", "xformers")
#: Seconds a caller is told to wait when the device is held by another process.
DEVICE_BUSY_RETRY_AFTER_S = 10.0
_OOM_PATTERNS = re.compile(r"out of memory|can't allocate memory|cannot allocate memory", re.IGNORECASE)


class DeviceBusyError(ServiceBusyError):
    """Another process holds the device lock (HTTP 503 with Retry-After)."""

    code = "device_busy"


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


@dataclass(frozen=True)
class MemoryOptions:
    """Memory-saving switches a profile may request; only what is possible is applied.

    ``cpu_offload``: ``False``, ``True``/``"model"`` (whole sub-models move to the
    accelerator when used) or ``"sequential"`` (layer by layer: slowest, least VRAM).
    """

    cpu_offload: bool | str = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention: str | None = None
    compile: bool = False

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

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> MemoryOptions:
        """Read ``options['memory']`` of a tool profile (a mapping or absent)."""
        raw = (options or {}).get("memory") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError("options.memory must be a mapping", field="options.memory")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"options.memory has unknown keys {unknown}; known: {sorted(known)}",
                              field="options.memory")
        return cls(**dict(raw))


@dataclass
class LoadSpec:
    """What a loader gets: where to put the model, in which dtype, with which memory options.

    A loader that builds a diffusers pipeline calls :meth:`place` instead of
    ``pipe.to(device)``: it applies the memory options (recording what was
    applied) and moves the model unless CPU offload manages placement.
    """

    device: str
    dtype: str
    memory: MemoryOptions
    applied_memory_options: list[str] = field(default_factory=list)

    @property
    def torch_dtype(self) -> Any:
        return torch_dtype_for(self.dtype)

    def record(self, option: str) -> None:
        """Record a memory option the loader applied by itself (e.g. attn_implementation='sdpa')."""
        if option not in self.applied_memory_options:
            self.applied_memory_options.append(option)

    def place(self, model: Any) -> Any:
        for option in apply_memory_options(model, self.memory, self.device):
            self.record(option)
        if not any(o.startswith("cpu_offload") for o in self.applied_memory_options) and hasattr(model, "to"):
            moved = model.to(self.device)
            model = moved if moved is not None else model
        return model


# --------------------------------------------------------------------------- torch helpers (lazy)

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


# --------------------------------------------------------------------------- memory options

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


# --------------------------------------------------------------------------- device lock

def locks_dir() -> Path:
    from sparkle_motion.config import get_settings

    path = get_settings().home / "locks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_path(device: str) -> Path:
    return locks_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextmanager
def device_lock(device: str, timeout_s: float = 0.0) -> Iterator[Path]:
    """Hold the device exclusively across processes (and threads) for the block.

    ``timeout_s`` 0 tries once; a held lock raises DeviceBusyError.  The OS
    releases the lock if the holder dies, so a crashed process never wedges the GPU.
    """
    from filelock import FileLock, Timeout

    path = lock_path(device)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(device, threading.Lock())
    started = time.monotonic()
    acquired = thread_lock.acquire(timeout=timeout_s) if timeout_s > 0 else thread_lock.acquire(blocking=False)
    if not acquired:
        raise DeviceBusyError(f"device {device} is busy in this process", retry_after=DEVICE_BUSY_RETRY_AFTER_S,
                              context={"device": device, "waited_s": round(time.monotonic() - started, 3)})
    try:
        file_lock = FileLock(str(path), thread_local=False)
        remaining = max(0.0, timeout_s - (time.monotonic() - started))
        try:
            file_lock.acquire(timeout=remaining)
        except Timeout:
            raise DeviceBusyError(
                f"device {device} is held by another process", retry_after=DEVICE_BUSY_RETRY_AFTER_S,
                context={"device": device, "lock": str(path), "waited_s": round(time.monotonic() - started, 3)},
            ) from None
        try:
            yield path
        finally:
            file_lock.release()
    finally:
        thread_lock.release()


def device_lock_is_free(device: str) -> bool:
    """True when no process holds the device lock (tests and diagnostics)."""
    from filelock import FileLock, Timeout

    probe = FileLock(str(lock_path(device)), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return False
    probe.release()
    return True


# --------------------------------------------------------------------------- warm cache

@dataclass
class _WarmEntry:
    model_key: str
    identity: tuple[Any, ...]
    model: Any
    device: str
    dtype: str
    load_s: float
    applied_memory_options: list[str]
    keep_warm_s: float
    last_used: float
    in_use: int = 0
    timer: threading.Timer | None = None


_cache_lock = threading.RLock()
_warm: _WarmEntry | None = None
_load_counts: dict[str, int] = {}


def load_count(model_key: str) -> int:
    """How many times this process loaded ``model_key`` (reuse does not count)."""
    with _cache_lock:
        return _load_counts.get(model_key, 0)


def loaded_key() -> str | None:
    """The model_key of the warm model in this process, if any."""
    with _cache_lock:
        return _warm.model_key if _warm is not None else None


def evict() -> str | None:
    """Drop the warm model (refs, gc, device cache); return the key that was evicted."""
    global _warm
    with _cache_lock:
        entry, _warm = _warm, None
    if entry is None:
        return None
    if entry.timer is not None:
        entry.timer.cancel()
    device, key = entry.device, entry.model_key
    entry.model = None
    del entry
    gc.collect()
    _empty_device_cache(device)
    return key


def _evict_if_idle(entry: _WarmEntry) -> None:
    # Timer thread: frees VRAM for other processes once the model has idled for keep_warm_s.
    with _cache_lock:
        if _warm is not entry or entry.in_use or time.monotonic() - entry.last_used < entry.keep_warm_s:
            return
    evict()


def _arm_idle_timer(entry: _WarmEntry) -> None:
    if entry.timer is not None:
        entry.timer.cancel()
    if entry.keep_warm_s <= 0:
        return
    timer = threading.Timer(entry.keep_warm_s, _evict_if_idle, args=(entry,))
    timer.daemon = True
    timer.name = f"gpu-keep-warm-{entry.model_key}"[:60]
    entry.timer = timer
    timer.start()


# --------------------------------------------------------------------------- model_context

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
                raise _oom_error(exc, "inference", self.telemetry["model_key"], self.device) from exc
            raise
        finally:
            self.telemetry["inference_s"] = round(
                self.telemetry.get("inference_s", 0.0) + time.perf_counter() - started, 4)
            _record_peaks(self.telemetry, self.device)


def _peak_vram_mb(device: str) -> float | None:
    torch = _torch_if_imported()
    if torch is None or not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _record_peaks(telemetry: dict[str, Any], device: str) -> None:
    peak = _peak_vram_mb(device)
    if peak is not None:
        telemetry["peak_vram_mb"] = peak
    rss = _host_memory().get("process_peak_rss_mb")
    if rss is not None:  # the host-side peak: what CPU runs and CPU offload cost
        telemetry["process_peak_rss_mb"] = rss


def _shrink_hint(stage: str) -> str:
    if stage == "load":
        return ("the weights do not fit: set options.memory.cpu_offload (model or sequential), use dtype float16 or "
                "bfloat16, free the GPU from other processes (lower their keep_warm_s) or use a smaller model")
    return ("the activations do not fit: lower width/height, frame count or batch count, enable "
            "options.memory.vae_tiling / vae_slicing, or set options.memory.cpu_offload")


def _oom_error(exc: BaseException, stage: str, model_key: str, device: str) -> ModelOOMError:
    _empty_device_cache(device)  # before the snapshot, so it shows what is really still held
    return ModelOOMError(
        f"out of memory on {device} during {stage} of {model_key}",
        stage=stage,
        context={"stage": stage, "model_key": model_key, "device": device, "memory": memory_snapshot(device),
                 "hint": _shrink_hint(stage), "exception_type": type(exc).__name__,
                 "exception_message": str(exc)[:500]},
    )


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
) -> Iterator[ModelHandle]:
    """Load (or reuse) a model under the device lock; see the module docstring."""
    if not model_key:
        raise ConfigError("model_key must not be empty", field="model_key")
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    memory = memory or MemoryOptions()
    if memory.cpu_offload and resolved_device == "cpu":  # fail before taking the lock or loading anything
        raise ConfigError("memory.cpu_offload needs an accelerator; the device is cpu",
                          field="options.memory.cpu_offload")
    identity = (model_key, resolved_device, resolved_dtype, memory)
    global _warm
    with device_lock(resolved_device, lock_timeout_s):
        torch = _torch()
        if resolved_device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(resolved_device)
        with _cache_lock:
            entry = _warm
            reusable = (entry is not None and entry.identity == identity
                        and time.monotonic() - entry.last_used <= entry.keep_warm_s)
        evicted: str | None = None
        if not reusable:
            if entry is not None:
                evicted = evict()
            spec = LoadSpec(device=resolved_device, dtype=resolved_dtype, memory=memory)
            started = time.perf_counter()
            try:
                model = loader(spec)
            except BaseException as exc:
                # The half-built model is garbage now; free it before reporting.
                gc.collect()
                if is_oom_error(exc):
                    raise _oom_error(exc, "load", model_key, resolved_device) from exc
                _empty_device_cache(resolved_device)
                raise
            entry = _WarmEntry(model_key=model_key, identity=identity, model=model, device=resolved_device,
                               dtype=resolved_dtype, load_s=round(time.perf_counter() - started, 4),
                               applied_memory_options=list(spec.applied_memory_options), keep_warm_s=keep_warm_s,
                               last_used=time.monotonic())
            with _cache_lock:
                _load_counts[model_key] = _load_counts.get(model_key, 0) + 1
                _warm = entry
        assert entry is not None
        with _cache_lock:
            entry.in_use += 1
            entry.keep_warm_s = keep_warm_s
        telemetry: dict[str, Any] = {
            "model_key": model_key,
            "device": resolved_device,
            "dtype": resolved_dtype,
            "load_s": 0.0 if reusable else entry.load_s,
            "reused": reusable,
            "evicted": evicted,
            "load_count": load_count(model_key),
            "applied_memory_options": list(entry.applied_memory_options),
            "inference_s": 0.0,
        }
        handle = ModelHandle(entry.model, telemetry, resolved_device)
        try:
            yield handle
        except BaseException as exc:
            if is_oom_error(exc):
                raise _oom_error(exc, "inference", model_key, resolved_device) from exc
            raise
        finally:
            _record_peaks(telemetry, resolved_device)
            handle.model = None  # the cache owns the model; a handle kept by a caller must not pin it
            with _cache_lock:
                entry.in_use -= 1
                entry.last_used = time.monotonic()
                keep = _warm is entry and keep_warm_s > 0
            if keep:
                _arm_idle_timer(entry)
            elif _warm is entry:
                evict()

