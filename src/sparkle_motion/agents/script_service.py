"""script_agent's HTTP service (registry port 5001): ``POST /invoke`` → a stored, validated plan.

Served by ``python -m sparkle_motion.services script_agent`` (``create_app()``);
``install_common`` gives it the mesh's /health, /ready, request ids, bearer auth,
body limit and error format, so clients treat it like any FunctionTool.

Each call stores one ``movie_plan`` artifact (stage ``plan``) holding
``{request, validated_plan, raw_model_output, generated_at, metadata, schema_uri}``;
production_agent and ``sparkle-motion produce`` read it back by ``artifact_uri``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

import anyio
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparkle_motion.agents.script_protocol import PLANNER_MODEL
from sparkle_motion.agents.script_agent import (
    AGENT_NAME,
    MAX_ATTEMPTS,
    PlanRequest,
    PlanResult,
    agenerate_plan_result,
    model_name,
    resolve_model,
)
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import ConfigError
from sparkle_motion.ids import ID_MAX_LENGTH, ID_PATTERN, is_valid_id
from sparkle_motion.schemas_export import SCHEMA_SUFFIX
from sparkle_motion.services import install_common
from sparkle_motion.services.app import current_request_id
from sparkle_motion.services.openapi import error_responses

VERSION = "1.0.0"
PLAN_STAGE = "plan"
PLAN_ARTIFACT_TYPE = "movie_plan"
# Where `sparkle-motion schemas export` writes the MoviePlan JSON Schema, relative
# to the project root (the same path inside the wheel's data directory).
SCHEMA_URI = f"schemas/MoviePlan{SCHEMA_SUFFIX}"
MAX_BODY_BYTES = 64 * 1024  # an idea and a few options; nothing large travels here

__all__ = ["SCHEMA_MODELS", "ScriptAgentRequest", "ScriptAgentResponse", "PlanSummary", "create_app"]


class ScriptAgentRequest(PlanRequest):
    """``POST /invoke`` body: the idea, optional controls and the run the plan belongs to."""

    # strict: the HTTP body is JSON, and a JSON "5" is not what the schema asks for.
    model_config = ConfigDict(extra="forbid", strict=True)

    run_id: str = Field("adhoc", pattern=ID_PATTERN, max_length=ID_MAX_LENGTH,
                        description="run the plan artifact is stored under (a safe id)")

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        # It becomes a directory under the artifact root.
        if not is_valid_id(value):
            raise ValueError(f"must match {ID_PATTERN} without '..'")
        return value


class PlanSummary(BaseModel):
    title: str
    shots: int
    dialogue_lines: int
    characters: list[str]
    runtime_s: float
    seed: int
    source: str
    model: str
    attempts: int = Field(ge=1, le=MAX_ATTEMPTS)
    planned_offline: bool


class ScriptAgentResponse(BaseModel):
    status: Literal["ok"] = "ok"
    artifact_uri: str
    request_id: str
    schema_uri: str
    plan_id: str
    plan_summary: PlanSummary


SCHEMA_MODELS = {"script_agent.request": ScriptAgentRequest, "script_agent.response": ScriptAgentResponse}


def summarize_result(result: PlanResult) -> PlanSummary:
    plan = result.plan
    return PlanSummary(
        title=plan.title, shots=len(plan.shots), dialogue_lines=len(plan.dialogue_lines),
        characters=[c.name for c in plan.characters], runtime_s=round(plan.runtime_s, 3),
        seed=plan.metadata.seed, source=plan.metadata.source, model=result.model, attempts=result.attempts,
        planned_offline=result.model == PLANNER_MODEL,
    )


class ScriptService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ArtifactStore(settings.home)
        self.profile = settings.tool_profile(AGENT_NAME)
        self.config_error: ConfigError | None = None
        self.model: Any = None
        try:
            # Fail fast: a gemini model without a key (or LiteLLM not installed) is
            # reported by /ready and by every /invoke, before any model call.
            self.model = resolve_model(settings=settings)
        except ConfigError as exc:
            self.config_error = exc

    async def invoke(self, request: ScriptAgentRequest) -> ScriptAgentResponse:
        if self.config_error is not None:
            raise self.config_error
        request_id = current_request_id()
        plan_request = PlanRequest.model_validate(request.model_dump(exclude={"run_id"}))
        result = await agenerate_plan_result(plan_request, model=self.model, settings=self.settings)
        plan = result.plan
        summary = summarize_result(result)
        record = {
            "request": request.model_dump(mode="json"),
            "validated_plan": plan.model_dump(mode="json"),
            "raw_model_output": result.raw_model_output,
            "generated_at": datetime.now(timezone.utc).isoformat(),
            "metadata": {
                "tool": AGENT_NAME, "version": VERSION, "request_id": request_id,
                "backend": self.profile.backend, "model": result.model, "attempts": result.attempts,
                "violations_by_attempt": result.violations_by_attempt,
                "planned_offline": summary.planned_offline, "elapsed_s": round(result.elapsed_s, 4),
                "shot_count": summary.shots, "dialogue_lines": summary.dialogue_lines,
            },
            "schema_uri": SCHEMA_URI,
        }
        provenance = {"tool": AGENT_NAME, "backend": self.profile.backend, "model": result.model,
                      "seed": plan.metadata.seed, "request_id": request_id, "plan_id": plan.plan_id,
                      "attempts": result.attempts, "timings": {"generate_s": round(result.elapsed_s, 4)}}
        manifest = await anyio.to_thread.run_sync(
            lambda: self.store.put_json(request.run_id, PLAN_STAGE, PLAN_ARTIFACT_TYPE, record, provenance))
        return ScriptAgentResponse(artifact_uri=manifest.uri, request_id=request_id, schema_uri=SCHEMA_URI,
                                   plan_id=plan.plan_id, plan_summary=summary)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = ScriptService(settings)
    app = FastAPI(title=AGENT_NAME, version=VERSION, docs_url=None, redoc_url=None,
                  description="Turns a film idea into a validated MoviePlan (ADK LlmAgent).")
    readiness = install_common(app, AGENT_NAME, VERSION, settings, max_body_bytes=MAX_BODY_BYTES)
    if service.config_error is not None:
        readiness.mark_failed(service.config_error)
    app.state.script_service = service

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return {
            "tool_id": AGENT_NAME, "version": VERSION, "backends": list(settings.tool(AGENT_NAME).backends),
            "active_backend": service.profile.backend,
            "model": model_name(service.model) if service.model is not None else service.profile.model,
            "state": readiness.state, "max_attempts": MAX_ATTEMPTS, "schema_uri": SCHEMA_URI,
            "limits": {"max_body_bytes": MAX_BODY_BYTES},
            "request_schema": ScriptAgentRequest.model_json_schema(mode="validation"),
            "response_schema": ScriptAgentResponse.model_json_schema(mode="serialization"),
            "request_id": current_request_id(),
        }

    @app.post("/invoke", response_model=ScriptAgentResponse, responses=error_responses(503, 507))
    async def invoke(request: ScriptAgentRequest) -> ScriptAgentResponse:
        return await service.invoke(request)

    return app
