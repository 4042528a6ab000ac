"""production_agent's studio routes: the page at ``/``, its static files, a plan from an idea, plan checks.

Why here and not in the browser: the page talks only to production_agent (one
origin, one token), so asking script_agent for a plan and running the plan's
validators happen server-side through these thin routes; the pages themselves
are plain ES modules under ``static/`` with no build step and no CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from sparkle_motion.agents.script_agent import PlanRequest
from sparkle_motion.config import Settings
from sparkle_motion.artifacts import ArtifactManifest, ArtifactStore
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.ids import validate_id
from sparkle_motion.plan.render_models import render_models
from sparkle_motion.plan.validation import plan_violations, read_plan_json, validate_plan
from sparkle_motion.services.app import current_request_id
from sparkle_motion.services.client import ToolClient
from sparkle_motion.services.openapi import error_responses
from sparkle_motion.studio.subtitles import srt_to_vtt

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/studio/static"
MAX_SRT_BYTES = 1 << 20
PLAN_TIMEOUT_S = 600.0   # script_agent may retry the model three times


class StudioPlanRequest(PlanRequest):
    """``POST /studio/plan``: the New film form (the same fields as ``sparkle-motion plan``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StudioPlan(BaseModel):
    request_id: str = ""
    plan: dict[str, Any]
    plan_uri: str
    plan_summary: dict[str, Any] = Field(default_factory=dict)


class StudioValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    plan: dict[str, Any]


class PlanProblem(BaseModel):
    path: str = Field(description="JSON path of the field, e.g. 'shots[1].start_base_image_id' ('$' is the plan)")
    message: str
    rule: str = ""


class StudioValidation(BaseModel):
    request_id: str = ""
    valid: bool
    errors: list[PlanProblem]


def plan_problems(plan: dict[str, Any], settings: Settings) -> list[PlanProblem]:
    """Every rule the plan breaks, each naming its field; a valid plan is also checked against the profile."""
    problems = [PlanProblem(**v) for v in plan_violations(plan)]
    if not problems:
        try:
            render_models(validate_plan(plan), settings)
        except InvalidInputError as exc:
            problems.append(PlanProblem(path=exc.field or "render_profile", message=exc.message, rule=exc.code))
    return problems


def install_studio(app: FastAPI, store: ArtifactStore, settings: Settings) -> None:
    """Serve the studio at ``/`` and add its routes to production_agent's ``app``."""
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="studio_static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    @app.post("/studio/plan", response_model=StudioPlan, responses=error_responses(503))
    def studio_plan(request: StudioPlanRequest) -> StudioPlan:
        with ToolClient("script_agent", settings=settings, timeout=PLAN_TIMEOUT_S) as client:
            result = client.invoke(request.model_dump(exclude_none=True))
        plan = read_plan_json(store.path_for(result["artifact_uri"]))
        return StudioPlan(request_id=current_request_id(), plan=plan, plan_uri=result["artifact_uri"],
                          plan_summary=result.get("plan_summary") or {})

    @app.post("/studio/validate", response_model=StudioValidation)
    def studio_validate(request: StudioValidateRequest) -> StudioValidation:
        problems = plan_problems(request.plan, settings)
        return StudioValidation(request_id=current_request_id(), valid=not problems, errors=problems)

    @app.get("/studio/subtitles/{artifact_id}.vtt", response_class=PlainTextResponse,
             responses=error_responses(404, 422))
    def subtitles_vtt(artifact_id: str) -> PlainTextResponse:
        """A run's SRT as WebVTT, the one subtitle format a <track> element reads."""
        manifest = _subtitle_manifest(store, artifact_id)
        with store.open(manifest.artifact_id) as stream:
            text = stream.read(MAX_SRT_BYTES + 1)
        if len(text) > MAX_SRT_BYTES:
            raise InvalidInputError(f"subtitles over {MAX_SRT_BYTES} bytes", field="artifact_id")
        return PlainTextResponse(srt_to_vtt(text.decode("utf-8", errors="replace")), media_type="text/vtt")


def _subtitle_manifest(store: ArtifactStore, artifact_id: str) -> ArtifactManifest:
    validate_id(artifact_id, "artifact_id")
    manifest = store.get(artifact_id, field="artifact_id")   # unknown → 404 artifact_not_found
    if manifest.artifact_type != "subtitles":
        raise InvalidInputError(f"artifact {artifact_id} is {manifest.artifact_type}, not subtitles",
                                field="artifact_id")
    return manifest
