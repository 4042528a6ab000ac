"""The per-process warm cache: one model per tool process, kept for ``keep_warm_s``, evicted on demand.

A model leaves in three ways, all through :func:`evict` (drop the references,
``gc.collect()``, ``torch.cuda.empty_cache()``, drop this process's residency
record so the other processes see the memory as free):

* a different model key is asked for in this process;
* it idled for ``keep_warm_s`` (a timer);
* another process on the same device needs the memory and asked for it through
  the residency record (:mod:`sparkle_motion.gpu.residency`) — honoured only
  while the model is not in use.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sparkle_motion.gpu import residency
from sparkle_motion.gpu.devices import _empty_device_cache


@dataclass
class WarmEntry:
    model_key: str
    identity: tuple[Any, ...]
    model: Any
    device: str
    dtype: str
    load_s: float
    applied_memory_options: list[str]
    keep_warm_s: float
    last_used: float
    extra: dict[str, Any] = field(default_factory=dict)   # plan, resident bytes, host peak at load
    in_use: int = 0
    timer: threading.Timer | None = None


_cache_lock = threading.RLock()
_warm: WarmEntry | None = None
_load_counts: dict[str, int] = {}


def load_count(model_key: str) -> int:
    """How many times this process loaded ``model_key`` (reuse does not count)."""
    with _cache_lock:
        return _load_counts.get(model_key, 0)


def loaded_key() -> str | None:
    """The model_key of the warm model in this process, if any."""
    with _cache_lock:
        return _warm.model_key if _warm is not None else None


def current() -> WarmEntry | None:
    with _cache_lock:
        return _warm


def claim(identity: tuple[Any, ...]) -> WarmEntry | None:
    """The warm entry when it matches ``identity`` and is still fresh, marked in use — atomically.

    Atomic so that an eviction request honoured by the watcher thread can
    never free a model between "it is warm" and "it is in use".
    """
    with _cache_lock:
        entry = _warm
        if entry is None or entry.identity != identity or time.monotonic() - entry.last_used > entry.keep_warm_s:
            return None
        entry.in_use += 1
        return entry


def install(entry: WarmEntry) -> None:
    """Make a freshly loaded model the warm one, in use by the caller."""
    global _warm
    with _cache_lock:
        _load_counts[entry.model_key] = _load_counts.get(entry.model_key, 0) + 1
        entry.in_use += 1
        _warm = entry


def release(entry: WarmEntry, keep_warm_s: float) -> None:
    """The caller is done: keep the model warm for ``keep_warm_s`` (0: evict now)."""
    with _cache_lock:
        entry.in_use -= 1
        entry.last_used = time.monotonic()
        entry.keep_warm_s = keep_warm_s
        ours = _warm is entry
        keep = ours and keep_warm_s > 0
    if keep:
        _arm_idle_timer(entry)
    elif ours:
        evict()


def evict() -> str | None:
    """Drop the warm model (refs, gc, device cache, residency record); return the key that was evicted."""
    global _warm
    with _cache_lock:
        entry, _warm = _warm, None
    return _free(entry)


def evict_if_idle() -> bool:
    """Evict unless the model is in use in this process (another process asked); True when none is left."""
    global _warm
    with _cache_lock:
        entry = _warm
        if entry is not None and entry.in_use:
            return False
        _warm = None
    _free(entry)
    return True


def _free(entry: WarmEntry | None) -> str | None:
    if entry is None:
        return None
    if entry.timer is not None:
        entry.timer.cancel()
    device, key = entry.device, entry.model_key
    entry.model = None
    del entry
    gc.collect()
    _empty_device_cache(device)
    residency.forget(device)
    return key


def _evict_if_expired(entry: WarmEntry) -> None:
    # Timer thread: frees VRAM for other processes once the model has idled for keep_warm_s.
    with _cache_lock:
        if _warm is not entry or entry.in_use or time.monotonic() - entry.last_used < entry.keep_warm_s:
            return
    evict()


def _arm_idle_timer(entry: WarmEntry) -> None:
    if entry.timer is not None:
        entry.timer.cancel()
    if entry.keep_warm_s <= 0:
        return
    timer = threading.Timer(entry.keep_warm_s, _evict_if_expired, args=(entry,))
    timer.daemon = True
    timer.name = f"gpu-keep-warm-{entry.model_key}"[:60]
    entry.timer = timer
    timer.start()
