"""The queue of films: production_agent runs at most ``max_concurrent_runs`` films at once.

Why: a user with twenty ideas sends twenty runs; running them all at once would
thrash one machine (every run contends for the same tools and device), so runs
beyond the profile's ``max_concurrent_runs`` wait as ``queued``, first come first
served. The queue lives in the run registry (SQLite: status ``queued`` and
``queue_seq``), so it survives a restart of production_agent: on start the
service resumes its interrupted runs (``auto_resume``) and then starts queued runs,
in order, as slots allow. A queued run that is stopped ends ``cancelled``.

The slots are counted in this process (the runs it drives); the registry is the
source of truth for who waits and in what order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sparkle_motion.errors import ConflictError, SparkleError
from sparkle_motion.logs import get_logger
from sparkle_motion.runs import RunRegistry

__all__ = ["FilmQueue"]

log = get_logger("sparkle_motion.film_queue")


class FilmQueue:
    """Admits runs into at most ``max_concurrent`` slots; the others wait, FIFO, in the registry.

    ``start(run_id)`` is the service's way to begin driving a queued run (it must
    move the run to ``running`` or raise); the queue calls it when a slot frees.
    """

    def __init__(self, registry: RunRegistry, max_concurrent: int, start: Callable[[str], None]) -> None:
        self.registry = registry
        self.max_concurrent = max_concurrent
        self._start = start
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, run_id: str, *, ahead_of_queue: bool = False) -> bool:
        """Take a slot for ``run_id`` (True), or put it at the end of the queue (False).

        A new run does not overtake runs already waiting; ``ahead_of_queue`` lets a
        run that was already running (an automatic resume after a restart) take a
        free slot before them.
        """
        with self._lock:
            if run_id in self._active:
                return True
            if self.registry.get_run(run_id).status == "queued":
                raise ConflictError(f"run {run_id} is queued (position {self.position(run_id)}); it starts when "
                                    "a slot frees, or stop it to cancel it", field="run_id", code="run_queued")
            waiting = self.registry.queued_run_ids()
            if len(self._active) < self.max_concurrent and (ahead_of_queue or not waiting):
                self._active.add(run_id)
                return True
            self.registry.enqueue(run_id)
        self.registry.log(run_id, "info", f"queued: {len(self._active)} of {self.max_concurrent} run slots busy",
                          position=self.position(run_id))
        log.info("run_queued", run_id=run_id, position=self.position(run_id))
        return False

    def release(self, run_id: str, *, dispatch: bool = True) -> None:
        """``run_id`` stopped running here (ended, or its start failed): give its slot to the next.

        A start that failed passes ``dispatch=False``: the caller (``dispatch`` itself, or
        the service's start) decides what comes next, so a run that keeps failing to start
        is not picked again and again.
        """
        with self._lock:
            self._active.discard(run_id)
        if dispatch:
            self.dispatch()

    def dispatch(self) -> None:
        """Start queued runs, first in line first, while slots are free."""
        while True:
            with self._lock:
                if len(self._active) >= self.max_concurrent:
                    return
                waiting = self.registry.queued_run_ids()
                if not waiting:
                    return
                run_id = waiting[0]
                self._active.add(run_id)
            try:
                self._start(run_id)
            except SparkleError as exc:
                # The run could not start (its plan is gone, it was cancelled meanwhile): it leaves the
                # queue with the reason on record, and the slot goes to the next one.
                with self._lock:
                    self._active.discard(run_id)
                log.error("queued_run_start_failed", run_id=run_id, error=exc.to_dict())
                if self.registry.get_run(run_id).status == "queued":
                    self.registry.set_status(run_id, "failed", error=exc.to_dict())
                    self.registry.log(run_id, "error", f"could not start from the queue: {exc.message}")

    def cancel(self, run_id: str) -> None:
        """Stop a queued run before it started: it ends ``cancelled``."""
        self.registry.set_status(run_id, "cancelled")
        self.registry.log(run_id, "info", "cancelled while queued")

    def position(self, run_id: str) -> int | None:
        """1 for the next run to start; None when ``run_id`` is not queued."""
        return self.positions().get(run_id)

    def positions(self) -> dict[str, int]:
        return {run_id: place for place, run_id in enumerate(self.registry.queued_run_ids(), start=1)}
