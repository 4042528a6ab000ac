"""production_agent: the ADK 2.x Workflow that orders the stages of a production run.

The graph is declared once; the Runner executes it. Each node looks up the
:class:`ProductionRun` of its run (by ``run_id`` in the session state) in the
:class:`ActiveRuns` table the workflow was built over, and does that stage's
work. QA failures route ``base_images`` and ``video_clips`` back to themselves
(regenerate with new seeds) until the retry budget is spent. When a stage is
done (not routed back), ``review_gates.after_stage`` draws the contact sheet
after the keyframes and stops the run at a review gate the run asked for.

    plan_intake → cast → dialogue_audio → base_images ⟲ → video_clips ⟲ → lipsync
                → assemble → qa_publish → finalize

``dialogue_audio`` only starts its stage, on a thread of the run (stage_overlap):
speech and pictures do not read each other, so they are made side by side, and
``lipsync``, the first stage that reads the dialogue, waits for it.

The production service builds its own workflow over its own table;
``production_workflow`` (for ``adk web``) starts ad-hoc runs with the
configured store and registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from google.adk.events.event import Event
from google.adk.workflow import START, FunctionNode, Workflow

from sparkle_motion.agents.active_runs import ActiveRuns
from sparkle_motion.agents.production_run import ProductionRun, start_adhoc_run
from sparkle_motion.agents.review_gates import after_stage
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import get_settings
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.runs import RunRegistry

APP_NAME = "sparkle_motion_production"


def _message_text(node_input: Any) -> str:
    parts = getattr(node_input, "parts", None)
    if parts:
        return "".join(p.text or "" for p in parts)
    return node_input if isinstance(node_input, str) else json.dumps(node_input, default=str)


def _start_from_message(runs: ActiveRuns, node_input: Any) -> ProductionRun:
    """Find the run named by the user message, or start one from an inline plan (adk web)."""
    text = _message_text(node_input).strip()
    try:
        message = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"production_agent expects JSON: {{'run_id': ...}} or a MoviePlan ({exc})",
                                field="message") from None
    run_id = message.get("run_id") if isinstance(message, dict) else None
    run = runs.get(run_id)
    return run if run is not None else runs.start_adhoc(message)


def build_production_workflow(runs: ActiveRuns) -> Workflow:
    """The graph of nodes that find their run in ``runs``."""

    def run_of(ctx: Any) -> ProductionRun:
        return runs.require(ctx.state.get("run_id"))

    def plan_intake(ctx: Any, node_input: Any) -> Event:
        run = _start_from_message(runs, node_input)
        ctx.state["run_id"] = run.run_id
        return Event(output=run.plan_intake())

    def cast(ctx: Any, node_input: Any) -> Event:
        out = run_of(ctx).cast()
        ctx.state["cast"] = out["portraits"]
        return Event(output=out)

    def dialogue_audio(ctx: Any, node_input: Any) -> Event:
        run = run_of(ctx)
        run.background.start("dialogue_audio", run.dialogue_audio)
        return Event(output={"started": "dialogue_audio", "awaited_by": "lipsync"})

    def qa_routed(ctx: Any, stage: str, key: str, render: Callable[[ProductionRun], str]) -> Event:
        # base_images and video_clips: QA may route the stage back to itself ('retry') or on ('done').
        run = run_of(ctx)
        route = render(run)
        outputs = run.results[stage][key]
        ctx.state[stage] = outputs
        return Event(output={key: outputs, "attempt": run.attempts[stage]}, route=route)

    def base_images(ctx: Any, node_input: Any) -> Event:
        return qa_routed(ctx, "base_images", "images", ProductionRun.base_images)

    def video_clips(ctx: Any, node_input: Any) -> Event:
        return qa_routed(ctx, "video_clips", "clips", ProductionRun.video_clips)

    def lipsync(ctx: Any, node_input: Any) -> Event:
        run = run_of(ctx)
        dialogue = run.background.result("dialogue_audio")
        ctx.state["tts_timeline_uri"] = dialogue["timeline_uri"]
        return Event(output=run.lipsync())

    def assemble(ctx: Any, node_input: Any) -> Event:
        out = run_of(ctx).assemble()
        return Event(output={"video_uri": out["video_uri"], "srt_uri": out["srt_uri"]})

    def qa_publish(ctx: Any, node_input: Any) -> Event:
        return Event(output=run_of(ctx).qa_publish())

    def finalize(ctx: Any, node_input: Any) -> Event:
        out = run_of(ctx).finalize()
        ctx.state["video_final_uri"] = out["video_final_uri"]
        return Event(output=out)

    def then_gate(stage: Callable[[Any, Any], Event]) -> Callable[[Any, Any], Event]:
        # Every node: once its stage is done (not routed back to itself), the review gate after it.
        def node(ctx: Any, node_input: Any) -> Event:
            try:
                event = stage(ctx, node_input)
                if event.actions.route != "retry":
                    after_stage(run_of(ctx), stage.__name__)
            except BaseException:
                # The run's thread ends here (a failure, a stop, a review gate): the dialogue
                # beside it ends first, so no step of the run is written after the thread is gone.
                run = runs.get(ctx.state.get("run_id"))
                if run is not None:
                    run.background.settle()
                raise
            return event

        node.__name__ = stage.__name__
        return node

    nodes = {fn.__name__: FunctionNode(func=then_gate(fn), name=fn.__name__)
             for fn in (plan_intake, cast, dialogue_audio, base_images, video_clips, lipsync, assemble, qa_publish,
                        finalize)}
    return Workflow(
        name="production_agent",
        description="Executes a MoviePlan stage by stage through the Sparkle Motion FunctionTools.",
        edges=[
            (START, nodes["plan_intake"], nodes["cast"], nodes["dialogue_audio"], nodes["base_images"]),
            (nodes["base_images"], {"retry": nodes["base_images"], "done": nodes["video_clips"]}),
            (nodes["video_clips"], {"retry": nodes["video_clips"], "done": nodes["lipsync"]}),
            (nodes["lipsync"], nodes["assemble"], nodes["qa_publish"], nodes["finalize"]),
        ],
    )


def _adhoc_with_configured_home(message: Any) -> ProductionRun:
    # adk web runs no production service: record the run in the configured store and registry.
    settings = get_settings()
    return start_adhoc_run(message, settings=settings, store=ArtifactStore(settings.home),
                           registry=RunRegistry(settings.db_path))


production_workflow = build_production_workflow(ActiveRuns(adhoc=_adhoc_with_configured_home))
