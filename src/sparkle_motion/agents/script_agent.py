"""script_agent: an ADK ``LlmAgent`` that turns an idea into a validated MoviePlan.

``generate_plan(prompt, ...)`` runs the agent with an ADK ``Runner`` and checks
the answer with :func:`sparkle_motion.plan.validate_plan`.  When the plan breaks
a rule, the violations go back to the model in the same session as a new user
turn, and it gets two more attempts; after that a ``PlanValidationError`` lists
what was still wrong.

The model comes from the profile (``configs/profiles/*.yaml``, tool
``script_agent``): ``sparkle-offline-planner`` (the cpu default, no network),
``gemini-*`` (needs ``GOOGLE_API_KEY`` or a Vertex AI setup) or any LiteLLM
``provider/model`` (optional extra ``sparkle-motion[litellm]``).  A model that
cannot work here fails with a ``ConfigError`` before anything is called.

ADK's ``output_schema`` is set to ``MoviePlan``: hosted models get it as their
response schema, and ADK parses the final answer with it before storing it under
``output_key``.  Because ``MoviePlan`` runs its cross-field rules in its model
validator, an answer that breaks a rule makes ADK fail that parse
(``pydantic.ValidationError``) instead of storing it; the raw answer is captured by an
``after_model_callback`` first, so the loop below still has it to report and to
send back.  (ADK 2.13 runs the agent as a workflow node: it logs that exception,
emits an error event with ``error_code="ValidationError"`` and re-raises it when
the run ends.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from google.adk.agents import LlmAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.readonly_context import ReadonlyContext
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_response import LlmResponse
from google.adk.models.registry import LLMRegistry
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from sparkle_motion.agents.script_protocol import (
    MAX_IDEA_CHARS,
    PLANNER_MODEL,
    PlanControls,
    check_duration_fits_shots,
    format_plan_request,
    format_render_profile,
    format_validation_feedback,
)
from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import BackendError, ConfigError, InvalidInputError, PlanValidationError
from sparkle_motion.media.geometry import frame_size
from sparkle_motion.plan import AUTO_MODEL, MoviePlan, plan_violations, summarize, validate_plan
from sparkle_motion.plan.models import MAX_FPS

AGENT_NAME = "script_agent"
OUTPUT_KEY = "movie_plan"
MAX_ATTEMPTS = 3  # the first answer plus at most two corrections
APP_NAME = "sparkle_motion"
LITELLM_INSTALL_HINT = "pip install sparkle-motion[litellm]"

# Render profile the agent asks for: "auto" lets the active profile pick each model,
# so one plan renders on the cpu and the gpu profile alike.
DEFAULT_RENDER_PROFILE = {
    "video": {"model_id": AUTO_MODEL},
    "images": {"model_id": AUTO_MODEL},
    "tts": {"model_id": AUTO_MODEL},
}

INSTRUCTION = """\
You are script_agent, the screenwriter of Sparkle Motion. You turn a one-line film idea into a
MoviePlan: a JSON object that the production pipeline renders shot by shot. Answer with the JSON
object only — no prose, no Markdown fences.

The user message gives the idea after "IDEA:" and a JSON controls object after "CONTROLS (JSON):"
with title, shots, duration_s, seed and style. A null control is yours to choose; a set one must be
honoured exactly (shots = number of shots, duration_s = sum of shot durations in seconds, style =
the look of every image prompt, seed = metadata.seed, title = the title).

Rules (every one is checked; a broken rule comes back to you as "VALIDATION ERRORS" with the JSON
path and the reason, and you must return the whole corrected plan):
- title: non-empty, at most 200 characters.
- characters: taken from names in the idea, or invented from the roles it mentions. Each has a
  unique safe id (letters, digits, '_', '.', '-'), a name, a short description of role and look,
  and voice_profile {voice_id, style, language (BCP-47, e.g. "en-US"), rate (0.25-4.0 multiplier),
  pitch (semitones, -20..20)}; give every character a different voice.
- shots: 3 to 5 unless the controls say otherwise; ids unique ("shot_001", ...); duration_sec > 0
  and <= 60; setting, visual_description, motion_prompt (a camera move: push-in, pull-out, pan,
  tilt, crane, static, handheld — vary them), is_talking_closeup true on shots where someone speaks.
- base_images: exactly len(shots) + 1 keyframes with unique ids ("frame_000", ...), each a full
  image prompt (setting, time of day, weather, characters present, style palette) with an optional
  negative_prompt and seed. Shot i starts on base_images[i] and ends on base_images[i+1]:
  shots[i].start_base_image_id == base_images[i].id and end_base_image_id == base_images[i+1].id.
- dialogue_timeline: entries {"type": "dialogue", character_id, text, start_time_sec, duration_sec}
  or {"type": "silence", start_time_sec, duration_sec}. 2 to 6 lines that tell the story (setup,
  tension, resolution); size each line at about 2.6 words per second plus a short margin and place
  it inside its shot. The timeline starts at 0, has no gaps or overlaps (silences fill them) and ends
  exactly at the sum of the shot durations. character_id must name a character; text non-empty,
  at most 1000 characters.
- render_profile: use the object given below unless the idea demands otherwise.
- metadata: {plan_id (safe id), seed (the controls' seed), source (your model name)}.
"""


class PlanRequest(BaseModel):
    """What a caller asks script_agent for: the idea and optional controls."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_IDEA_CHARS, description="The film idea, in words.")
    title: str | None = Field(None, min_length=1, max_length=200)
    shots: int | None = Field(None, ge=1, le=12, description="Number of shots (1-12).")
    duration_s: float | None = Field(None, ge=4, le=300, allow_inf_nan=False,
                                     description="Film runtime in seconds (4-300); at most 60 s per shot.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Base seed; default: derived from the idea.")
    style: str | None = Field(None, min_length=1, max_length=80, description="Look, e.g. 'noir', 'anime'.")
    aspect: Literal["16:9", "9:16", "1:1"] | None = Field(
        None, description="Frame aspect; the size keeps the profile's render area (640x360 → 360x640 for 9:16).")
    fps: int | None = Field(None, ge=1, le=MAX_FPS, description="Frame rate; default: the profile's.")

    @field_validator("prompt")
    @classmethod
    def _prompt_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain the film idea, not only whitespace")
        return value.strip()

    @field_validator("duration_s")
    @classmethod
    def _fits_shots(cls, value: float | None, info: ValidationInfo) -> float | None:
        return check_duration_fits_shots(value, info.data.get("shots"))

    @field_validator("title", "style")
    @classmethod
    def _strip_optional(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank when given")
        return value.strip() if value is not None else None

    def render_profile(self, settings: Settings) -> dict[str, Any]:
        """The render profile the model is asked to use: the defaults, plus the size and rate asked for."""
        video: dict[str, Any] = {"model_id": AUTO_MODEL}
        if self.aspect is not None:
            base_w, base_h = (int(settings.render.get(k, d)) for k, d in (("width", 640), ("height", 360)))
            video["width"], video["height"] = frame_size(self.aspect, base_w, base_h)
        if self.fps is not None:
            video["fps"] = self.fps
        return {**DEFAULT_RENDER_PROFILE, "video": video}

    def controls(self) -> PlanControls:
        return PlanControls(title=self.title, shots=self.shots, duration_s=self.duration_s,
                            seed=self.seed, style=self.style)


@dataclass
class PlanResult:
    """A validated plan and how it was obtained."""

    plan: MoviePlan
    raw_model_output: str
    model: str
    attempts: int
    request: PlanRequest
    violations_by_attempt: list[list[dict[str, str]]] = field(default_factory=list)
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- models


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def check_gemini_credentials(model: str, env: dict[str, str] | None = None) -> None:
    """Raise ConfigError unless the google-genai client can authenticate for ``model``."""
    env = dict(os.environ) if env is None else env
    if env.get("GOOGLE_API_KEY") or env.get("GEMINI_API_KEY"):
        return
    if _truthy(env.get("GOOGLE_GENAI_USE_VERTEXAI")) and env.get("GOOGLE_CLOUD_PROJECT"):
        return
    raise ConfigError(
        f"script_agent model {model!r} needs GOOGLE_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI=true with "
        "GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION for Vertex AI); set it, or use the cpu profile "
        f"(SPARKLE_PROFILE=cpu) whose planner {PLANNER_MODEL!r} needs no key",
        field="GOOGLE_API_KEY", context={"model": model},
    )


def resolve_model(model: str | BaseLlm | None = None, settings: Settings | None = None) -> str | BaseLlm:
    """The model for script_agent, checked so that it can actually be called here.

    ``model`` overrides the profile.  Returns a model name ADK resolves through its
    ``LLMRegistry`` or, for LiteLLM, a ready ``LiteLlm`` instance.
    """
    if isinstance(model, BaseLlm):
        return model
    if model is None:
        settings = settings or get_settings()
        profile = settings.tool_profile(AGENT_NAME)
        model = profile.model
        _check_backend_matches(profile.backend, model)
    model = model.strip()
    if not model:
        raise ConfigError("script_agent model name is empty", field="model")
    if model == PLANNER_MODEL:
        # Importing the planner registers it in ADK's LLMRegistry, where LlmAgent looks the
        # name up; a hosted model's run never loads it.
        import sparkle_motion.agents.offline_planner  # noqa: F401

        return model
    if model.startswith("gemini-"):
        check_gemini_credentials(model)
        return model
    if "/" in model:
        if importlib.util.find_spec("litellm") is None:
            raise ConfigError(
                f"script_agent model {model!r} is a LiteLLM provider/model name, but LiteLLM is not installed: "
                f"{LITELLM_INSTALL_HINT}", field="model", context={"model": model})
        from google.adk.models.lite_llm import LiteLlm

        return LiteLlm(model=model)
    try:
        LLMRegistry.resolve(model)
    except ValueError as exc:
        raise ConfigError(
            f"script_agent model {model!r} is unknown: use {PLANNER_MODEL!r}, a 'gemini-*' model or a LiteLLM "
            f"'provider/model' name ({LITELLM_INSTALL_HINT})", field="model", context={"adk": str(exc)[:500]},
        ) from None
    return model


def _check_backend_matches(backend: str, model: str) -> None:
    expected = {"sparkle-offline-planner": lambda m: m == PLANNER_MODEL,
                "gemini": lambda m: m.startswith("gemini-"),
                "litellm": lambda m: "/" in m}
    check = expected.get(backend)
    if check is not None and not check(model):
        raise ConfigError(
            f"script_agent backend {backend!r} does not fit model {model!r}: set the profile's "
            "script_agent.model to a matching model (sparkle-offline-planner / gemini-* / provider/model)",
            field="SPARKLE_SCRIPT_AGENT_BACKEND", context={"backend": backend, "model": model})


def model_name(model: str | BaseLlm) -> str:
    return model if isinstance(model, str) else model.model


# --------------------------------------------------------------------------- agent


def _instruction_for(render_profile: dict[str, Any]):
    text = f"{INSTRUCTION}\n{format_render_profile(render_profile)}\n"

    # A provider function, not a string: ADK would read the JSON braces in a
    # string instruction as {state} placeholders.
    def provide(_: ReadonlyContext) -> str:
        return text

    return provide


def build_script_agent(model: str | BaseLlm | None = None, *, settings: Settings | None = None,
                       render_profile: dict[str, Any] | None = None, after_model_callback: Any = None,
                       ) -> LlmAgent:
    """The script_agent ``LlmAgent`` on the profile's (or the given) model."""
    resolved = resolve_model(model, settings)
    return LlmAgent(
        name=AGENT_NAME,
        description="Writes a validated MoviePlan (characters, keyframes, shots, dialogue timeline) from a film idea.",
        model=resolved,
        instruction=_instruction_for(dict(render_profile or DEFAULT_RENDER_PROFILE)),
        output_schema=MoviePlan,
        output_key=OUTPUT_KEY,
        disallow_transfer_to_parent=True,
        disallow_transfer_to_peers=True,
        after_model_callback=after_model_callback,
    )


class _AnswerRecorder:
    """after_model_callback: keeps the text of every complete model answer."""

    def __init__(self) -> None:
        self.answers: list[str] = []

    def __call__(self, callback_context: CallbackContext, llm_response: LlmResponse) -> None:
        del callback_context
        if llm_response.partial or llm_response.content is None:
            return None
        text = "".join(p.text for p in llm_response.content.parts or [] if p.text and not p.thought)
        if text.strip():
            self.answers.append(text)
        return None


def _strip_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped.strip()


def _violations_of(raw: str) -> tuple[MoviePlan | None, list[dict[str, str]]]:
    """Parse and validate one model answer: (plan, []) or (None, violations)."""
    try:
        data = json.loads(_strip_fence(raw))
    except json.JSONDecodeError as exc:
        return None, [{"path": "$", "rule": "invalid_json",
                       "message": f"the answer is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                                  "answer with the MoviePlan JSON object only"}]
    try:
        return validate_plan(data), []
    except PlanValidationError as exc:
        return None, list(exc.details) or plan_violations(data)


async def agenerate_plan_result(request: PlanRequest, *, model: str | BaseLlm | None = None,
                                settings: Settings | None = None) -> PlanResult:
    """Run script_agent until it returns a valid plan, at most ``MAX_ATTEMPTS`` times."""
    started = time.perf_counter()
    controls = request.controls()
    recorder = _AnswerRecorder()
    render_profile = request.render_profile(settings or get_settings())
    agent = build_script_agent(model, settings=settings, render_profile=render_profile, after_model_callback=recorder)
    name = model_name(agent.model)
    sessions = InMemorySessionService()
    runner = Runner(app_name=APP_NAME, agent=agent, session_service=sessions)
    session = await sessions.create_session(app_name=APP_NAME, user_id=AGENT_NAME)
    message = format_plan_request(request.prompt, controls)
    history: list[list[dict[str, str]]] = []
    raw = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        answers_before = len(recorder.answers)
        schema_rejected = False
        failure: tuple[str, str] | None = None
        try:
            async for event in runner.run_async(
                user_id=AGENT_NAME, session_id=session.id,
                new_message=types.Content(role="user", parts=[types.Part(text=message)]),
            ):
                if event.error_code and event.error_code != "ValidationError":
                    failure = (event.error_code, event.error_message or "")
        except ValidationError as exc:
            # ADK parsed the answer with output_schema=MoviePlan and it broke a rule (ADK
            # 2.13 reports it as an error event, then re-raises it at the end of the run).
            # The answer never reached the session, so the feedback below carries it back.
            if len(recorder.answers) == answers_before:
                raise BackendError(f"script_agent run failed before the model answered: {exc}",
                                   context={"model": name, "attempt": attempt}) from exc
            schema_rejected = True
        if failure is not None:
            raise BackendError(f"script_agent model {name!r} failed: {failure[0]}: {failure[1][:500]}",
                               context={"model": name, "error_code": failure[0], "attempt": attempt})
        if len(recorder.answers) == answers_before:
            raise BackendError(f"script_agent model {name!r} returned no answer",
                               context={"model": name, "attempt": attempt})
        raw = recorder.answers[-1]
        plan, violations = _violations_of(raw)
        if plan is not None:
            plan = pin_video_geometry(plan, render_profile["video"])
            return PlanResult(plan=plan, raw_model_output=raw, model=name, attempts=attempt, request=request,
                              violations_by_attempt=history, elapsed_s=time.perf_counter() - started)
        history.append(violations)
        message = format_validation_feedback(violations, attempt=attempt, max_attempts=MAX_ATTEMPTS,
                                             previous_output=raw if schema_rejected else None)
    raise PlanValidationError(
        f"script_agent ({name}) could not produce a valid MoviePlan in {MAX_ATTEMPTS} attempts; "
        f"last answer: {summarize(history[-1])}",
        details=history[-1],
        context={"model": name, "attempts": MAX_ATTEMPTS, "raw_model_output": raw[:2000],
                 "violations_by_attempt": [[v["path"] for v in vs] for vs in history]},
    )


def pin_video_geometry(plan: MoviePlan, video: dict[str, Any]) -> MoviePlan:
    """The plan with the fps/width/height the caller asked for, whatever the model wrote there.

    A hosted model may drop or change numbers it was given; the caller's ``--aspect`` wins.
    """
    pinned = {k: v for k, v in video.items() if k in ("fps", "width", "height")}
    current = plan.render_profile.video
    if all(getattr(current, k) == v for k, v in pinned.items()):
        return plan
    data = plan.model_dump(mode="json")
    data["render_profile"]["video"].update(pinned)
    return validate_plan(data)


def _run_sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:
        return asyncio.run(coro)
    # Called from inside an event loop (a notebook, an async server): run in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def generate_plan_result(request: PlanRequest, *, model: str | BaseLlm | None = None,
                         settings: Settings | None = None) -> PlanResult:
    return _run_sync(agenerate_plan_result(request, model=model, settings=settings))


def generate_plan(prompt: str, *, title: str | None = None, shots: int | None = None,
                  duration_s: float | None = None, seed: int | None = None, style: str | None = None,
                  aspect: str | None = None, fps: int | None = None,
                  model: str | BaseLlm | None = None, settings: Settings | None = None) -> MoviePlan:
    """Idea → validated MoviePlan (see the module docstring for the retry loop and models).

    Raises InvalidInputError for a bad argument (naming it), ConfigError for a model
    that cannot run here, PlanValidationError when three answers were all invalid.
    """
    try:
        request = PlanRequest(prompt=prompt, title=title, shots=shots, duration_s=duration_s, seed=seed,
                              style=style, aspect=aspect, fps=fps)
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = ".".join(str(p) for p in error.get("loc", ())) or "prompt"
        raise InvalidInputError(error["msg"].removeprefix("Value error, "), field=field_name) from None
    return generate_plan_result(request, model=model, settings=settings).plan
