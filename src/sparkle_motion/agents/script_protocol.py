"""The prompt protocol between script_agent and a planner model, and the plan controls it carries.

script_agent writes a plan request as an ``IDEA:`` block followed by a
``CONTROLS (JSON):`` line, sends rule violations back as a ``VALIDATION ERRORS``
message, and puts a ``RENDER_PROFILE (JSON):`` line into the system
instruction.  The offline planner reads the same format with the parsers here,
so both sides share one definition — and script_agent needs only this module,
not the planner.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sparkle_motion.plan.models import MAX_SEED
from sparkle_motion.plan.rules import MAX_SHOT_DURATION_S

# The ADK model name of the offline planner (agents/offline_planner.py registers it).
PLANNER_MODEL = "sparkle-offline-planner"

# Request bounds (the HTTP API and generate_plan enforce them; the planner clamps
# hand-typed values from `adk web` into them rather than refusing).
MIN_SHOTS, MAX_SHOTS = 1, 12
MIN_DURATION_S, MAX_DURATION_S = 4.0, 300.0
MAX_IDEA_CHARS = 4000

# Prompt protocol markers (script_agent writes them, the planner reads them).
IDEA_MARKER = "IDEA:"
CONTROLS_MARKER = "CONTROLS (JSON):"
FEEDBACK_MARKER = "VALIDATION ERRORS"
RENDER_PROFILE_MARKER = "RENDER_PROFILE (JSON):"
CONTROL_KEYS = ("title", "shots", "duration_s", "seed", "style")


class PlanControls(BaseModel):
    """The knobs a caller may set besides the idea; None means "planner decides"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str | None = Field(None, min_length=1, max_length=200)
    shots: int | None = Field(None, ge=MIN_SHOTS, le=MAX_SHOTS)
    duration_s: float | None = Field(None, ge=MIN_DURATION_S, le=MAX_DURATION_S, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    style: str | None = Field(None, min_length=1, max_length=80)

    @field_validator("title", "style", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("duration_s")
    @classmethod
    def _fits_shots(cls, value: float | None, info: ValidationInfo) -> float | None:
        return check_duration_fits_shots(value, info.data.get("shots"))


def check_duration_fits_shots(duration_s: float | None, shots: int | None) -> float | None:
    """A runtime longer than ``shots`` × 60 s cannot be cut into that many shots."""
    if duration_s is not None and shots is not None and duration_s > shots * MAX_SHOT_DURATION_S:
        needed = math.ceil(duration_s / MAX_SHOT_DURATION_S)
        raise ValueError(
            f"{duration_s:g} s does not fit in {shots} shot(s) of at most {MAX_SHOT_DURATION_S:g} s each; "
            f"ask for at least {needed} shots or a shorter film"
        )
    return duration_s


# --------------------------------------------------------------------------- protocol


def format_plan_request(idea: str, controls: PlanControls) -> str:
    """The user message script_agent sends: the idea, then the controls as one JSON line."""
    payload = {key: getattr(controls, key) for key in CONTROL_KEYS}
    return (
        "Write a MoviePlan for this idea.\n\n"
        f"{IDEA_MARKER}\n{idea.strip()}\n\n"
        f"{CONTROLS_MARKER}\n{json.dumps(payload, ensure_ascii=False)}\n"
    )


def format_validation_feedback(violations: Sequence[Mapping[str, Any]], *, attempt: int, max_attempts: int,
                               previous_output: str | None = None) -> str:
    """The retry message: every violation as ``- path: message``, then what to return."""
    lines = [f"{FEEDBACK_MARKER} (attempt {attempt} of {max_attempts}): the MoviePlan you returned breaks these rules:"]
    for violation in violations:
        lines.append(f"- {violation.get('path', '$')}: {violation.get('message', '')}")
    if previous_output is not None:
        lines += ["", "Your previous answer was:", previous_output[:20000]]
    lines += ["", "Return the complete corrected MoviePlan as JSON only, keeping everything that was valid."]
    return "\n".join(lines)


def format_render_profile(render_profile: Mapping[str, Any]) -> str:
    return f"{RENDER_PROFILE_MARKER} {json.dumps(dict(render_profile), sort_keys=True)}"


_FEEDBACK_LINE_RE = re.compile(r"^- (?P<path>[^:\n]+): (?P<message>.*)$", re.MULTILINE)


def parse_validation_feedback(text: str) -> list[dict[str, str]]:
    """The violations listed in a feedback message (empty when ``text`` is not one)."""
    if FEEDBACK_MARKER not in text:
        return []
    body = text.split("Your previous answer was:", 1)[0]
    return [{"path": m["path"].strip(), "message": m["message"].strip()} for m in _FEEDBACK_LINE_RE.finditer(body)]


def _find_json_object(text: str, start: int = 0) -> tuple[dict[str, Any], int, int] | None:
    decoder = json.JSONDecoder()
    index = text.find("{", start)
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            return value, index, end
        index = text.find("{", end)
    return None


def _coerce_controls(raw: Mapping[str, Any]) -> PlanControls:
    """Controls from a hand-written block: unknown keys and unusable values are dropped, numbers clamped."""
    clean: dict[str, Any] = {}
    for key in CONTROL_KEYS:
        value = raw.get(key)
        if value is None or isinstance(value, bool):
            continue
        if key in ("shots", "seed"):
            try:
                number = int(float(value))
            except (TypeError, ValueError):
                continue
            clean[key] = min(max(number, MIN_SHOTS), MAX_SHOTS) if key == "shots" else min(max(number, 0), MAX_SEED)
        elif key == "duration_s":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(seconds):
                clean[key] = min(max(seconds, MIN_DURATION_S), MAX_DURATION_S)
        elif isinstance(value, str) and value.strip():
            clean[key] = value.strip()[:200 if key == "title" else 80]
    if "duration_s" in clean and "shots" in clean:
        clean["duration_s"] = min(clean["duration_s"], clean["shots"] * MAX_SHOT_DURATION_S)
    return PlanControls.model_validate(clean)


def parse_plan_request(text: str) -> tuple[str, PlanControls]:
    """Idea and controls from a user message.

    Reads the protocol format (``IDEA:`` … ``CONTROLS (JSON):`` {…}) and also a
    message typed by hand in ``adk web``: the idea in plain words, optionally
    with a JSON object such as ``{"shots": 4, "style": "noir"}`` anywhere in it.
    """
    idea_text = text
    controls_raw: dict[str, Any] = {}
    marker = text.rfind(CONTROLS_MARKER)
    if marker != -1:
        found = _find_json_object(text, marker + len(CONTROLS_MARKER))
        if found:
            controls_raw = found[0]
        idea_text = text[:marker]
    else:
        # The last JSON object made only of control keys is the controls block.
        search_from, chosen = 0, None
        while (found := _find_json_object(text, search_from)) is not None:
            obj, begin, end = found
            if obj and set(obj) <= set(CONTROL_KEYS):
                chosen = (obj, begin, end)
            search_from = end
        if chosen:
            controls_raw = chosen[0]
            begin, end = chosen[1], chosen[2]
            # Drop a surrounding ```json fence together with the object.
            prefix = re.search(r"```(?:json)?\s*$", text[:begin])
            suffix = re.match(r"\s*```", text[end:])
            begin = prefix.start() if prefix else begin
            end = end + suffix.end() if suffix else end
            idea_text = text[:begin] + " " + text[end:]
    idea_marker = idea_text.find(IDEA_MARKER)
    if idea_marker != -1:
        idea_text = idea_text[idea_marker + len(IDEA_MARKER):]
    idea = " ".join(idea_text.split())[:MAX_IDEA_CHARS]
    return idea, _coerce_controls(controls_raw)


def parse_render_profile(system_instruction: str) -> dict[str, Any] | None:
    index = system_instruction.rfind(RENDER_PROFILE_MARKER)
    if index == -1:
        return None
    found = _find_json_object(system_instruction, index + len(RENDER_PROFILE_MARKER))
    return found[0] if found else None
