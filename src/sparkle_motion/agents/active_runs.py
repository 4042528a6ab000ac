"""The production runs one process is driving: the table the ADK workflow's nodes read.

A workflow node gets only ``ctx.state`` (a copy, for ``adk web``), not the
:class:`ProductionRun` that does its stage's work; it finds the run here by
``run_id``.  The production service adds a run before its Runner starts and
removes it when the run ends.  A message that names no run in the table carries
a plan (typed into ``adk web``): the table hands it to the ad-hoc starter it was
built with, so the workflow never needs to know who records runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sparkle_motion.agents.production_run import ProductionRun
from sparkle_motion.errors import InvalidInputError

#: Records a new run from a message that carries a plan and returns its ProductionRun.
AdhocStarter = Callable[[Any], ProductionRun]


class ActiveRuns:
    """Run id → :class:`ProductionRun`, thread-safe (the service drives each run on a worker thread)."""

    def __init__(self, adhoc: AdhocStarter | None = None) -> None:
        self._runs: dict[str, ProductionRun] = {}
        self._lock = threading.Lock()
        self._adhoc = adhoc

    def add(self, run: ProductionRun) -> None:
        with self._lock:
            self._runs[run.run_id] = run

    def remove(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def get(self, run_id: str | None) -> ProductionRun | None:
        with self._lock:
            return self._runs.get(run_id) if run_id else None

    def require(self, run_id: str | None) -> ProductionRun:
        run = self.get(run_id)
        if run is None:
            raise InvalidInputError(f"no active production run {run_id!r} in this process", field="run_id")
        return run

    def start_adhoc(self, message: Any) -> ProductionRun:
        """Start a run from a message that carries a plan, and add it to the table."""
        if self._adhoc is None:
            raise InvalidInputError("this process starts no ad-hoc runs; send {'run_id': ...} of an active run",
                                    field="message")
        run = self._adhoc(message)
        self.add(run)
        return run
