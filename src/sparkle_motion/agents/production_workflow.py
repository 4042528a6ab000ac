"""production_agent: the ADK 2.x Workflow that orders the stages of a production run.

The graph is declared once; the Runner executes it. Each node looks up the
:class:`ProductionRun` of its run (by ``run_id`` in the session state) and does
that stage's work. QA failures route ``base_images`` and ``video_clips`` back
to themselves (regenerate with new seeds) until the retry budget is spent.

    plan_intake → dialogue_audio → base_images ⟲ → video_clips ⟲ → lipsync
                → assemble → qa_publish → finalize
"""

from __future__ import annotations

import json
import threading
from typing import Any

from google.adk.events.event import Event
from google.adk.workflow import START, FunctionNode, Workflow

from sparkle_motion.agents.production_run import ProductionRun
from sparkle_motion.errors import InvalidInputError

APP_NAME = "sparkle_motion_production"

_ACTIVE: dict[str, ProductionRun] = {}
_ACTIVE_LOCK = threading.Lock()


def register_run(run: ProductionRun) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE[run.run_id] = run


def unregister_run(run_id: str) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.pop(run_id, None)


def _message_text(node_input: Any) -> str:
    parts = getattr(node_input, "parts", None)
    if parts:
        return "".join(p.text or "" for p in parts)
    return node_input if isinstance(node_input, str) else json.dumps(node_input, default=str)


def _run_for(ctx: Any) -> ProductionRun:
    run_id = ctx.state.get("run_id")
    with _ACTIVE_LOCK:
        run = _ACTIVE.get(run_id)
    if run is None:
        raise InvalidInputError(f"no active production run {run_id!r} in this process", field="run_id")
    return run


def _start_from_message(node_input: Any) -> ProductionRun:
    """Find the run named by the user message, or start one from an inline plan (adk web)."""
    text = _message_text(node_input).strip()
    try:
        message = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"production_agent expects JSON: {{'run_id': ...}} or a MoviePlan ({exc})",
                                field="message") from None
    run_id = message.get("run_id") if isinstance(message, dict) else None
    if run_id:
        with _ACTIVE_LOCK:
            if run_id in _ACTIVE:
                return _ACTIVE[run_id]
    # Deferred: ad-hoc runs (a plan typed into `adk web`) need the registry and store.
    from sparkle_motion.agents.production_service import adhoc_run

    return adhoc_run(message)


def plan_intake(ctx: Any, node_input: Any) -> Event:
    run = _start_from_message(node_input)
    ctx.state["run_id"] = run.run_id
    return Event(output=run.plan_intake())


def dialogue_audio(ctx: Any, node_input: Any) -> Event:
    out = _run_for(ctx).dialogue_audio()
    ctx.state["tts_timeline_uri"] = out["timeline_uri"]
    return Event(output={"timeline_uri": out["timeline_uri"], "report_uri": out["report_uri"]})


def base_images(ctx: Any, node_input: Any) -> Event:
    run = _run_for(ctx)
    route = run.base_images()
    ctx.state["base_images"] = run.results["base_images"]["images"]
    return Event(output={"images": run.results["base_images"]["images"], "attempt": run.attempts["base_images"]},
                 route=route)


def video_clips(ctx: Any, node_input: Any) -> Event:
    run = _run_for(ctx)
    route = run.video_clips()
    ctx.state["video_clips"] = run.results["video_clips"]["clips"]
    return Event(output={"clips": run.results["video_clips"]["clips"], "attempt": run.attempts["video_clips"]},
                 route=route)


def lipsync(ctx: Any, node_input: Any) -> Event:
    return Event(output=_run_for(ctx).lipsync())


def assemble(ctx: Any, node_input: Any) -> Event:
    out = _run_for(ctx).assemble()
    return Event(output={"video_uri": out["video_uri"], "srt_uri": out["srt_uri"]})


def qa_publish(ctx: Any, node_input: Any) -> Event:
    return Event(output=_run_for(ctx).qa_publish())


def finalize(ctx: Any, node_input: Any) -> Event:
    out = _run_for(ctx).finalize()
    ctx.state["video_final_uri"] = out["video_final_uri"]
    return Event(output=out)


def build_production_workflow() -> Workflow:
    nodes = {fn.__name__: FunctionNode(func=fn, name=fn.__name__)
             for fn in (plan_intake, dialogue_audio, base_images, video_clips, lipsync, assemble, qa_publish, finalize)}
    return Workflow(
        name="production_agent",
        description="Executes a MoviePlan stage by stage through the Sparkle Motion FunctionTools.",
        edges=[
            (START, nodes["plan_intake"], nodes["dialogue_audio"], nodes["base_images"]),
            (nodes["base_images"], {"retry": nodes["base_images"], "done": nodes["video_clips"]}),
            (nodes["video_clips"], {"retry": nodes["video_clips"], "done": nodes["lipsync"]}),
            (nodes["lipsync"], nodes["assemble"], nodes["qa_publish"], nodes["finalize"]),
        ],
    )


production_workflow = build_production_workflow()
