"""The heartbeat of a process that drives runs: how the registry tells a live owner from a dead one.

:meth:`RunRegistry.mark_interrupted` takes a ``running`` run whose heartbeat is
older than ``stale_after_s`` as orphaned.  One thread per process beats for
every run the process drives (the production service passes the runs of its
live worker threads), instead of one thread per run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from sparkle_motion.runs.registry import RunRegistry, RunStateError


class Heartbeat:
    """Every ``interval_s``, :meth:`RunRegistry.heartbeat` each run that ``run_ids()`` names."""

    def __init__(self, registry: RunRegistry, run_ids: Callable[[], Iterable[str]], interval_s: float,
                 *, name: str = "run-heartbeat") -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._run_ids = run_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating; a beat in progress finishes first."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 5.0)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            for run_id in list(self._run_ids()):
                try:
                    self.registry.heartbeat(run_id)
                except RunStateError:
                    pass  # paused or finished: only running runs carry a heartbeat
