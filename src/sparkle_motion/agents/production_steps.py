"""The pieces every production stage shares: a step's outcome, a stage failure, a tool request's cached payload.

They live apart from ``ProductionRun`` so that the stage modules (``dialogue_stage``
and the ones after it) can use them without importing the run that calls them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sparkle_motion.errors import SparkleError
from sparkle_motion.services import ToolRequest


class StageFailed(SparkleError):
    """A stage could not complete; ``context['stage']`` names it."""

    code = "stage_failed"
    http_status = 500


@dataclass
class StepOutcome:
    output: dict[str, Any]
    artifact_ids: list[str] = field(default_factory=list)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def tool_payload(request: ToolRequest) -> dict[str, Any]:
    """The JSON of a tool request: only the fields production set (tool defaults stay the tool's).

    It is also what a step's input hash covers, so it leaves out ``run_id`` and
    ``stage``: a step cached by one run is reused by the next.
    """
    return request.model_dump(mode="json", exclude_unset=True)
