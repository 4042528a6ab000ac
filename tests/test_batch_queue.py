"""`make --batch` over production_agent's queue of films (agents/film_queue.py, cli_batch.py).

Acceptance: with ``max_concurrent_runs: 2`` three ideas run two at a time, the third
waits as ``queued``; production_agent is killed while it waits, the supervisor
restarts it, and all three films are made. Also the CLI's refusals of a bad file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.db import utc_now
from sparkle_motion.media import probe
from sparkle_motion.runs import RunRegistry
from sparkle_motion.testing import mesh_env, running_mesh

sys.path.insert(0, str(Path(__file__).parent / "faults"))
from fault_harness import TINY_RENDER, kill9, service_info  # noqa: E402

IDEAS = ["A fox learns to paint the moon", "A robot waters a tiny garden", "A whale sings to a lighthouse"]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparkle_motion.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    ("# only a comment\n\n   \n", "has no ideas"),
    (b"\xff\xfe not utf-8", "not UTF-8"),
])
def test_bad_batch_file_is_a_clear_error_naming_batch(tmp_path, content, message):
    path = tmp_path / "ideas.txt"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    result = _cli("make", "--batch", str(path))
    assert result.returncode == 2, result.stderr
    assert "--batch" in result.stderr and message in result.stderr


def test_batch_and_an_idea_together_are_refused(tmp_path):
    path = tmp_path / "ideas.txt"
    path.write_text("an idea\n")
    result = _cli("make", "an idea", "--batch", str(path))
    assert result.returncode == 2 and "--batch" in result.stderr


def _started(run) -> datetime:
    return datetime.fromisoformat(run.started_at.replace("Z", "+00:00"))


@pytest.mark.slow
def test_make_batch_queues_the_third_film_and_survives_a_restart(tmp_path):
    home = tmp_path / "home"
    ideas = tmp_path / "ideas.txt"
    ideas.write_text("# three short films\n" + "\n\n".join(IDEAS) + "\n")
    films_dir = tmp_path / "films"
    with running_mesh(home, render=TINY_RENDER, settings={"max_concurrent_runs": 2}) as settings:
        registry = RunRegistry(settings.db_path)
        cli = subprocess.Popen(
            [sys.executable, "-m", "sparkle_motion.cli", "make", "--batch", str(ideas), "--shots", "1",
             "--duration", "4", "--qa", "skip", "-o", str(films_dir)],
            env=mesh_env(home, settings.profile_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while True:
                if cli.poll() is not None:
                    raise AssertionError(f"the CLI ended early ({cli.returncode}): {cli.communicate()}")
                assert time.monotonic() < deadline, \
                    f"never saw two running and one queued: {[(r.run_id, r.status) for r in registry.list_runs()]}"
                runs = [r for r in registry.list_runs(limit=50) if r.mode == "run"]
                if sorted(r.status for r in runs) == ["queued", "running", "running"]:
                    break
                time.sleep(0.05)
            queued = next(r for r in runs if r.status == "queued")
            with ProductionClient(settings) as client:
                listing = {r.run_id: r for r in client.runs()}
                assert listing[queued.run_id].queue_position == 1
                assert client.status(queued.run_id).queue_position == 1
            before = service_info(settings, "production_agent")
            killed_at = utc_now()
            kill9(before["pid"])
            out, err = cli.communicate(timeout=420)
        finally:
            if cli.poll() is None:
                cli.kill()
        assert cli.returncode == 0, (out[-2000:], err[-3000:])
        assert service_info(settings, "production_agent")["restarts"] == before["restarts"] + 1

        runs = {r.run_id: r for r in registry.list_runs(limit=50) if r.mode == "run"}
        assert len(runs) == 3 and all(r.status == "succeeded" for r in runs.values()), \
            [(r.run_id, r.status, r.error) for r in runs.values()]
        third = runs[queued.run_id]
        # Still queued when production_agent died: the restarted process started it from the SQLite queue.
        assert third.started_at > killed_at
        events = [e.message for e in registry.log_tail(third.run_id, 50)]
        assert any(m.startswith("queued:") for m in events) and "run started" in events
        # Never more than two at once: the third started only after one of the first two finished.
        first_two = [r for r in runs.values() if r.run_id != third.run_id]
        assert _started(third) >= min(datetime.fromisoformat(r.finished_at.replace("Z", "+00:00"))
                                      for r in first_two)
        registry.close()

    films = sorted(films_dir.glob("*.mp4"))
    assert [f.name[:3] for f in films] == ["01-", "02-", "03-"]
    for film in films:
        video = probe(film).first("video")
        assert video is not None and video.frames and video.frames > 0
    assert out.count("film: ") == 3 and "3 of 3 films made" in out


def test_produce_of_several_plans_checks_every_file_before_starting(tmp_path):
    import json

    from fault_harness import tiny_plan

    good = tmp_path / "a.json"
    good.write_text(json.dumps(tiny_plan(3).model_dump(mode="json")))
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"title": "no shots"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env["SPARKLE_HOME"] = str(tmp_path / "home")   # no mesh here: a bad file must be refused before any start
    result = _cli("produce", str(good), str(bad), env=env)
    assert result.returncode == 2 and "INVALID" in result.stderr and "b.json" in result.stderr
    assert not (tmp_path / "home" / "mesh.json").exists()
