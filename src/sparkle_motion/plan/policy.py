"""Content policy before any work: every text of a MoviePlan screened against ``configs/qa_policy.yaml``.

Why here and not only in QA: the QA tool's ``text_policy`` check runs after a
keyframe is rendered, so a blocked prompt used to be rendered (and regenerated)
before its stage failed, and dialogue text was never screened at all.  Plan
intake calls :func:`screen_plan` before any tool is called — and whatever the
run's ``qa_mode``, ``skip`` included — and so do ``sparkle-motion validate``
(exit 2) and the notebook's plan review (:func:`plan_policy_violations`, shown
with the schema's violations).

The terms and their categories are the QA policy's ``text_policy.blocked_terms``
(one list for both places) matched by the QA tool's own matcher
(``find_blocked_terms``: whole words, any case); ``plan_screening`` in the same
file names the categories a negative prompt may mention (it lists what to keep
out of the picture).  The policy file is the one the active profile's
``qa_qwen2vl`` tool reads (its ``policy_path`` option), else the default.

Usage (one call, raising)::

    from sparkle_motion.plan.policy import screen_plan
    screen_plan(plan)          # MoviePlan -> None, or ContentPolicyError (422, code content_policy)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from function_tools.qa_qwen2vl.checks import QAPolicy, find_blocked_terms, load_policy
from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import ConfigError, ContentPolicyError
from sparkle_motion.plan.models import MoviePlan

RULE_PREFIX = "text_policy."


def _texts(plan: MoviePlan) -> Iterator[tuple[str, str, bool]]:
    """(JSON path, text, is a negative prompt) for every text of the plan a model or a voice gets."""
    yield "title", plan.title, False
    for i, character in enumerate(plan.characters):
        yield f"characters[{i}].name", character.name, False
        yield f"characters[{i}].description", character.description, False
    for i, base in enumerate(plan.base_images):
        yield f"base_images[{i}].prompt", base.prompt, False
        if base.negative_prompt:
            yield f"base_images[{i}].negative_prompt", base.negative_prompt, True
    for i, shot in enumerate(plan.shots):
        yield f"shots[{i}].setting", shot.setting, False
        yield f"shots[{i}].visual_description", shot.visual_description, False
        yield f"shots[{i}].motion_prompt", shot.motion_prompt, False
    for i, entry in enumerate(plan.dialogue_timeline):
        if entry.type == "dialogue":
            yield f"dialogue_timeline[{i}].text", entry.text, False


def active_policy(settings: Settings | None = None) -> QAPolicy:
    """The QA policy of the profile's qa_qwen2vl tool (``options.policy_path``), else the default file.

    ``settings`` defaults to the active ones (``get_settings()``).
    """
    settings = settings if settings is not None else get_settings()
    try:
        path = settings.tool_profile("qa_qwen2vl").options.get("policy_path")
    except ConfigError:   # a profile without the QA tool still screens plans against the default policy
        path = None
    return load_policy(Path(path) if path else None)


def plan_policy_violations(plan: MoviePlan, policy: QAPolicy | None = None) -> list[dict[str, str]]:
    """Every blocked term in the plan as ``{path, rule, message}``, in plan order (``[]`` when clean)."""
    policy = policy if policy is not None else active_policy()
    allowed_in_negative = set(policy.plan_screening.negative_prompt_allowed)
    violations = []
    for path, text, negative in _texts(plan):
        for hit in find_blocked_terms(text, policy.text_policy):
            if negative and hit["category"] in allowed_in_negative:
                continue
            violations.append({"path": path, "rule": RULE_PREFIX + hit["category"],
                               "message": f"blocked term {hit['term']!r} ({hit['category']}) at character "
                                          f"{hit['offset']}"})
    return violations


def screen_plan(plan: MoviePlan, policy: QAPolicy | None = None) -> None:
    """Raise :class:`ContentPolicyError` (422 ``content_policy``) naming the first offending field and its rule.

    ``policy`` defaults to the active profile's QA policy (:func:`active_policy`).
    Every hit is in the error's ``details``; nothing is raised for a clean plan.
    """
    violations = plan_policy_violations(plan, policy)
    if not violations:
        return
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    raise ContentPolicyError(f"content policy: {first['path']}: {first['message']} [{first['rule']}]{more}",
                             field=first["path"], details=violations,
                             context={"rule": first["rule"], "violations": len(violations)})
