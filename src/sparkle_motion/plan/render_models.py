"""The plan's ``render_profile`` against the active profile: which model each stage will run.

A plan names a model per stage (``render_profile.video.model_id``, ``images``,
``tts``).  ``auto`` means "what the active profile runs" (configs/profiles/*.yaml),
so one plan renders on the cpu and on the gpu profiles.  A named model must be
one the active profile serves for that stage's tool; otherwise the plan is
refused at intake (422, ``plan_invalid``) with the field path and the models the
profile offers, instead of rendering with a model the plan did not ask for.

A profile serves a tool's ``model`` under three names, compared without case:
the id as written (``Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers`` or a local path),
its last path component (``Wan2.1-FLF2V-14B-720P-diffusers``), and the
backend's name (``wan2.1-flf2v``).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import PlanValidationError
from sparkle_motion.plan.models import AUTO_MODEL, MoviePlan

# render_profile stage → the tool that renders it.
STAGE_TOOLS = {"video": "videos_wan", "images": "images_sdxl", "tts": "tts_chatterbox"}


def served_names(profile: ToolProfile) -> list[str]:
    """The names under which ``profile`` serves its model (first: the model id as configured)."""
    names = [profile.model, PurePosixPath(profile.model.rstrip("/")).name, profile.backend]
    return list(dict.fromkeys(n for n in names if n))


def render_models(plan: MoviePlan, settings: Settings) -> dict[str, str]:
    """Stage → the model the active profile will run for it; a model the profile cannot serve is a 422.

    Every stage that names a model it cannot get is listed in the error's
    ``details`` (``path``, ``rule``, ``message``), as plan validation does.
    """
    used: dict[str, str] = {}
    violations: list[dict[str, str]] = []
    for stage, tool_id in STAGE_TOOLS.items():
        wanted = getattr(plan.render_profile, stage).model_id
        profile = settings.tool_profile(tool_id)
        used[stage] = profile.model
        if wanted.lower() == AUTO_MODEL:
            continue
        offered = served_names(profile)
        if wanted.lower() not in {name.lower() for name in offered}:
            violations.append({
                "path": f"render_profile.{stage}.model_id", "rule": "model_served_by_profile",
                "message": f"{wanted!r} is not served by profile {settings.profile_name!r}: its {tool_id} runs "
                           f"{profile.model!r} (accepted names: {', '.join(offered)}); use {AUTO_MODEL!r} or "
                           "switch profile (SPARKLE_PROFILE)",
            })
    if violations:
        first = violations[0]
        raise PlanValidationError(first["message"], field=first["path"], details=violations,
                                  context={"profile": settings.profile_name,
                                           "profile_models": {s: settings.tool_profile(t).model
                                                              for s, t in STAGE_TOOLS.items()}})
    return used
