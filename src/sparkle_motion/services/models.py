"""Request/response envelopes shared by every FunctionTool."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparkle_motion.artifacts import ArtifactManifest
from sparkle_motion.ids import ID_MAX_LENGTH, ID_PATTERN, is_valid_id


class ToolRequest(BaseModel):
    """Base of every tool request: where the outputs go.

    Outputs are stored under ``run_id/stage``; ``stage`` defaults to the tool id.
    Unknown fields are refused so that a typo never silently becomes a default.
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(default="adhoc", pattern=ID_PATTERN, max_length=ID_MAX_LENGTH,
                        description="run the outputs belong to (a safe id)")
    stage: str | None = Field(default=None, pattern=ID_PATTERN, max_length=ID_MAX_LENGTH,
                              description="artifact stage folder (a safe id); default: the tool id")

    @field_validator("run_id", "stage")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        # Both become path components under the artifact root.
        if value is not None and not is_valid_id(value):
            raise ValueError(f"must match {ID_PATTERN} without '..'")
        return value


class ToolResponse(BaseModel):
    """Base of every tool response; the framework fills the identity fields."""

    request_id: str = ""
    tool_id: str = ""
    backend: str = ""
    model: str = ""
    artifacts: list[ArtifactManifest] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
