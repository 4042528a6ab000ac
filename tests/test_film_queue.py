"""The queue of films (agents/film_queue.py) over a real run registry, and the migration that made room for it."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

from sparkle_motion.agents.film_queue import FilmQueue
from sparkle_motion.db import connect, load_migrations, migrate
from sparkle_motion.errors import ConflictError, InvalidInputError
from sparkle_motion.runs import RunRegistry


class Starter:
    """The service's side of the contract: starting a run moves it to running (or raises)."""

    def __init__(self, registry: RunRegistry, refuse: set[str] | None = None) -> None:
        self.registry, self.started, self.refuse = registry, [], refuse or set()

    def __call__(self, run_id: str) -> None:
        if run_id in self.refuse:
            raise InvalidInputError("plan artifact is gone", field="plan_uri")
        self.registry.set_status(run_id, "running")
        self.started.append(run_id)


def _runs(registry: RunRegistry, n: int) -> list[str]:
    return [registry.create_run(f"run_{i}", plan_uri=f"artifact+fs://r/p/plan_{i}").run_id for i in range(n)]


def _admit_all(queue: FilmQueue, registry: RunRegistry, run_ids: list[str]) -> list[bool]:
    admitted = []
    for run_id in run_ids:
        ok = queue.admit(run_id)
        if ok:
            registry.set_status(run_id, "running")
        admitted.append(ok)
    return admitted


def test_runs_beyond_the_limit_wait_fifo_and_start_as_slots_free(tmp_path):
    registry = RunRegistry(tmp_path / "sparkle.db")
    starter = Starter(registry)
    queue = FilmQueue(registry, 2, starter)
    ids = _runs(registry, 5)
    assert _admit_all(queue, registry, ids) == [True, True, False, False, False]
    assert [registry.get_run(r).status for r in ids] == ["running", "running", "queued", "queued", "queued"]
    assert queue.positions() == {"run_2": 1, "run_3": 2, "run_4": 3}
    # A new run does not overtake the queue even when a slot is free.
    registry.set_status("run_0", "succeeded")
    late = registry.create_run("run_late").run_id
    queue._active.discard("run_0")  # the slot is free, but nobody dispatched yet
    assert queue.admit(late) is False and queue.position(late) == 4
    queue.dispatch()
    assert starter.started == ["run_2"] and queue.positions() == {"run_3": 1, "run_4": 2, "run_late": 3}
    registry.set_status("run_1", "succeeded")
    queue.release("run_1")
    assert starter.started == ["run_2", "run_3"]
    with pytest.raises(ConflictError) as caught:
        queue.admit("run_4")  # asking again does not jump or duplicate the queue
    assert caught.value.code == "run_queued"


def test_the_queue_survives_a_restart_and_a_cancel_leaves_it(tmp_path):
    db = tmp_path / "sparkle.db"
    registry = RunRegistry(db)
    ids = _runs(registry, 4)
    assert _admit_all(FilmQueue(registry, 1, Starter(registry)), registry, ids) == [True, False, False, False]
    registry.close()

    # A new process: the registry is all that is left; run_0 died with the old one.
    registry = RunRegistry(db)
    registry.set_status("run_0", "interrupted")
    starter = Starter(registry)
    queue = FilmQueue(registry, 1, starter)
    assert queue.positions() == {"run_1": 1, "run_2": 2, "run_3": 3}
    queue.cancel("run_2")
    assert registry.get_run("run_2").status == "cancelled" and registry.get_run("run_2").queue_seq is None
    # The interrupted run resumes first (it was running), then the queue moves in order.
    assert queue.admit("run_0", ahead_of_queue=True) is True
    registry.set_status("run_0", "running")
    queue.dispatch()
    assert starter.started == []
    registry.set_status("run_0", "succeeded")
    queue.release("run_0")
    registry.set_status("run_1", "succeeded")
    queue.release("run_1")
    assert starter.started == ["run_1", "run_3"]


def test_a_run_that_cannot_start_fails_and_frees_its_slot(tmp_path):
    registry = RunRegistry(tmp_path / "sparkle.db")
    ids = _runs(registry, 3)
    starter = Starter(registry, refuse={"run_1"})
    queue = FilmQueue(registry, 1, starter)
    _admit_all(queue, registry, ids)
    registry.set_status("run_0", "succeeded")
    queue.release("run_0")
    assert registry.get_run("run_1").status == "failed"
    assert registry.get_run("run_1").error["field"] == "plan_uri"
    assert starter.started == ["run_2"]


def test_migration_006_keeps_runs_steps_and_events(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations = load_migrations()
    before = [m for m in migrations if m.version < 6]
    assert migrate(conn, before) == 5
    conn.execute("INSERT INTO runs (run_id, mode, qa_mode, status, progress, options, created_at, updated_at)"
                 " VALUES ('run_old', 'run', 'full', 'succeeded', 1, '{}', '2026-01-01T00:00:00Z',"
                 " '2026-01-01T00:00:00Z')")
    conn.execute("INSERT INTO steps (step_id, run_id, stage, item, attempt, status, started_at)"
                 " VALUES ('step_1', 'run_old', 'video_clips', 'shot_001', 1, 'succeeded', '2026-01-01T00:00:00Z')")
    conn.execute("INSERT INTO run_events (run_id, ts, level, message) VALUES ('run_old', 'x', 'info', 'hello')")
    conn.close()

    conn = connect(path)
    assert conn.execute("SELECT status FROM runs WHERE run_id = 'run_old'").fetchone()[0] == "succeeded"
    assert conn.execute("SELECT item FROM steps WHERE step_id = 'step_1'").fetchone()[0] == "shot_001"
    assert conn.execute("SELECT message FROM run_events").fetchone()[0] == "hello"
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '%_v5'").fetchall()
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # The new statuses are allowed and foreign keys point at the new runs table.
    conn.execute("UPDATE runs SET status = 'queued', queue_seq = 1 WHERE run_id = 'run_old'")
    conn.execute("DELETE FROM runs WHERE run_id = 'run_old'")
    assert conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 0
    conn.close()


def test_production_agent_queues_shows_positions_and_cancels_over_http(tmp_path):
    """The HTTP face of the queue: 202 queued, queue_position in /status and /runs, stop → cancelled."""
    from fastapi.testclient import TestClient

    from sparkle_motion.agents.offline_planner import OfflinePlanner
    from sparkle_motion.agents.production_service import create_app
    from sparkle_motion.agents.script_protocol import PlanControls
    from sparkle_motion.config import load_settings

    plan = OfflinePlanner("A kite over the sea", PlanControls(shots=1, duration_s=4, seed=5)).compose()
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load(load_settings({}).profile_path.read_text()),
                                       "max_concurrent_runs": 1}))
    settings = load_settings({"SPARKLE_HOME": str(tmp_path / "home"), "SPARKLE_PROFILE": str(profile)})
    assert settings.max_concurrent_runs == 1
    app = create_app(settings)
    service = app.state.production
    # A film already holds the one slot (as a running run of this process would).
    service.registry.create_run("run_holding_the_slot")
    assert service.queue.admit("run_holding_the_slot")
    with TestClient(app) as client:
        body = {"plan": plan, "qa_mode": "skip"}
        first, second = (client.post("/invoke", json=body).json() for _ in range(2))
        assert first["status"] == second["status"] == "queued"
        assert client.get("/status", params={"run_id": first["run_id"]}).json()["queue_position"] == 1
        listed = {r["run_id"]: r for r in client.get("/runs").json()["runs"]}
        assert listed[second["run_id"]]["queue_position"] == 2 and listed[second["run_id"]]["status"] == "queued"
        again = client.post("/invoke", json={"run_id": first["run_id"], "qa_mode": "skip"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "run_queued"
        stopped = client.post("/control/stop", json={"run_id": first["run_id"]}).json()
        assert stopped["status"] == "cancelled" and stopped["queue_position"] is None
        assert client.get("/status", params={"run_id": second["run_id"]}).json()["queue_position"] == 1
        refused = client.post("/control/pause", json={"run_id": second["run_id"]})
        assert refused.status_code == 409
    service.close()
