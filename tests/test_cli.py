"""The `sparkle-motion` command line, run as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from mesh_harness import mesh_env, write_test_profile
from store_fixtures import put_old_and_new_run

PLANS = Path(__file__).parent / "data" / "plans"
REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sparkle_motion.cli", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), cwd=cwd, timeout=timeout)


def test_validate_ok_and_every_violation_with_exit_codes(tmp_path):
    ok = cli("validate", str(PLANS / "rooftop_valid.json"))
    assert ok.returncode == 0 and ok.stdout.startswith("OK")
    bad = cli("validate", str(PLANS / "rooftop_reference.json"))
    assert bad.returncode == 2
    assert "7 violation(s)" in bad.stderr
    assert "validated_plan.dialogue_timeline[0].start_time_sec: the timeline must start at 0 s but starts at 8.4 s" \
        in bad.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    broken = cli("validate", str(garbage))
    assert broken.returncode == 2 and "$" in broken.stderr


def test_schemas_export_reproduces_the_committed_schemas_byte_for_byte(tmp_path):
    result = cli("schemas", "export", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    committed = {p.name: p.read_bytes() for p in (REPO / "schemas").glob("*.schema.json")}
    exported = {p.name: p.read_bytes() for p in tmp_path.glob("*.schema.json")}
    assert exported == committed
    assert cli("schemas", "check").returncode == 0


def test_make_rejects_bad_input_with_exit_2(tmp_path):
    env = {**os.environ, "SPARKLE_HOME": str(tmp_path)}
    assert cli("make", "   ", env=env).returncode == 2
    assert cli("make", "an idea", "--qa", "sometimes", env=env).returncode == 2
    assert cli("make", "an idea", "--shots", "0", env=env).returncode == 2


def decoded_signature(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return len(frames), np.stack(frames[:: max(1, len(frames) // 8)]).astype(np.float32), audio


@pytest.mark.slow
@pytest.mark.xdist_group("mesh")
def small_mesh_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI run against its own mesh rendering 256x144@12 (fast films)."""
    home = tmp_path / "home"
    return mesh_env(home, write_test_profile(home, render={"fps": 12, "width": 256, "height": 144}))


def test_make_two_ideas_give_two_films(tmp_path):
    env = small_mesh_env(tmp_path)
    films = []
    try:
        for n, idea in enumerate(["A lighthouse keeper befriends a storm at night",
                                  "Two chefs race to finish a wedding cake in a sunny Paris kitchen"]):
            out = tmp_path / f"film{n}.mp4"
            result = cli("make", idea, "-o", str(out), "--shots", "2", "--duration", "6", "--seed", "5",
                         env=env, cwd=tmp_path)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "sparkle-offline-planner" in result.stdout and str(out.resolve()) in result.stdout
            assert "QA verdict" in result.stdout
            films.append(out)
        runs = cli("runs", env=env, cwd=tmp_path)
        assert runs.returncode == 0 and runs.stdout.count("succeeded") >= 2
        plan_file = tmp_path / "plan.json"
        planned = cli("plan", "A robot learns to paint in a quiet forest", "-o", str(plan_file), env=env, cwd=tmp_path)
        assert planned.returncode == 0, planned.stderr
        assert json.loads(plan_file.read_text())["metadata"]["source"] == "sparkle-offline-planner"
    finally:
        cli("down", env=env, cwd=tmp_path)
    (frames_a, pics_a, audio_a), (frames_b, pics_b, audio_b) = map(decoded_signature, films)
    assert abs(frames_a - 6 * 12) <= 1 and abs(frames_b - 6 * 12) <= 1
    assert hashlib.sha256(films[0].read_bytes()).digest() != hashlib.sha256(films[1].read_bytes()).digest()
    n = min(len(pics_a), len(pics_b))
    assert float(np.abs(pics_a[:n] - pics_b[:n]).mean()) > 10  # different pictures, not noise
    m = min(len(audio_a), len(audio_b))
    assert float(np.abs(audio_a[:m] - audio_b[:m]).mean()) > 1e-3  # different speech


def test_prune_reports_then_applies_the_retention_policy(tmp_path):
    from sparkle_motion.artifacts import ArtifactStore

    home = tmp_path / "home"
    put_old_and_new_run(home)
    env = {**os.environ, "SPARKLE_HOME": str(home), "COLUMNS": "200"}
    assert cli("prune", env=env).returncode == 2
    dry = cli("prune", "--max-bytes", "1500", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["would delete run_old: 0.0 MB, 0.0 days old",
                                       "1 run(s), 0.0 MB would be freed (dry run; --apply to delete)",
                                       "would sweep 0 staging file(s), 0 unindexed blob(s), "
                                       "0 unreferenced artifact(s): 0.0 MB"]
    applied = cli("prune", "--max-bytes", "1500", "--apply", env=env)
    assert applied.returncode == 0 and applied.stdout.startswith("deleted run_old:")
    store = ArtifactStore(home)
    try:
        assert not store.list("run_old") and store.list("run_new")
    finally:
        store.close()
