"""Migration 005: a database from before review gates accepts awaiting_review and keeps its runs and steps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sparkle_motion.db import connect, load_migrations
from sparkle_motion.runs import RunRegistry


def test_a_database_from_before_review_gates_takes_awaiting_review_and_keeps_its_steps(tmp_path: Path) -> None:
    db = tmp_path / "sparkle.db"
    old = connect(db, migrations=[m for m in load_migrations() if m.version <= 4])
    old.execute("INSERT INTO runs (run_id, mode, qa_mode, status, created_at, updated_at)"
                " VALUES ('run_old', 'run', 'full', 'running', 't', 't')")
    old.execute("INSERT INTO steps (step_id, run_id, stage, item, attempt, status, input_hash, started_at)"
                " VALUES ('step_old', 'run_old', 'base_images', 'frame_002', 1, 'succeeded', 'h', 't')")
    with pytest.raises(sqlite3.IntegrityError):
        old.execute("UPDATE runs SET status = 'awaiting_review' WHERE run_id = 'run_old'")
    other = sqlite3.connect(db)          # a connection opened before the migration, still open after it
    other.execute("SELECT COUNT(*) FROM runs").fetchone()
    old.close()

    registry = RunRegistry(db)          # applies 005
    assert registry.set_status("run_old", "awaiting_review").status == "awaiting_review"
    assert [s.item for s in registry.list_steps("run_old")] == ["frame_002"], "no step was lost"
    other.execute("UPDATE runs SET status = 'running' WHERE run_id = 'run_old'")
    other.execute("UPDATE runs SET status = 'awaiting_review' WHERE run_id = 'run_old'")   # it sees the new rule
    other.commit()
    with pytest.raises(sqlite3.IntegrityError):
        other.execute("UPDATE runs SET status = 'nonsense' WHERE run_id = 'run_old'")
    conn = connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
