"""The production run engine in-process: dialogue stitching rules, caching, a tool that is down."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from sparkle_motion.agents.production_estimate import estimate
from sparkle_motion.agents.production_run import ProductionRun, StageFailed
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import load_settings
from sparkle_motion.media import read_wav, write_wav
from sparkle_motion.plan import validate_plan
from sparkle_motion.runs import RunRegistry
from sparkle_motion.services import ToolClient
from sparkle_motion.testing import free_port

PLANS = Path(__file__).parent / "data" / "plans"


@pytest.fixture()
def engine_parts(tmp_path):
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    store = ArtifactStore(tmp_path)
    registry = RunRegistry(settings.db_path)
    plan = validate_plan(json.loads((PLANS / "rooftop_valid.json").read_text()))
    registry.create_run("run_test", plan_id=plan.metadata.plan_id)
    registry.set_status("run_test", "running")
    return settings, store, registry, plan


def make_run(parts, **kw) -> ProductionRun:
    settings, store, registry, plan = parts
    return ProductionRun("run_test", plan, settings=settings, store=store, registry=registry, **kw)


def speech_like(seconds: float, sr: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def stored_line(store: ArtifactStore, seconds: float) -> str:
    path = store.staging_dir() / f"line_{seconds}.wav"
    write_wav(path, speech_like(seconds), 24000)
    return store.put("run_test", "dialogue_audio", "tts_line", path, "audio/wav", move=True).uri


def lines_for(run: ProductionRun, durations: list[float]) -> list[dict]:
    entries = [(i, e) for i, e in enumerate(run.plan.dialogue_timeline) if e.type == "dialogue"]
    return [{"index": i, "character_id": e.character_id, "character_name": e.character_id, "text": e.text,
             "start_s": e.start_time_sec, "slot_s": e.duration_sec, "uri": stored_line(run.store, d),
             "word_timings": [{"word": "x", "start_s": 0.0, "end_s": d}]}
            for (i, e), d in zip(entries, durations)]


def test_stitch_places_each_line_at_its_start_to_the_sample(engine_parts):
    run = make_run(engine_parts)
    outcome = run._stitch_timeline(lines_for(run, [2.2, 1.6]))
    samples, sr = read_wav(run.store.path_for(outcome.output["timeline_uri"]))
    assert len(samples) == round(run.plan.runtime_s * sr)
    for line in outcome.output["lines"]:
        start = round(line["start_planned_s"] * sr)
        assert np.all(samples[start - 200:start] == 0) and np.abs(samples[start:start + 2400]).max() > 0.05
        assert line["start_actual_s"] == pytest.approx(line["start_planned_s"], abs=1 / sr)
        assert line["padding_s"] == pytest.approx(line["slot_s"] - line["raw_duration_s"], abs=1e-3)
        assert line["word_timings"][0]["start_s"] == pytest.approx(line["start_actual_s"])


def test_speech_may_run_into_silence_but_not_into_the_next_line(engine_parts):
    run = make_run(engine_parts)
    # Slot 0 is 2.5 s and the next line starts 2.9 s after it: 2.8 s runs into the silence.
    out = run._stitch_timeline(lines_for(run, [2.8, 1.0])).output
    assert out["lines"][0]["overrun_s"] == pytest.approx(0.3, abs=1e-3)
    with pytest.raises(StageFailed) as info:
        run._stitch_timeline(lines_for(run, [3.2, 1.0]))
    assert "dialogue_timeline[1]" in info.value.message and "next line" in info.value.message


def test_frame_counts_sum_to_the_runtime(engine_parts):
    run = make_run(engine_parts)
    assert sum(run.frame_counts) == round(run.plan.runtime_s * run.fps)
    graph, resources = estimate(run.plan, run.settings, "full")
    assert resources["frames"] == sum(run.frame_counts)
    assert {g["stage"] for g in graph} >= {"dialogue_audio", "video_clips", "finalize"}


def test_steps_are_cached_by_input_hash(engine_parts):
    run = make_run(engine_parts)
    calls = []

    def work():
        calls.append(1)
        manifest = run.store.put_json("run_test", "plan_intake", "probe", {"n": len(calls)})
        from sparkle_motion.agents.production_run import StepOutcome
        return StepOutcome({"uri": manifest.uri}, [manifest.artifact_id])

    first = run.step("plan_intake", "x", None, {"a": 1}, work)
    again = run.step("plan_intake", "x", None, {"a": 1}, work)
    other = run.step("plan_intake", "x", None, {"a": 2}, work)
    assert len(calls) == 2 and first == again and other != first
    statuses = [s.status for s in run.registry.list_steps("run_test")]
    assert statuses == ["succeeded", "cached", "succeeded"]
    forced = make_run(engine_parts, force_from="plan_intake")
    forced.step("plan_intake", "x", None, {"a": 1}, work)
    assert len(calls) == 3


def test_a_tool_that_is_down_is_retried_then_fails_the_stage_clearly(engine_parts):
    dead = f"http://127.0.0.1:{free_port()}"
    run = make_run(engine_parts, client_factory=lambda tool_id: ToolClient(
        tool_id, base_url=dead, token="", retries=2, backoff_s=0.05, timeout=5))
    run.plan_intake()
    started = time.perf_counter()
    with pytest.raises(StageFailed) as info:
        run.dialogue_audio()
    assert "tts_chatterbox" in info.value.message and "cannot reach" in info.value.message
    assert info.value.context["stage"] == "dialogue_audio"
    assert info.value.context["remote_error"] == {}
    assert time.perf_counter() - started < 10
    failed = [s for s in run.registry.list_steps("run_test") if s.status == "failed"]
    assert failed and failed[0].stage == "dialogue_audio"


def test_stop_request_ends_the_run_before_the_next_step(engine_parts):
    from sparkle_motion.agents.production_run import RunStopped

    run = make_run(engine_parts)
    run.registry.set_status("run_test", "stopped")
    with pytest.raises(RunStopped):
        run.plan_intake()
    assert run.registry.list_steps("run_test") == []


def test_a_line_too_long_for_its_window_is_re_voiced_faster_then_fits(engine_parts, tmp_path):
    from sparkle_motion.testing import running_tool

    settings, store, registry, plan = engine_parts
    data = plan.model_dump(mode="json")
    data["dialogue_timeline"][1]["text"] = "I was scared of losing us, and of losing myself too."
    plan = validate_plan(data)
    with running_tool("tts_chatterbox", home=settings.home) as tts:
        run = ProductionRun("run_test", plan, settings=settings, store=store, registry=registry,
                            client_factory=lambda tool_id: ToolClient(tool_id, base_url=tts.url, token=""))
        out = run.dialogue_audio()
    first = out["lines"][0]
    room = 3.3 - 0.4  # until the next line starts
    assert first["rate"] is not None and first["rate"] > 1.0
    assert first["end_actual_s"] <= 0.4 + room + 1e-3
    items = [s.item for s in registry.list_steps("run_test") if s.status == "succeeded"]
    assert "line_001" in items and "line_001.fit1" in items
    samples, sr = read_wav(store.path_for(out["timeline_uri"]))
    assert len(samples) == round(plan.runtime_s * sr)


def test_a_plan_sent_as_a_message_becomes_a_recorded_run_in_the_workflow_table(engine_parts):
    from sparkle_motion.agents.active_runs import ActiveRuns
    from sparkle_motion.agents.production_run import start_adhoc_run
    from sparkle_motion.errors import InvalidInputError

    settings, store, registry, plan = engine_parts
    runs = ActiveRuns(adhoc=lambda message: start_adhoc_run(message, settings=settings, store=store,
                                                            registry=registry))
    run = runs.start_adhoc({"plan": plan.model_dump(mode="json"), "qa_mode": "skip"})
    assert runs.require(run.run_id) is run and run.qa_mode == "skip"
    record = registry.get_run(run.run_id)
    assert record.status == "running" and record.plan_id == plan.plan_id
    assert store.get(record.plan_uri).metadata["source"] == "adk"
    runs.remove(run.run_id)
    with pytest.raises(InvalidInputError):
        runs.require(run.run_id)
    with pytest.raises(InvalidInputError):
        runs.start_adhoc([])
    with pytest.raises(InvalidInputError):
        ActiveRuns().start_adhoc({"plan": {}})


def test_tool_requests_carry_only_what_production_sets(engine_parts):
    from function_tools.images_sdxl.models import ImagesSdxlRequest
    from function_tools.videos_wan.models import VideosWanRequest
    from sparkle_motion.agents.production_run import tool_payload

    # The payload is also the step's cache key: a tool default must not leak into it.
    request = ImagesSdxlRequest(prompt="a roof", seed=7, width=64, height=64, count=1, characters=[])
    assert tool_payload(request) == {"prompt": "a roof", "seed": 7, "width": 64, "height": 64, "count": 1,
                                     "characters": []}
    run = make_run(engine_parts)
    with pytest.raises(StageFailed) as info:
        with run.building("videos_wan", "video_clips"):
            VideosWanRequest(start_frame_uri="", end_frame_uri="b", num_frames=2)
    assert info.value.context["stage"] == "video_clips" and info.value.context["remote_error"]["field"] == \
        "start_frame_uri"
    assert info.value.message.startswith("videos_wan failed in stage video_clips:")
