"""sqlite connect + forward migrations (sparkle_motion.db)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from sparkle_motion.db import (
    SchemaError,
    connect,
    current_version,
    encode_json,
    load_migrations,
    split_statements,
)
from sparkle_motion.errors import InvalidInputError, PayloadTooLargeError

EXPECTED_TABLES = {"schema_version", "artifacts", "runs", "steps", "run_events", "adk_artifact_versions"}


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")}


def test_fresh_database_gets_every_migration_and_pragmas(tmp_path: Path) -> None:
    conn = connect(tmp_path / "sub" / "s.db")
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert current_version(conn) == migrations[-1].version
    assert EXPECTED_TABLES <= _tables(conn)
    rows = conn.execute("SELECT version, name, checksum FROM schema_version ORDER BY version").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(m.version, m.name, m.checksum) for m in migrations]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_reconnect_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    first = connect(db)
    before = first.execute("SELECT version, applied_at FROM schema_version ORDER BY version").fetchall()
    first.close()
    second = connect(db)
    after = second.execute("SELECT version, applied_at FROM schema_version ORDER BY version").fetchall()
    assert [tuple(r) for r in before] == [tuple(r) for r in after]


def test_refuses_database_newer_than_code(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    conn = connect(db)
    conn.execute("INSERT INTO schema_version VALUES (999, 'future', 'x', '2030-01-01T00:00:00.000000Z')")
    conn.close()
    with pytest.raises(SchemaError) as info:
        connect(db)
    assert "999" in info.value.message and info.value.context["db_version"] == 999


def _write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(sql, encoding="utf-8")


def test_failed_migration_rolls_back_whole_file(tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    _write(schema, "001_base.sql", "CREATE TABLE a (x INTEGER);")
    _write(schema, "002_broken.sql", "CREATE TABLE b (y INTEGER);\nINSERT INTO no_such_table VALUES (1);")
    with pytest.raises(SchemaError) as info:
        connect(tmp_path / "s.db", migrations=load_migrations(schema))
    assert "002_broken.sql" in info.value.message
    conn = connect(tmp_path / "s.db", migrate_schema=False)
    assert current_version(conn) == 1
    assert "a" in _tables(conn) and "b" not in _tables(conn)


def test_new_migration_file_is_applied_forward(tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    _write(schema, "001_base.sql", "CREATE TABLE a (x INTEGER);")
    connect(tmp_path / "s.db", migrations=load_migrations(schema)).close()
    _write(schema, "002_more.sql", "ALTER TABLE a ADD COLUMN y TEXT;")
    conn = connect(tmp_path / "s.db", migrations=load_migrations(schema))
    assert current_version(conn) == 2
    assert [r[1] for r in conn.execute("PRAGMA table_info(a)")] == ["x", "y"]


def test_a_database_from_before_the_steps_item_rename_keeps_its_steps(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    old = connect(db, migrations=[m for m in load_migrations() if m.version <= 3])
    old.execute("INSERT INTO runs (run_id, mode, qa_mode, status, created_at, updated_at)"
                " VALUES ('run_old', 'run', 'full', 'succeeded', 't', 't')")
    old.execute("INSERT INTO steps (step_id, run_id, stage, shot_id, attempt, status, input_hash, started_at)"
                " VALUES ('step_old', 'run_old', 'dialogue_audio', 'line_003', 1, 'succeeded', 'h', 't')")
    old.close()
    conn = connect(db)
    assert current_version(conn) == load_migrations()[-1].version
    columns = [r[1] for r in conn.execute("PRAGMA table_info(steps)")]
    assert "item" in columns and "shot_id" not in columns
    assert tuple(conn.execute("SELECT step_id, item FROM steps").fetchone()) == ("step_old", "line_003")


def test_edited_applied_migration_is_refused(tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    _write(schema, "001_base.sql", "CREATE TABLE a (x INTEGER);")
    connect(tmp_path / "s.db", migrations=load_migrations(schema)).close()
    _write(schema, "001_base.sql", "CREATE TABLE a (x INTEGER, z INTEGER);")
    with pytest.raises(SchemaError, match="edited after it was applied"):
        connect(tmp_path / "s.db", migrations=load_migrations(schema))


@pytest.mark.parametrize("names", [["001_a.sql", "003_c.sql"], ["002_b.sql"], ["1_a.sql"], ["001_A-b.sql"]])
def test_migration_files_must_be_well_named_and_contiguous(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        _write(tmp_path, name, "SELECT 1;")
    with pytest.raises(SchemaError):
        load_migrations(tmp_path)


def test_split_statements_respects_strings_comments_and_triggers() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    /* block; comment */
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d' WHERE rowid = new.rowid;
    END;
    """
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[1].rstrip().endswith("END;")
    with pytest.raises(SchemaError, match="incomplete"):
        split_statements("CREATE TABLE t (x TEXT); CREATE TABLE u (y TEXT DEFAULT 'unterminated;")
    with pytest.raises(SchemaError, match="incomplete"):
        split_statements("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1;")


def _connect_in_child(db: str) -> int:
    return current_version(connect(db))


def test_concurrent_first_migration_from_several_processes(tmp_path: Path) -> None:
    db = str(tmp_path / "race.db")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        versions = pool.map(_connect_in_child, [db] * 3)
    expected = load_migrations()[-1].version
    assert versions == [expected] * 3
    conn = connect(db)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == expected


def test_encode_json_names_the_offending_key_and_bounds_size() -> None:
    with pytest.raises(InvalidInputError) as info:
        encode_json({"params": {"ok": 1, "gen": object()}}, field="metadata", max_bytes=1000)
    assert info.value.field == "metadata.params.gen"
    with pytest.raises(InvalidInputError) as info:
        encode_json({"timings": [1.0, float("nan")]}, field="metadata", max_bytes=1000)
    assert info.value.field == "metadata.timings[1]"
    with pytest.raises(InvalidInputError) as info:
        encode_json({"k": {(1, 2): "x"}}, field="metadata", max_bytes=1000)
    assert info.value.field == "metadata.k" and "keys must be strings" in info.value.message
    with pytest.raises(PayloadTooLargeError):
        encode_json({"blob": "x" * 2000}, field="metadata", max_bytes=1000)
    assert encode_json({"a": [1, "é"]}, field="m", max_bytes=100) == '{"a":[1,"é"]}'


def test_database_write_rolls_back_on_error_and_stays_usable(tmp_path: Path) -> None:
    from sparkle_motion.db import Database

    db = Database(tmp_path / "s.db")
    insert_run = ("INSERT INTO runs (run_id, mode, qa_mode, status, created_at, updated_at)"
                  " VALUES ('r', 'run', 'full', 'pending', 't', 't')")
    with pytest.raises(RuntimeError):
        with db.write() as conn:
            conn.execute(insert_run)
            raise RuntimeError("caller failed mid-transaction")
    with db.read() as conn:
        assert not conn.in_transaction
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are enforced: no such run
        with db.write() as conn:
            conn.execute("INSERT INTO run_events (run_id, ts, level, message) VALUES ('r', 't', 'info', 'm')")
    with db.write() as conn:
        conn.execute(insert_run)
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def _use_inherited_database(db: object) -> None:
    with db.read() as conn:  # type: ignore[attr-defined]
        count = conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0]
    reopened = db._pid == os.getpid()  # type: ignore[attr-defined]  # the parent's handle was not reused
    os._exit(0 if count == load_migrations()[-1].version and reopened else 3)


def test_database_reopens_its_connection_after_fork(tmp_path: Path) -> None:
    from sparkle_motion.db import Database

    db = Database(tmp_path / "s.db")
    with db.read() as conn:
        parent_conn = conn
    child = multiprocessing.get_context("fork").Process(target=_use_inherited_database, args=(db,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with db.read() as conn:
        assert conn is parent_conn
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] > 0
