"""Who holds what on a device, across tool processes: residency records and eviction requests.

Each tool is its own process and keeps its model warm for ``keep_warm_s``.
Before a model loads, :func:`make_room` compares what it needs with the
device's free memory; when it does not fit, it asks the processes holding
warm models on that device to evict, waits for them, and then the load goes on.

The mechanism is a **residency record per device** under ``SPARKLE_HOME``
(``gpu/residency-<device>.json``, guarded by a ``filelock``) rather than an
``/evict`` call to the sibling services, because

* a process knows only its own port, not which siblings share its device;
  the file names exactly the processes that hold memory there (pid, tool,
  model key, bytes) and nobody else;
* a dead process leaves no lie behind: records of pids that no longer exist
  are dropped on every read, where an HTTP call would have to time out;
* no HTTP server is needed: a plain ``model_context`` user (tests, bench,
  the notebook) takes part the same way.

A warm process runs one daemon thread that polls its record every
``POLL_S`` (:func:`register`); when it finds an eviction request from a live
pid and its model is idle, it evicts (gc + ``torch.cuda.empty_cache()``) and
its record disappears, which is what the requester waits for.  The requester
holds the device lock while waiting, and eviction never needs that lock, so
two tools wanting the device cannot deadlock; a wait past the caller's
deadline clears its requests and raises ``DeviceBusyError`` (503 + Retry-After).

Test hook: with a simulated card (``MemoryOptions.simulate_total_gb``) the
free memory is that total minus the bytes of every live record on the device,
in place of ``torch.cuda.mem_get_info``, so two CPU processes exercise the
whole protocol.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sparkle_motion.gpu.devices import device_file_key
from sparkle_motion.gpu.lock import DEVICE_BUSY_RETRY_AFTER_S, DeviceBusyError
from sparkle_motion.logs import get_logger

#: How often a warm process looks for an eviction request, and a requester for the answer.
POLL_S = 0.2
_FILE_LOCK_TIMEOUT_S = 30.0
_log = get_logger("sparkle_motion.gpu.residency")


def residency_path(device: str) -> Path:
    from sparkle_motion.config import get_settings

    folder = get_settings().home / "gpu"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"residency-{device_file_key(device)}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


@contextmanager
def _records(device: str) -> Iterator[dict[str, dict[str, Any]]]:
    """The device's live records, locked; changes made to the dict are written back."""
    from filelock import FileLock

    path = residency_path(device)
    with FileLock(str(path) + ".lock", timeout=_FILE_LOCK_TIMEOUT_S, thread_local=False):
        try:
            records = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            records = {}   # a torn file from a killed writer: the live processes re-register
        live = {pid: r for pid, r in records.items() if _alive(int(pid))}
        snapshot = json.dumps(records, sort_keys=True)
        yield live
        if json.dumps(live, sort_keys=True) != snapshot:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(live, sort_keys=True))
            tmp.replace(path)


def records(device: str) -> list[dict[str, Any]]:
    """Every live process's record on ``device`` (diagnostics, tests, :func:`make_room`)."""
    with _records(device) as live:
        return [dict(r) for r in live.values()]


def used_bytes(device: str) -> int:
    return sum(int(r["bytes"]) for r in records(device))


# --------------------------------------------------------------------------- the holder's side

class _Watcher:
    """This process's one record per device and the thread that answers eviction requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.on_request: dict[str, Callable[[], bool]] = {}
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return
            self.thread = threading.Thread(target=self._run, name="gpu-residency-watch", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            with self.lock:
                watched = dict(self.on_request)
                if not watched:
                    self.thread = None
                    return
            for device, on_request in watched.items():
                try:
                    request = _pending_request(device)
                    if request is not None and on_request():
                        _log.info("gpu.evicted_on_request", device=device, **request)
                except Exception as exc:  # a broken records file must not kill the watcher for good
                    _log.warning("gpu.residency_watch_failed", device=device, error=str(exc)[:300])
            time.sleep(POLL_S)


_watcher = _Watcher()


def register(device: str, *, tool: str, model_key: str, bytes_: int, plan: str | None,
             on_request: Callable[[], bool]) -> None:
    """Record that this process holds ``bytes_`` on ``device``; ``on_request()`` evicts when idle (True: gone)."""
    pid = os.getpid()
    with _records(device) as live:
        live[str(pid)] = {"pid": pid, "tool": tool, "model_key": model_key, "bytes": int(bytes_), "plan": plan,
                          "since": time.time(), "last_used": time.time(), "evict_request": None}
    with _watcher.lock:
        _watcher.on_request[device] = on_request
    _watcher.start()


def touch(device: str) -> None:
    """This process is using its model now: refresh ``last_used`` and drop requests (the asker has gone on)."""
    pid = str(os.getpid())
    with _records(device) as live:
        if pid in live:
            live[pid] = {**live[pid], "last_used": time.time(), "evict_request": None}


def forget(device: str) -> None:
    """This process no longer holds a model on ``device``."""
    with _watcher.lock:
        _watcher.on_request.pop(device, None)
    pid = str(os.getpid())
    with _records(device) as live:
        live.pop(pid, None)


def _pending_request(device: str) -> dict[str, Any] | None:
    with _records(device) as live:
        record = live.get(str(os.getpid()))
        request = record.get("evict_request") if record else None
    if request is None or not _alive(int(request["by_pid"])):
        return None
    return request


# --------------------------------------------------------------------------- the requester's side

def _ask(device: str, pids: list[int], *, tool: str, need_bytes: int) -> None:
    me = os.getpid()
    with _records(device) as live:
        for pid in pids:
            if str(pid) in live:
                live[str(pid)] = {**live[str(pid)], "evict_request": {
                    "by_pid": me, "by_tool": tool, "need_bytes": int(need_bytes), "at": time.time()}}


def _withdraw(device: str) -> None:
    me = os.getpid()
    with _records(device) as live:
        for pid, record in list(live.items()):
            request = record.get("evict_request")
            if request is not None and int(request["by_pid"]) == me:
                live[pid] = {**record, "evict_request": None}


def make_room(device: str, need_bytes: int, free_bytes: Callable[[], int], deadline: float, *,
              tool: str) -> dict[str, Any]:
    """Ask warm models in other processes to leave until ``need_bytes`` fit; returns what happened.

    The least recently used go first, only as many as cover the shortfall; if
    that is not enough the rest are asked too.  When everyone has left and it
    still does not fit, the load goes on anyway (the card is simply too small,
    or memory is held outside Sparkle): the result says ``short_bytes`` and a
    real shortage becomes the typed ``ModelOOMError`` of the load.
    """
    started = time.monotonic()
    free = free_bytes()
    report: dict[str, Any] = {"need_bytes": int(need_bytes), "free_bytes": int(free), "asked": [], "waited_s": 0.0}
    me = os.getpid()
    asked: set[int] = set()
    try:
        while free < need_bytes:
            others = sorted((r for r in records(device) if r["pid"] != me), key=lambda r: r.get("last_used", 0))
            waiting = [r for r in others if r["pid"] in asked]
            fresh = [r for r in others if r["pid"] not in asked]
            if not waiting:
                if not fresh:
                    report["short_bytes"] = int(need_bytes - free)
                    break
                batch, covered = [], free
                for record in fresh:
                    batch.append(record)
                    covered += int(record["bytes"])
                    if covered >= need_bytes:
                        break
                _ask(device, [r["pid"] for r in batch], tool=tool, need_bytes=need_bytes)
                asked.update(r["pid"] for r in batch)
                report["asked"] += [{k: r[k] for k in ("pid", "tool", "model_key", "bytes")} for r in batch]
                _log.info("gpu.evict_requested", device=device, need_bytes=need_bytes, free_bytes=free,
                          pids=[r["pid"] for r in batch])
            if time.monotonic() >= deadline:
                raise DeviceBusyError(
                    f"device {device} is held by warm models that did not leave in time",
                    retry_after=DEVICE_BUSY_RETRY_AFTER_S,
                    context={"device": device, "need_bytes": int(need_bytes), "free_bytes": int(free),
                             "waiting_for": [{k: r[k] for k in ("pid", "tool", "model_key")} for r in waiting],
                             "waited_s": round(time.monotonic() - started, 3)})
            time.sleep(POLL_S / 2)
            free = free_bytes()
    finally:
        _withdraw(device)
        report["waited_s"] = round(time.monotonic() - started, 3)
    report["free_bytes_after"] = int(free)
    return report


# --------------------------------------------------------------------------- measured peaks

def _peaks_path() -> Path:
    return residency_path("peaks").with_name("peaks.json")


def remembered_peak(key: str) -> int | None:
    """The peak bytes measured for ``key`` (model key + plan) at its last load, if any."""
    path = _peaks_path()
    try:
        value = json.loads(path.read_text()).get(key) if path.exists() else None
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, (int, float)) else None


def remember_peak(key: str, peak_bytes: int) -> None:
    """Persist the peak of the current load of ``key`` (the next process's estimate of what it needs)."""
    from filelock import FileLock

    path = _peaks_path()
    with FileLock(str(path) + ".lock", timeout=_FILE_LOCK_TIMEOUT_S, thread_local=False):
        try:
            peaks = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            peaks = {}
        if peaks.get(key) != int(peak_bytes):
            peaks[key] = int(peak_bytes)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(peaks, sort_keys=True))
            tmp.replace(path)
