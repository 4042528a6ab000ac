"""Pause and stop of a production run, as the run's own thread sees them.

``/control/pause|stop`` only change the run's status in the registry; the thread
driving the run reads it before every step (:meth:`RunControl.checkpoint`) and,
while a long-running tool's job is in flight, between polls
(:meth:`RunControl.stop_requested`): a stop cancels the job, a pause lets it finish.
"""

from __future__ import annotations

import time

from sparkle_motion.errors import ConflictError
from sparkle_motion.runs import RunRegistry


class RunStopped(ConflictError):
    code = "run_stopped"


class RunControl:
    """Pause/stop requests, read from the registry before every step."""

    POLL_S = 0.2

    def __init__(self, registry: RunRegistry, run_id: str) -> None:
        self.registry = registry
        self.run_id = run_id

    def stop_requested(self) -> str | None:
        """A reason to cancel the tool job in flight ("run stopped"), or None; a pause lets it finish."""
        return "run stopped" if self.registry.get_run(self.run_id).status == "stopped" else None

    def checkpoint(self) -> None:
        announced = False
        while True:
            status = self.registry.get_run(self.run_id).status
            if status == "stopped":
                raise RunStopped("run stopped by request", context={"run_id": self.run_id})
            if status != "paused":
                if announced:
                    self.registry.log(self.run_id, "info", "resumed")
                return
            if not announced:
                self.registry.log(self.run_id, "info", "paused before the next step")
                announced = True
            time.sleep(self.POLL_S)
