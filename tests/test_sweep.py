"""The crash-leftover sweep (artifacts/sweep.py): what it removes, what it never touches, and prune's report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.retention import prune_runs
from sparkle_motion.artifacts.sweep import sweep_leftovers
from sparkle_motion.config import SweepSettings
from sparkle_motion.runs import RunRegistry

POLICY = SweepSettings(longest_job_s=60, unreferenced_grace_s=60)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def backdate_artifacts(store: ArtifactStore, seconds: float) -> None:
    with store.database.write() as conn:
        conn.execute("UPDATE artifacts SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)",
                     (f"-{int(seconds)} seconds",))


def test_old_staging_files_go_new_ones_stay(store: ArtifactStore):
    staging = store.staging_dir()
    old_file, new_file, old_dir = staging / "tool-dead.mp4", staging / "tool-live.mp4", staging / "tool-dead.d"
    old_file.write_bytes(b"x" * 100)
    new_file.write_bytes(b"y")
    old_dir.mkdir()
    (old_dir / "part").write_bytes(b"z" * 10)
    age(old_file, 120)
    age(old_dir, 120)
    dry = sweep_leftovers(store, POLICY, apply=False)
    assert sorted(dry.staging) == ["staging/tool-dead.d", "staging/tool-dead.mp4"] and old_file.exists()
    report = sweep_leftovers(store, POLICY)
    assert sorted(report.staging) == ["staging/tool-dead.d", "staging/tool-dead.mp4"]
    assert report.freed_bytes == 110
    assert not old_file.exists() and not old_dir.exists() and new_file.exists()


def test_unreferenced_production_artifacts_go_referenced_ones_never(store: ArtifactStore):
    registry = RunRegistry(store.db_path)
    try:
        run = registry.create_run(plan_id="le-marché-de-nuit", mode="run")
        registry.set_status(run.run_id, "running")
        referenced = store.put(run.run_id, "video_clips", "video_clip", b"clip", "video/mp4")
        named_in_output = store.put(run.run_id, "dialogue_audio", "tts_timeline", b"wav", "audio/wav")
        orphan = store.put(run.run_id, "video_clips", "video_clip", b"orphan", "video/mp4")
        adhoc = store.put("adhoc", "echo", "text", b"not a production run", "text/plain")
        step = registry.start_step(run.run_id, "video_clips", item="shot_1")
        registry.finish_step(step.step_id, "succeeded", artifact_ids=[referenced.artifact_id],
                             output={"audio_uri": named_in_output.uri})
        backdate_artifacts(store, 3600)
        report = sweep_leftovers(store, POLICY)
        assert report.unreferenced == [orphan.uri]
        assert {m.artifact_id for m in store.list(run.run_id)} == {referenced.artifact_id, named_in_output.artifact_id}
        assert not Path(orphan.local_path).exists()
        for kept in (referenced, named_in_output, adhoc):
            store.verify(kept.uri)
        # Within the grace period nothing is unreferenced yet (a step is being recorded).
        fresh = store.put(run.run_id, "video_clips", "video_clip", b"fresh", "video/mp4")
        assert sweep_leftovers(store, POLICY).unreferenced == []
        store.verify(fresh.uri)
    finally:
        registry.close()


def test_prune_reports_the_sweep(store: ArtifactStore):
    (store.staging_dir() / "x-dead.wav").write_bytes(b"1234")
    age(store.staging_dir() / "x-dead.wav", 3600)
    result = prune_runs(store, older_than_days=30, apply=True, sweep=POLICY)
    assert result.sweep is not None and result.sweep.staging == ["staging/x-dead.wav"]
    assert "swept 1 staging file(s)" in str(result)
