"""Run registry: runs, step executions (StepExecutionRecord) and run logs in SQLite."""

from sparkle_motion.runs.heartbeat import Heartbeat
from sparkle_motion.runs.models import (
    RUN_TRANSITIONS,
    RunEvent,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)
from sparkle_motion.runs.registry import RunRegistry, RunStateError, error_to_dict

StepExecutionRecord = StepRecord

__all__ = ["RUN_TRANSITIONS", "Heartbeat", "RunEvent", "RunRecord", "RunRegistry", "RunStateError", "RunStatus",
           "StepExecutionRecord", "StepRecord", "StepStatus", "error_to_dict"]
