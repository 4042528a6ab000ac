"""Request/response envelopes of production_agent's HTTP API."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sparkle_motion.ids import ID_MAX_LENGTH, ID_PATTERN

# The order is the contract: resume_from=<stage> recomputes that stage and all after it.
StageName = Literal[
    "plan_intake", "cast", "dialogue_audio", "base_images", "video_clips", "lipsync", "assemble", "qa_publish",
    "finalize"
]
STAGES: tuple[str, ...] = get_args(StageName)

#: A review gate of ``ProductionRequest.review``: the run stops in ``awaiting_review`` after that stage.
ReviewGate = Literal["plan", "cast", "keyframes", "clips"]
SEED_MAX = 2**32 - 1


class ProductionRequest(BaseModel):
    """POST /invoke — start (or resume) a production run."""

    # strict: the HTTP body is JSON, and a JSON "5" is not what the schema asks for.
    model_config = ConfigDict(extra="forbid", strict=True)

    plan: dict[str, Any] | None = Field(None, description="An inline MoviePlan (schemas/MoviePlan.schema.json); "
                                                         "its rules are checked after the envelope (422 plan_invalid).")
    plan_uri: str | None = Field(None, max_length=512, description="artifact+fs:// URI of a plan artifact.")
    mode: Literal["dry", "run"] = "run"
    qa_mode: Literal["full", "skip"] = "full"
    resume_from: StageName | None = None
    run_id: str | None = Field(None, pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)
    review: list[ReviewGate] = Field(default_factory=list, max_length=4, description=(
        "stop in awaiting_review after these stages: plan (plan_intake), cast (the cast portraits, items "
        "cast_<character_id>), keyframes (base_images), clips (video_clips); POST "
        "/runs/{run_id}/review approves or regenerates. Set when the run is created; a resume keeps its gates."))

    @model_validator(mode="after")
    def _one_plan_source(self) -> "ProductionRequest":
        # A resume may omit the plan: the run already recorded which plan it produces.
        if self.plan is None and self.plan_uri is None and self.run_id is None:
            raise ValueError("give plan or plan_uri (or run_id to resume a run)")
        if self.plan is not None and self.plan_uri is not None:
            raise ValueError("give plan or plan_uri, not both")
        return self


class ProductionAccepted(BaseModel):
    request_id: str = ""
    run_id: str
    status: str
    mode: Literal["dry", "run"]
    qa_mode: Literal["full", "skip"]
    resume_from: str | None = None
    invocation_graph: list[dict[str, Any]] | None = None
    resource_estimate: dict[str, Any] | None = None


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    run_id: str = Field(..., pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)


class StepView(BaseModel):
    step_id: str | int
    stage: str
    item: str | None = Field(None, description="the unit of work in the stage: a shot or base image id, "
                                               "'line_003', 'timeline', 'shot_001.qa', 'final.qa'; "
                                               "null when the stage is one unit")
    attempt: int
    status: str
    started_at: str | None = None
    completed_at: str | None = None
    duration_s: float | None = None
    artifact_ids: list[str] = Field(default_factory=list)
    error: Any = None


class ItemProgress(BaseModel):
    """One unit of work in flight, with its tool job's progress when the tool reports it."""

    stage: str
    item: str | None = Field(None, description="as in StepView.item")
    tool_id: str | None = None
    job_id: str | None = Field(None, description="the tool's job (GET /jobs/{id} on the tool), for long-running "
                                                 "tools")
    state: str = Field("running", description="running, or the job's state: queued | running | ...")
    step: int | None = Field(None, description="units done in the current phase (denoising steps, tokens, "
                                               "frames)")
    total: int | None = None
    phase: str = ""
    eta_s: float | None = Field(None, description="seconds left in the phase, once steps are timed")
    summary: str = Field("", description="one line, e.g. 'video_clips shot_002: step 31/50, eta 4m10s'")


class ReviewItem(BaseModel):
    """One unit of work a reviewer can approve or regenerate at a gate."""

    item: str = Field(..., description="a base image id ('frame_002'), a shot id, or 'cast_<character_id>'")
    stage: str
    artifact_id: str | None = Field(None, description="what it rendered (null at the plan gate: nothing yet)")
    uri: str | None = None
    prompt: str | None = Field(None, description="the prompt an edit replaces (a shot's visual_description)")
    seed: int | None = Field(None, description="the seed it was rendered with; a re-roll picks another")


class ReviewView(BaseModel):
    """Where a run waits for its reviewer (RunStatus.review while status is awaiting_review)."""

    gate: ReviewGate
    stage: str = Field(..., description="the stage the gate follows")
    items: list[ReviewItem] = Field(default_factory=list)
    contact_sheet_artifact_id: str | None = Field(None, description="contact_sheet.png of the keyframes and "
                                                                    "portraits (from the keyframes gate on)")
    plan_revision: int = Field(0, description="0 for the plan as submitted; +1 for every edited prompt")


class RegenerateItem(BaseModel):
    """Redo one item: a new seed (random when neither seed nor prompt is given) and/or an edited prompt."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item: str = Field(..., pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    prompt: str | None = Field(None, min_length=1, max_length=2000)


class ReviewRequest(BaseModel):
    """POST /runs/{run_id}/review: approve the gate, or regenerate items and stop at it again."""

    model_config = ConfigDict(extra="forbid", strict=True)

    approve: bool = False
    regenerate: list[RegenerateItem] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _one_decision(self) -> "ReviewRequest":
        if self.approve == bool(self.regenerate):
            raise ValueError("give approve: true or a non-empty regenerate list (not both)")
        return self


class RunStatus(BaseModel):
    request_id: str = ""
    run_id: str
    plan_id: str | None = None
    status: str
    current_stage: str | None = None
    progress: float = 0.0
    mode: str | None = None
    qa_mode: str | None = None
    error: Any = None
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    queue_position: int | None = Field(None, description="while queued: 1 = next to start (agents/film_queue.py)")
    steps: list[StepView] = Field(default_factory=list)
    items: list[ItemProgress] = Field(default_factory=list, description="the work in flight now, with each "
                                      "long-running tool job's step and ETA (empty when nothing runs)")
    log_tail: list[dict[str, Any]] = Field(default_factory=list)
    review: ReviewView | None = Field(None, description="the gate the run waits at (status awaiting_review)")


class StageArtifacts(BaseModel):
    stage: str
    count: int
    artifact_types: list[str]
    media_types: list[str]
    preview: dict[str, Any] | None = None
    artifacts: list[dict[str, Any]] = Field(default_factory=list)


class ArtifactsView(BaseModel):
    request_id: str = ""
    run_id: str
    stages: list[StageArtifacts]
    artifacts: list[dict[str, Any]]

    @field_validator("stages")
    @classmethod
    def _ordered(cls, stages: list[StageArtifacts]) -> list[StageArtifacts]:
        order = {name: i for i, name in enumerate(STAGES)}
        return sorted(stages, key=lambda s: order.get(s.stage, len(order)))


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "production_agent.request": ProductionRequest,
    "production_agent.accepted": ProductionAccepted,
    "production_agent.status": RunStatus,
    "production_agent.artifacts": ArtifactsView,
    "production_agent.control": ControlRequest,
    "production_agent.review": ReviewRequest,
}
