"""Records of the run registry: runs, step executions and log events."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["pending", "queued", "running", "paused", "stopped", "cancelled", "succeeded", "failed",
                    "interrupted", "awaiting_review"]
StepStatus = Literal["running", "succeeded", "failed", "skipped", "cached"]
RunMode = Literal["dry", "run"]
QAMode = Literal["full", "skip"]
LogLevel = Literal["debug", "info", "warning", "error"]

RUN_STATUSES: tuple[str, ...] = RunStatus.__args__  # type: ignore[attr-defined]
STEP_STATUSES: tuple[str, ...] = StepStatus.__args__  # type: ignore[attr-defined]
FINISHED_STEP_STATUSES: tuple[str, ...] = ("succeeded", "failed", "skipped", "cached")
LOG_LEVELS: tuple[str, ...] = LogLevel.__args__  # type: ignore[attr-defined]

#: Which status a run may move to from each status.  succeeded and stopped are
#: final; failed and interrupted runs may be resumed (cached steps make that cheap).
#: awaiting_review: stopped at a review gate (agents/review_gates.py); no thread drives it, so
#: a restart leaves it as it is, and the review moves it back to running.
#: queued runs wait for a slot (agents/film_queue.py); a queued run that is stopped ends cancelled.
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"queued", "running", "stopped", "failed"}),
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"paused", "stopped", "succeeded", "failed", "interrupted", "awaiting_review"}),
    "paused": frozenset({"queued", "running", "stopped", "failed"}),
    "interrupted": frozenset({"queued", "running", "stopped", "failed"}),
    "failed": frozenset({"queued", "running"}),
    "awaiting_review": frozenset({"queued", "running", "stopped", "failed"}),
    "stopped": frozenset(),
    "cancelled": frozenset(),
    "succeeded": frozenset(),
}
FINAL_RUN_STATUSES = frozenset({"stopped", "cancelled", "succeeded", "failed"})


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    plan_id: str | None = None
    plan_uri: str | None = None
    mode: RunMode = "run"
    qa_mode: QAMode = "full"
    status: RunStatus
    current_stage: str | None = None
    progress: float = Field(ge=0.0, le=1.0)
    error: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    owner_pid: int | None = Field(default=None, description="pid of the process driving the run while running")
    owner_host: str | None = None
    heartbeat_at: str | None = None
    created_at: str
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None
    queue_seq: int | None = Field(default=None, description="place in the queue while queued (smaller first)")
    queue_position: int | None = Field(default=None, description="1 = next to start; filled in by "
                                       "production_agent's /runs, not stored")


class StepRecord(BaseModel):
    """One execution of one stage for one item: the StepExecutionRecord.

    ``item`` names the unit of work inside the stage: a shot or base image id, a
    dialogue line (``line_003``), ``timeline``, a QA pass (``shot_001.qa``,
    ``final.qa``), or None when the stage is one unit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_id: str
    run_id: str
    stage: str
    item: str | None = None
    attempt: int = Field(ge=1)
    status: StepStatus
    input_hash: str | None = None
    started_at: str
    completed_at: str | None = None
    duration_s: float | None = Field(default=None, ge=0)
    artifact_ids: list[str] = Field(default_factory=list)
    output: Any = None
    error: dict[str, Any] | None = None


class RunEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: int
    run_id: str
    ts: str
    level: LogLevel
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
