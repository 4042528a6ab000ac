"""RunRegistry: runs, status transitions, steps, cache lookups, logs, interrupted runs."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sparkle_motion.errors import BackendError, ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from sparkle_motion.runs import RUN_TRANSITIONS, Heartbeat, RunRegistry, RunStateError

# How to reach each status from 'pending' through allowed transitions.
PATH_TO: dict[str, list[str]] = {
    "pending": [], "running": ["running"], "paused": ["running", "paused"],
    "interrupted": ["running", "interrupted"], "failed": ["failed"], "stopped": ["stopped"],
    "succeeded": ["running", "succeeded"], "awaiting_review": ["running", "awaiting_review"],
}


@pytest.fixture
def registry(tmp_path: Path) -> RunRegistry:
    return RunRegistry(tmp_path / "sparkle.db")


def test_create_get_list_and_defaults(registry: RunRegistry) -> None:
    run = registry.create_run(plan_id="plan_7", plan_uri="artifact+fs://run_x/script/plan_1",
                              mode="dry", qa_mode="skip", options={"fps": 24})
    assert run.run_id.startswith("run_") and run.status == "pending" and run.progress == 0.0
    assert (run.plan_id, run.mode, run.qa_mode, run.options) == ("plan_7", "dry", "skip", {"fps": 24})
    assert run.started_at is None and run.finished_at is None and run.created_at == run.updated_at
    assert registry.get_run(run.run_id) == run
    second = registry.create_run("run_named")
    assert [r.run_id for r in registry.list_runs()] == ["run_named", run.run_id]
    assert [r.run_id for r in registry.list_runs(limit=1)] == ["run_named"]
    registry.set_status(second.run_id, "running")
    assert [r.run_id for r in registry.list_runs(status="running")] == ["run_named"]


def test_registry_uses_settings_db_path_by_default(sparkle_home: Path) -> None:
    registry = RunRegistry()
    assert registry.db_path == sparkle_home / "sparkle.db"
    registry.create_run("run_default")
    assert (sparkle_home / "sparkle.db").exists()


@pytest.mark.parametrize("kwargs,field", [
    ({"run_id": "../x"}, "run_id"), ({"plan_id": "a/b"}, "plan_id"), ({"mode": "fast"}, "mode"),
    ({"qa_mode": "none"}, "qa_mode"), ({"options": [1]}, "options"), ({"plan_uri": ""}, "plan_uri"),
    ({"options": {"k": object()}}, "options.k"),
])
def test_create_run_validation(registry: RunRegistry, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        registry.create_run(**kwargs)
    assert info.value.field == field


def test_duplicate_and_unknown_runs(registry: RunRegistry) -> None:
    registry.create_run("run_dup")
    with pytest.raises(InvalidInputError, match="already exists") as info:
        registry.create_run("run_dup")
    assert info.value.field == "run_id"
    with pytest.raises(NotFoundError) as info:
        registry.get_run("run_missing")
    assert info.value.field == "run_id"
    for call in (lambda: registry.update_run("run_missing", progress=0.1),
                 lambda: registry.set_status("run_missing", "running"),
                 lambda: registry.log("run_missing", "info", "x"),
                 lambda: registry.start_step("run_missing", "images")):
        with pytest.raises(NotFoundError):
            call()


def test_update_run_whitelist_and_progress_validation(registry: RunRegistry) -> None:
    run = registry.create_run("run_u")
    updated = registry.update_run("run_u", progress=0.25, current_stage="images", plan_id="plan_2",
                                  options={"retries": 2})
    assert (updated.progress, updated.current_stage, updated.plan_id, updated.options) == \
        (0.25, "images", "plan_2", {"retries": 2})
    assert updated.updated_at > run.updated_at
    assert registry.update_run("run_u", progress=1.0000000001).progress == 1.0
    for bad in (1.5, -0.1, float("nan"), float("inf"), "0.5", True, None):
        with pytest.raises(InvalidInputError) as info:
            registry.update_run("run_u", progress=bad)
        assert info.value.field == "progress"
    for name in ("status", "created_at", "owner_pid", "bogus"):
        with pytest.raises(InvalidInputError) as info:
            registry.update_run("run_u", **{name: "x"})
        assert info.value.field == name
    with pytest.raises(InvalidInputError, match="set_status"):
        registry.update_run("run_u", status="running")
    with pytest.raises(PayloadTooLargeError):
        registry.update_run("run_u", options={"x": "y" * 70_000})
    stored_error = registry.update_run("run_u", error=ValueError("bad frame")).error
    assert stored_error == {"type": "ValueError", "message": "bad frame"}
    assert registry.update_run("run_u", error=None).error is None
    assert registry.get_run("run_u").progress == 1.0


@pytest.mark.parametrize("source", sorted(PATH_TO))
def test_status_transition_matrix(registry: RunRegistry, source: str) -> None:
    for target in PATH_TO:
        run_id = f"run_{source}_{target}"
        registry.create_run(run_id)
        for step in PATH_TO[source]:
            registry.set_status(run_id, step)
        assert registry.get_run(run_id).status == source
        if target in RUN_TRANSITIONS[source]:
            assert registry.set_status(run_id, target).status == target
        else:
            with pytest.raises(RunStateError) as info:
                registry.set_status(run_id, target)
            assert info.value.http_status == 409 and info.value.context["from"] == source
            assert isinstance(info.value, ConflictError) and info.value.code == "invalid_transition"
            assert registry.get_run(run_id).status == source


def test_status_side_effects(registry: RunRegistry) -> None:
    registry.create_run("run_s")
    running = registry.set_status("run_s", "running", current_stage="script")
    assert running.started_at and running.owner_pid == os.getpid() and running.heartbeat_at
    assert running.current_stage == "script" and running.finished_at is None
    paused = registry.set_status("run_s", "paused")
    assert paused.owner_pid is None
    resumed = registry.set_status("run_s", "running")
    assert resumed.started_at == running.started_at, "resuming keeps the first start time"
    failed = registry.set_status("run_s", "failed", error=BackendError("ffmpeg died", context={"rc": 1}))
    assert failed.finished_at and failed.error["code"] == "backend_error"
    assert failed.error["context"] == {"rc": 1} and failed.error["type"] == "BackendError"
    retried = registry.set_status("run_s", "running")
    assert retried.error is None and retried.finished_at is None
    done = registry.set_status("run_s", "succeeded")
    assert done.progress == 1.0 and done.finished_at and done.owner_pid is None
    with pytest.raises(InvalidInputError) as info:
        registry.set_status("run_s", "done")
    assert info.value.field == "status"


def test_steps_attempts_finish_and_listing(registry: RunRegistry) -> None:
    registry.create_run("run_st")
    with pytest.raises(RunStateError, match="only while it is running"):
        registry.start_step("run_st", "images")
    registry.set_status("run_st", "running")
    a1 = registry.start_step("run_st", "images", item="shot_001", input_hash="h1")
    assert (a1.attempt, a1.status, a1.completed_at) == (1, "running", None)
    assert registry.get_run("run_st").current_stage == "images"
    failed = registry.finish_step(a1.step_id, "failed", error=RuntimeError("oom"))
    assert failed.error == {"type": "RuntimeError", "message": "oom"} and failed.duration_s >= 0
    a2 = registry.start_step("run_st", "images", item="shot_001", input_hash="h1")
    other_shot = registry.start_step("run_st", "images", item="shot_002")
    tts = registry.start_step("run_st", "tts")
    assert (a2.attempt, other_shot.attempt, tts.attempt) == (2, 1, 1)
    done = registry.finish_step(a2.step_id, "succeeded", artifact_ids=["frame_abc", "frame_def"],
                                output={"frames": 2})
    assert done.artifact_ids == ["frame_abc", "frame_def"] and done.output == {"frames": 2}
    assert done.completed_at >= done.started_at and done.duration_s is not None
    with pytest.raises(RunStateError, match="already finished"):
        registry.finish_step(a2.step_id, "failed")
    with pytest.raises(InvalidInputError) as info:
        registry.finish_step(tts.step_id, "running")
    assert info.value.field == "status"
    with pytest.raises(InvalidInputError) as info:
        registry.finish_step(tts.step_id, "succeeded", artifact_ids=["ok", "../bad"])
    assert info.value.field == "artifact_ids[1]"
    with pytest.raises(InvalidInputError):
        registry.finish_step(tts.step_id, "succeeded", artifact_ids="frame_abc")
    with pytest.raises(NotFoundError):
        registry.finish_step("step_unknown", "succeeded")
    assert registry.get_step(tts.step_id).status == "running", "refused finishes change nothing"
    assert [s.step_id for s in registry.list_steps("run_st")] == [a1.step_id, a2.step_id, other_shot.step_id,
                                                                  tts.step_id]
    assert [s.step_id for s in registry.list_steps("run_st", stage="tts")] == [tts.step_id]


def test_find_cached_step_across_runs(registry: RunRegistry) -> None:
    for run_id in ("run_c1", "run_c2"):
        registry.create_run(run_id)
        registry.set_status(run_id, "running")
    old = registry.start_step("run_c1", "images", item="shot_001", input_hash="abc123")
    registry.finish_step(old.step_id, "succeeded", artifact_ids=["img_old"])
    new = registry.start_step("run_c2", "images", item="shot_001", input_hash="abc123")
    registry.finish_step(new.step_id, "succeeded", artifact_ids=["img_new"])
    failed = registry.start_step("run_c2", "images", item="shot_001", input_hash="abc123")
    registry.finish_step(failed.step_id, "failed")
    registry.start_step("run_c2", "images", item="shot_001", input_hash="abc123")  # still running
    hit = registry.find_cached_step("images", "shot_001", "abc123")
    assert hit is not None and hit.step_id == new.step_id and hit.artifact_ids == ["img_new"]
    assert registry.find_cached_step("images", "shot_002", "abc123") is None
    assert registry.find_cached_step("videos", "shot_001", "abc123") is None
    assert registry.find_cached_step("images", "shot_001", "zzz") is None
    no_shot = registry.start_step("run_c1", "assemble", input_hash="final1")
    registry.finish_step(no_shot.step_id, "succeeded")
    assert registry.find_cached_step("assemble", None, "final1").step_id == no_shot.step_id
    assert registry.find_cached_step("assemble", "shot_001", "final1") is None


def test_log_and_tail(registry: RunRegistry) -> None:
    registry.create_run("run_l")
    for i in range(60):
        registry.log("run_l", "info" if i % 2 else "debug", f"line {i}", index=i)
    tail = registry.log_tail("run_l")
    assert [e.message for e in tail] == [f"line {i}" for i in range(10, 60)]
    assert tail[-1].data == {"index": 59} and tail[-1].level == "info" and tail[0].level == "debug"
    assert [e.message for e in registry.log_tail("run_l", n=3)] == ["line 57", "line 58", "line 59"]
    registry.log("run_l", "error", "x" * 10_000, path=Path("/tmp/p"))
    last = registry.log_tail("run_l", n=1)[0]
    assert len(last.message) < 4100 and "chars cut" in last.message
    assert last.data == {"path": "/tmp/p"}
    registry.log("run_l", "warning", "big", blob="b" * 100_000)
    assert registry.log_tail("run_l", n=1)[0].data["data_dropped"] is True
    for bad_level in ("fatal", "INFO"):
        with pytest.raises(InvalidInputError) as info:
            registry.log("run_l", bad_level, "x")
        assert info.value.field == "level"
    with pytest.raises(InvalidInputError):
        registry.log_tail("run_l", n=0)


def test_persistence_across_instances(tmp_path: Path) -> None:
    first = RunRegistry(tmp_path / "db.sqlite")
    first.create_run("run_p", plan_id="plan_p")
    first.set_status("run_p", "running")
    step = first.start_step("run_p", "script", input_hash="h")
    first.finish_step(step.step_id, "succeeded", output={"ok": True})
    first.log("run_p", "info", "persisted")
    first.close()
    second = RunRegistry(tmp_path / "db.sqlite")
    assert second.get_run("run_p").status == "running"
    assert second.list_steps("run_p")[0].output == {"ok": True}
    assert second.log_tail("run_p")[0].message == "persisted"
    assert second.delete_run("run_p") is True
    assert second.list_steps("run_p") == [] and second.delete_run("run_p") is False


_OWNER_CHILD = textwrap.dedent("""
    import sys
    from sparkle_motion.runs import RunRegistry
    registry = RunRegistry(sys.argv[1])
    registry.set_status(sys.argv[2], "running")
    registry.start_step(sys.argv[2], "videos", item="shot_001")
    # exits without finishing: the crash this test is about
""")


def test_mark_interrupted_when_owner_process_is_gone(registry: RunRegistry) -> None:
    registry.create_run("run_orphan")
    subprocess.run([sys.executable, "-c", _OWNER_CHILD, str(registry.db_path), "run_orphan"], check=True)
    orphan = registry.get_run("run_orphan")
    assert orphan.status == "running" and orphan.owner_pid != os.getpid()
    registry.create_run("run_alive")
    registry.set_status("run_alive", "running")
    assert registry.mark_interrupted(stale_after_s=3600) == ["run_orphan"]
    marked = registry.get_run("run_orphan")
    assert marked.status == "interrupted" and marked.owner_pid is None
    assert "owner process exited" in marked.error["message"] and marked.error["owner_pid"] == orphan.owner_pid
    (step,) = registry.list_steps("run_orphan")
    assert step.status == "failed" and step.completed_at and step.error["type"] == "Interrupted"
    assert "interrupted" in registry.log_tail("run_orphan")[-1].message
    assert registry.get_run("run_alive").status == "running"
    assert registry.mark_interrupted(stale_after_s=3600) == []
    assert registry.set_status("run_orphan", "running").status == "running", "interrupted runs can resume"


def _age_heartbeat(registry: RunRegistry, run_id: str, seconds: float) -> None:
    from datetime import timedelta

    from sparkle_motion.db import format_ts, parse_ts, utc_now

    conn = sqlite3.connect(registry.db_path)
    with conn:
        conn.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?",
                     (format_ts(parse_ts(utc_now()) - timedelta(seconds=seconds)), run_id))
    conn.close()


def test_mark_interrupted_on_stale_heartbeat(registry: RunRegistry) -> None:
    registry.create_run("run_stale")
    registry.set_status("run_stale", "running")
    registry.create_run("run_beating")
    registry.set_status("run_beating", "running")
    _age_heartbeat(registry, "run_stale", 120)
    _age_heartbeat(registry, "run_beating", 120)
    registry.heartbeat("run_beating")
    assert registry.mark_interrupted(stale_after_s=60) == ["run_stale"]
    assert registry.get_run("run_stale").error["message"] == "run interrupted: no heartbeat for 60 s"
    assert registry.get_run("run_beating").status == "running"
    with pytest.raises(RunStateError):
        registry.heartbeat("run_stale")
    with pytest.raises(InvalidInputError):
        registry.mark_interrupted(stale_after_s=0)


def test_heartbeat_and_owner_updates_refresh_the_heartbeat(registry: RunRegistry) -> None:
    registry.create_run("run_k")
    registry.set_status("run_k", "running")
    _age_heartbeat(registry, "run_k", 120)
    aged = registry.get_run("run_k").heartbeat_at
    assert registry.update_run("run_k", progress=0.1).heartbeat_at > aged, "the owner's updates are heartbeats"
    _age_heartbeat(registry, "run_k", 120)
    aged = registry.get_run("run_k").heartbeat_at
    heartbeat = Heartbeat(registry, lambda: ["run_k"], interval_s=0.01)
    heartbeat.start()
    try:
        deadline = time.monotonic() + 10
        while registry.get_run("run_k").heartbeat_at <= aged and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        heartbeat.stop()
    assert registry.get_run("run_k").heartbeat_at > aged
    assert registry.mark_interrupted(stale_after_s=60) == []


def test_log_is_bounded_per_run(registry: RunRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    import sparkle_motion.runs.registry as registry_module

    monkeypatch.setattr(registry_module, "MAX_EVENTS_PER_RUN", 10)
    registry.create_run("run_other")
    registry.log("run_other", "info", "keep me")
    registry.create_run("run_noisy")
    for i in range(250):
        registry.log("run_noisy", "info", f"n{i}")
    kept = [e.message for e in registry.log_tail("run_noisy", n=1000)]
    assert len(kept) < 100 and kept[-1] == "n249" and kept == [f"n{i}" for i in range(250 - len(kept), 250)]
    assert [e.message for e in registry.log_tail("run_other")] == ["keep me"]


def _claim(db_path: str, run_id: str) -> str:
    try:
        RunRegistry(db_path).set_status(run_id, "running")
        return "won"
    except RunStateError:
        return "lost"


def _log_many(db_path: str, run_id: str, tag: str) -> None:
    registry = RunRegistry(db_path)
    for i in range(50):
        registry.log(run_id, "info", f"{tag}-{i}")


def test_concurrent_processes_claim_once_and_log_everything(registry: RunRegistry) -> None:
    registry.create_run("run_race")
    db = str(registry.db_path)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outcomes = pool.starmap(_claim, [(db, "run_race"), (db, "run_race")])
        assert sorted(outcomes) == ["lost", "won"], "status changes are compare-and-set"
        pool.starmap(_log_many, [(db, "run_race", "a"), (db, "run_race", "b")])
    messages = [e.message for e in registry.log_tail("run_race", n=1000)]
    assert sorted(messages) == sorted([f"a-{i}" for i in range(50)] + [f"b-{i}" for i in range(50)])
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM run_events").fetchone()[0] == 100
