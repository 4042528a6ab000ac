"""The items a production run is working on right now, and how far each has got.

``/status`` shows them (``RunStatus.items``): a step of the run is *in flight*
from the moment its tool call starts until it ends; for a long-running tool the
call is a job whose progress (step, total, phase, ETA) the ToolClient hands over
after every poll. Only the process driving the run knows this, so it is kept in
memory, not in the registry: after a crash nothing is in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sparkle_motion.agents.production_models import ItemProgress


def format_eta(seconds: float) -> str:
    """``250`` → ``4m10s``; ``12.4`` → ``12s``; ``3725`` → ``1h02m``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def summarize(item: ItemProgress) -> str:
    """One line, e.g. ``video_clips shot_002: step 31/50, eta 4m10s``."""
    where = f"{item.stage} {item.item}" if item.item else item.stage
    if item.step is None:
        return f"{where}: {item.state}"
    text = f"{where}: step {item.step}/{item.total}" if item.total else f"{where}: step {item.step}"
    return text + (f", eta {format_eta(item.eta_s)}" if item.eta_s is not None else "")


class InFlightItems:
    """Thread-safe table of the run's in-flight items; each thread works on at most one item at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str | None], ItemProgress] = {}
        self._current = threading.local()

    @contextmanager
    def working_on(self, stage: str, item: str | None, tool_id: str | None) -> Iterator[None]:
        """The calling thread works on (stage, item) for the block; its tool's job reports land on it."""
        key = (stage, item)
        entry = ItemProgress(stage=stage, item=item, tool_id=tool_id, state="running")
        with self._lock:
            self._items[key] = entry.model_copy(update={"summary": summarize(entry)})
        self._current.key = key
        try:
            yield
        finally:
            self._current.key = None
            with self._lock:
                self._items.pop(key, None)

    def on_job_view(self, view: dict[str, Any]) -> None:
        """A ToolClient ``on_progress`` callback: the job view of the calling thread's item."""
        key = getattr(self._current, "key", None)
        if key is None:
            return
        progress = view.get("progress") or {}
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return
            entry = entry.model_copy(update={
                "job_id": view.get("job_id"), "state": view.get("state", entry.state),
                "step": progress.get("step"), "total": progress.get("total"), "phase": progress.get("phase", ""),
                "eta_s": progress.get("eta_s"),
            })
            self._items[key] = entry.model_copy(update={"summary": summarize(entry)})

    def snapshot(self) -> list[ItemProgress]:
        with self._lock:
            return list(self._items.values())
