"""Echo request/response envelopes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sparkle_motion.services import ToolRequest, ToolResponse


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=512, description="artifact+fs:// URI of a text artifact to append")


class EchoRequest(ToolRequest):
    text: str = Field(min_length=1, max_length=4096)
    inputs: list[EchoInput] = Field(default_factory=list, max_length=8)
    repeat: int = Field(default=1, ge=1, le=8)
    # Test hooks: hold the concurrency slot for a while / make the backend raise.
    hold_s: float = Field(default=0.0, ge=0.0, le=10.0)
    fail: bool = False


class EchoResponse(ToolResponse):
    text: str
    size_bytes: int
