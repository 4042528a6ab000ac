"""Stages of a run that go on beside the next ones, awaited by the first stage that reads their results.

``dialogue_audio`` (speech) and ``base_images`` → ``video_clips`` (pictures) do not
read each other's outputs: shot timing comes from the plan, not from the audio.
With a neural voice speech takes seconds of CPU, so production starts it on a
thread of its own and goes on with the pictures; ``lipsync``, the first stage that
reads the dialogue, waits for it. Its steps are recorded, cached and paused like
any other (``ProductionRun.step`` runs on that thread too).

A failure there is raised where the stage is awaited, so the run fails with the
stage's own error. When the run's thread ends before that (another stage failed,
a stop), it waits for the background stage first (``settle``), so no step of the
run is still being written after its thread is gone. A review gate waits for it
before the run shows ``awaiting_review`` (``finish``), so the gate sees every step
and a run continued past it finds the dialogue's steps cached.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

from sparkle_motion.logs import get_logger

log = get_logger("sparkle_motion.production")


class _Background:
    def __init__(self, name: str, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._run, work), name=f"stage-{name}", daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self.result = work()
        except BaseException as exc:  # handed to whoever awaits the stage
            self.error = exc


class BackgroundStages:
    """The stages of one run started with ``start`` and not yet awaited."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._running: dict[str, _Background] = {}
        self._lock = threading.Lock()

    def start(self, stage: str, work: Callable[[], Any]) -> None:
        """Run ``work`` (a stage of the run) on its own thread; ``result(stage)`` waits for it."""
        with self._lock:
            if stage in self._running:
                raise RuntimeError(f"stage {stage} is already running in the background")
            self._running[stage] = _Background(stage, work)
        log.info("stage_in_background", run_id=self.run_id, stage=stage)

    def started(self, stage: str) -> bool:
        with self._lock:
            return stage in self._running

    def result(self, stage: str) -> Any:
        """Wait for a background stage and return its result, or raise its error."""
        with self._lock:
            background = self._running.pop(stage)
        background.thread.join()
        if background.error is not None:
            raise background.error
        return background.result

    def finish(self) -> None:
        """Wait for every background stage before the run parks at a review gate; the first error is raised.

        Why before the gate's status is written: a reviewer (or a test) reading the
        run at its gate must see every step of the pass that led there, and a run
        whose dialogue failed fails now instead of waiting for a review it cannot pass.
        """
        with self._lock:
            stages = list(self._running)
        for stage in stages:
            self.result(stage)

    def settle(self) -> None:
        """Wait for every background stage (the run is failing for another reason); their errors are logged."""
        with self._lock:
            running, self._running = self._running, {}
        for stage, background in running.items():
            background.thread.join()
            if background.error is not None:
                log.warning("background_stage_failed_after_run_failed", run_id=self.run_id, stage=stage,
                            error=repr(background.error)[:300])
