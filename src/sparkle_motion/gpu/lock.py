"""The cross-process device lock: one tool process loads or runs heavy weights on a device at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparkle_motion.errors import ServiceBusyError
from sparkle_motion.gpu.devices import device_file_key

#: Seconds a caller is told to wait when the device is held by another process.
DEVICE_BUSY_RETRY_AFTER_S = 10.0


class DeviceBusyError(ServiceBusyError):
    """Another process holds the device lock (HTTP 503 with Retry-After)."""

    code = "device_busy"



def locks_dir() -> Path:
    from sparkle_motion.config import get_settings

    path = get_settings().home / "locks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_path(device: str) -> Path:
    return locks_dir() / f"{device_file_key(device)}.lock"


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


