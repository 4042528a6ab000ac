"""Review gates, as the run's own thread meets them: stop after a named stage until a reviewer decides.

A run created with ``review: [...]`` stops in ``awaiting_review`` after each
gated stage. Nothing of the wait lives in memory: the gate, the approvals, the
per-item seed overrides and the plan's revisions are the ``review`` entry of the
run's options in the run registry (SQLite), so a production_agent restarted
while a run waits still shows it waiting and can still continue it.

Continuing (after an approval or a regeneration) starts the run over from the
beginning on a new thread. That is cheap and exact because every unit of work is
a cached step keyed by its inputs: what the reviewer did not touch is ``cached``,
an item with a new seed (or an edited prompt, which makes a new plan revision)
gets a new input hash, and so do the steps downstream of it (their inputs name
its new artifact) — and nothing else.

The gate is generic: ``GATE_STAGES`` names the stage each gate follows, and the
workflow calls :func:`after_stage` after every node, so a gate whose stage the
workflow lacks simply never fires.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from sparkle_motion.agents.contact_sheet import CONTACT_SHEET_ITEM, SHEET_AFTER_STAGES, contact_sheet_step
from sparkle_motion.agents.production_models import SEED_MAX, STAGES
from sparkle_motion.errors import SparkleError
from sparkle_motion.runs import RunRegistry

if TYPE_CHECKING:
    from sparkle_motion.agents.production_run import ProductionRun

__all__ = ["CONTACT_SHEET_ITEM", "GATE_STAGES", "AwaitingReview", "after_stage", "continue_from", "fresh_seed",
           "item_seed", "review_state", "with_review_state"]

#: gate → the stage it follows. ``cast`` is the cast-portrait stage (items ``cast_<character_id>``).
GATE_STAGES: dict[str, str] = {"plan": "plan_intake", "cast": "cast", "keyframes": "base_images",
                               "clips": "video_clips"}
OPTIONS_KEY = "review"
SEED_SPACE = SEED_MAX + 1


class AwaitingReview(SparkleError):
    """Ends the run's thread at a gate; the run is already ``awaiting_review`` in the registry."""

    code = "awaiting_review"
    http_status = 409


def review_state(options: dict[str, Any]) -> dict[str, Any]:
    """The run's review entry with every key present: gates, approved, waiting, overrides, revision, revisions."""
    state = dict(options.get(OPTIONS_KEY) or {})
    state.setdefault("gates", [])
    state.setdefault("approved", [])
    state.setdefault("waiting", None)
    state.setdefault("overrides", {})
    state.setdefault("revision", 0)
    state.setdefault("revisions", [])   # plan URIs of every revision: the plan's history (the sweep keeps them)
    return state


def with_review_state(options: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {**options, OPTIONS_KEY: state}


def item_seed(run: ProductionRun, item: str, default: int, attempt: int, stride: int) -> int:
    """The seed an item renders with: the reviewer's re-roll when there is one, moved on per QA retry."""
    base = run.overrides.get(item, {}).get("seed", default)
    return (int(base) + stride * (attempt - 1)) % SEED_SPACE


def fresh_seed(previous: int | None) -> int:
    """A re-roll without a named seed: any other seed."""
    while True:
        seed = secrets.randbelow(SEED_SPACE)
        if seed != previous:
            return seed


def after_stage(run: ProductionRun, stage: str) -> None:
    """Called by the workflow when a stage is done: the contact sheet, then the gate if one follows ``stage``."""
    if stage in SHEET_AFTER_STAGES:
        contact_sheet_step(run)
    record = run.registry.get_run(run.run_id)
    state = review_state(record.options)
    gate = next((g for g in state["gates"] if GATE_STAGES.get(g) == stage and g not in state["approved"]), None)
    if gate is None:
        return
    run.background.finish()   # the dialogue beside the pictures ends first (or fails the run)
    state["waiting"] = gate
    options = with_review_state(record.options, state)
    options["resume_from"] = continue_from(record.options.get("resume_from"), stage)
    run.registry.update_run(run.run_id, options=options)
    run.registry.set_status(run.run_id, "awaiting_review", current_stage=stage)
    run.registry.log(run.run_id, "info", f"awaiting review at gate {gate} (after {stage})", gate=gate, stage=stage)
    raise AwaitingReview(f"run {run.run_id} awaits review at gate {gate}",
                         context={"run_id": run.run_id, "gate": gate, "stage": stage})


def continue_from(resume_from: str | None, gate_stage: str) -> str | None:
    """The ``resume_from`` the run continues with once past a gate.

    A resume_from at or before the gate's stage was honoured on the way there;
    redoing it on every pass would re-render what the reviewer just saw. The
    stages after the gate are still forced, as the original resume_from asked.
    """
    if resume_from is None or resume_from not in STAGES or gate_stage not in STAGES:
        return resume_from
    gate_index = STAGES.index(gate_stage)
    if STAGES.index(resume_from) > gate_index:
        return resume_from
    return STAGES[gate_index + 1] if gate_index + 1 < len(STAGES) else None


def gates_of(registry: RunRegistry, run_id: str) -> list[str]:
    return list(review_state(registry.get_run(run_id).options)["gates"])
