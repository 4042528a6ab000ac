"""Run registry: runs, their step executions and a per-run log, in SQLite.

The tables live in the same database as the artifact index (``db/schema/002_runs.sql``).
Every change is one short ``BEGIN IMMEDIATE`` transaction, so several processes
(the production agent, the CLI, a notebook) can share the registry safely, and
status changes are compare-and-set: two processes cannot both start a run.

Liveness: a process that moves a run to ``running`` becomes its owner
(``owner_pid``, ``owner_host``) and must call :meth:`RunRegistry.heartbeat`
regularly (:class:`~sparkle_motion.runs.heartbeat.Heartbeat` does it from a thread).
:meth:`RunRegistry.mark_interrupted` turns runs whose owner died, or whose
heartbeat is older than ``stale_after_s``, into ``interrupted``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sparkle_motion.db import Database, encode_json, format_ts, parse_ts, utc_now
from sparkle_motion.errors import ConflictError, InvalidInputError, NotFoundError, SparkleError
from sparkle_motion.ids import new_id, validate_id, validate_name_id
from sparkle_motion.runs.models import (
    FINAL_RUN_STATUSES,
    FINISHED_STEP_STATUSES,
    LOG_LEVELS,
    RUN_STATUSES,
    RUN_TRANSITIONS,
    RunEvent,
    RunRecord,
    StepRecord,
)

MAX_OPTIONS_BYTES = 64 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 256 * 1024
MAX_LOG_DATA_BYTES = 64 * 1024
MAX_LOG_MESSAGE_CHARS = 4000
MAX_EVENTS_PER_RUN = 10_000
MAX_TEXT_CHARS = 512
UPDATABLE_RUN_FIELDS = ("plan_id", "plan_uri", "current_stage", "progress", "error", "options")
_HOST = socket.gethostname()


class RunStateError(ConflictError):
    """The requested change does not fit the run's or step's current status."""

    code = "invalid_transition"


def error_to_dict(error: object, field: str = "error") -> dict[str, Any] | None:
    """Normalise an error (exception, dict or message) into the JSON stored in ``error`` columns."""
    if error is None:
        return None
    if isinstance(error, SparkleError):
        body: dict[str, Any] = {"type": type(error).__name__, **error.to_dict()}
    elif isinstance(error, BaseException):
        body = {"type": type(error).__name__, "message": str(error)}
    elif isinstance(error, str):
        body = {"message": error}
    elif isinstance(error, dict):
        return dict(error)  # caller's own JSON: must serialise as given (checked by encode_json)
    else:
        raise InvalidInputError(f"must be an exception, a dict or a message (got {type(error).__name__})",
                                field=field)
    # The context of a typed error may hold arbitrary objects; render those as text.
    return json.loads(json.dumps(body, default=str))


def _optional_text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS or "\x00" in value:
        raise InvalidInputError(f"must be a non-empty string of at most {MAX_TEXT_CHARS} characters", field=field)
    return value


def _choice(value: object, allowed: Sequence[str], field: str) -> str:
    if value not in allowed:
        raise InvalidInputError(f"must be one of {', '.join(allowed)} (got {value!r:.40})", field=field)
    return value  # type: ignore[return-value]


def _progress(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"must be a finite number between 0 and 1 (got {value!r:.40})", field="progress")
    if not -1e-9 <= value <= 1 + 1e-9:
        raise InvalidInputError(f"must be between 0 and 1 (got {value})", field="progress")
    return min(1.0, max(0.0, float(value)))  # absorb float rounding such as 1.0000000002


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    data = dict(row)
    data["error"] = json.loads(data["error"]) if data["error"] is not None else None
    data["options"] = json.loads(data["options"])
    return RunRecord(**data)


def _step_from_row(row: sqlite3.Row) -> StepRecord:
    data = dict(row)
    data["artifact_ids"] = json.loads(data["artifact_ids"])
    data["output"] = json.loads(data["output"]) if data["output"] is not None else None
    data["error"] = json.loads(data["error"]) if data["error"] is not None else None
    return StepRecord(**data)


def _event_from_row(row: sqlite3.Row) -> RunEvent:
    data = dict(row)
    data["data"] = json.loads(data["data"])
    return RunEvent(**data)


class RunRegistry:
    """Runs, steps and run logs; ``db_path`` defaults to ``Settings.db_path``."""

    def __init__(self, db_path: str | os.PathLike[str] | None = None) -> None:
        if db_path is None:
            from sparkle_motion.config import get_settings

            db_path = get_settings().db_path
        self.db_path = Path(db_path)
        self._db = Database(self.db_path)
        with self._db.read():
            pass  # open now so schema problems surface at construction

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ runs
    def create_run(self, run_id: str | None = None, *, plan_id: str | None = None, plan_uri: str | None = None,
                   mode: str = "run", qa_mode: str = "full", options: dict[str, Any] | None = None) -> RunRecord:
        run_id = validate_id(run_id if run_id is not None else new_id("run"), "run_id")
        if plan_id is not None:
            validate_name_id(plan_id, "plan_id")
        plan_uri = _optional_text(plan_uri, "plan_uri")
        _choice(mode, ("dry", "run"), "mode")
        _choice(qa_mode, ("full", "skip"), "qa_mode")
        if options is not None and not isinstance(options, dict):
            raise InvalidInputError("must be a JSON object", field="options")
        options_json = encode_json(options or {}, field="options", max_bytes=MAX_OPTIONS_BYTES)
        now = utc_now()
        try:
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO runs (run_id, plan_id, plan_uri, mode, qa_mode, status, progress, options,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                    (run_id, plan_id, plan_uri, mode, qa_mode, options_json, now, now))
        except sqlite3.IntegrityError:
            raise InvalidInputError(f"run {run_id!r} already exists", field="run_id") from None
        return self.get_run(run_id)

    def _fetch_run(self, conn: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id!r}", field="run_id", context={"run_id": run_id})
        return row

    def get_run(self, run_id: str) -> RunRecord:
        validate_id(run_id, "run_id")
        with self._db.read() as conn:
            return _run_from_row(self._fetch_run(conn, run_id))

    def list_runs(self, limit: int = 50, *, status: str | None = None) -> list[RunRecord]:
        """Newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidInputError("must be an integer between 1 and 10000", field="limit")
        sql, params = "SELECT * FROM runs", []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(_choice(status, RUN_STATUSES, "status"))
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        with self._db.read() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [_run_from_row(row) for row in rows]

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Change descriptive fields; status goes through :meth:`set_status`."""
        validate_id(run_id, "run_id")
        if not fields:
            raise InvalidInputError("nothing to update", field="fields")
        columns: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "plan_id":
                columns[name] = None if value is None else validate_name_id(value, "plan_id")
            elif name == "plan_uri":
                columns[name] = _optional_text(value, "plan_uri")
            elif name == "current_stage":
                columns[name] = None if value is None else validate_id(value, "current_stage")
            elif name == "progress":
                columns[name] = _progress(value)
            elif name == "error":
                body = error_to_dict(value)
                columns[name] = None if body is None else encode_json(body, field="error",
                                                                      max_bytes=MAX_ERROR_BYTES)
            elif name == "options":
                if not isinstance(value, dict):
                    raise InvalidInputError("must be a JSON object", field="options")
                columns[name] = encode_json(value, field="options", max_bytes=MAX_OPTIONS_BYTES)
            else:
                hint = "; use set_status()" if name == "status" else ""
                raise InvalidInputError(f"cannot be updated{hint}; allowed: {', '.join(UPDATABLE_RUN_FIELDS)}",
                                        field=name)
        now = utc_now()
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self._db.write() as conn:
            self._fetch_run(conn, run_id)
            # An update from the owning process also proves it is alive.
            conn.execute(
                f"UPDATE runs SET {assignments}, updated_at = ?,"
                " heartbeat_at = CASE WHEN status = 'running' AND owner_pid = ? AND owner_host = ?"
                " THEN ? ELSE heartbeat_at END WHERE run_id = ?",
                (*columns.values(), now, os.getpid(), _HOST, now, run_id))
        return self.get_run(run_id)

    def set_status(self, run_id: str, status: str, *, error: object = None,
                   current_stage: str | None = None) -> RunRecord:
        """Move a run to ``status`` if :data:`RUN_TRANSITIONS` allows it (atomic compare-and-set).

        Entering ``running`` makes this process the owner and starts the
        heartbeat; final statuses set ``finished_at`` and clear the owner.
        """
        validate_id(run_id, "run_id")
        _choice(status, RUN_STATUSES, "status")
        if current_stage is not None:
            validate_id(current_stage, "current_stage")
        body = error_to_dict(error)
        error_json = None if body is None else encode_json(body, field="error", max_bytes=MAX_ERROR_BYTES)
        now = utc_now()
        with self._db.write() as conn:
            row = self._fetch_run(conn, run_id)
            current = row["status"]
            if status not in RUN_TRANSITIONS[current]:
                allowed = ", ".join(sorted(RUN_TRANSITIONS[current])) or "nothing (final)"
                raise RunStateError(f"cannot move run {run_id!r} from {current} to {status}; "
                                    f"allowed from {current}: {allowed}", field="status",
                                    context={"run_id": run_id, "from": current, "to": status})
            updates: dict[str, Any] = {"status": status, "updated_at": now}
            if current == "queued":
                updates["queue_seq"] = None
            if current_stage is not None:
                updates["current_stage"] = current_stage
            if status == "running":
                updates.update(owner_pid=os.getpid(), owner_host=_HOST, heartbeat_at=now, error=None,
                               finished_at=None)
                if row["started_at"] is None:
                    updates["started_at"] = now
            else:
                updates.update(owner_pid=None, owner_host=None)
            if status in FINAL_RUN_STATUSES:
                updates["finished_at"] = now
            if status == "succeeded":
                updates["progress"] = 1.0
            if error_json is not None:
                updates["error"] = error_json
            conn.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in updates)} WHERE run_id = ?",
                         (*updates.values(), run_id))
        return self.get_run(run_id)

    def enqueue(self, run_id: str) -> RunRecord:
        """Move a run to ``queued`` at the end of the queue (one transaction: the place is unique)."""
        validate_id(run_id, "run_id")
        with self._db.write() as conn:
            current = self._fetch_run(conn, run_id)["status"]
            if "queued" not in RUN_TRANSITIONS[current]:
                raise RunStateError(f"cannot queue run {run_id!r}: it is {current}", field="status",
                                    context={"run_id": run_id, "from": current, "to": "queued"})
            conn.execute("UPDATE runs SET status = 'queued', owner_pid = NULL, owner_host = NULL, updated_at = ?,"
                         " queue_seq = (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM runs) WHERE run_id = ?",
                         (utc_now(), run_id))
        return self.get_run(run_id)

    def queued_run_ids(self) -> list[str]:
        """The queued runs, first in line first."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT run_id FROM runs WHERE status = 'queued'"
                                " ORDER BY queue_seq, created_at, run_id").fetchall()
        return [row[0] for row in rows]

    def heartbeat(self, run_id: str) -> None:
        """Prove the owning process is alive; refused once the run is no longer running."""
        validate_id(run_id, "run_id")
        now = utc_now()
        with self._db.write() as conn:
            row = self._fetch_run(conn, run_id)
            if row["status"] != "running":
                raise RunStateError(f"run {run_id!r} is {row['status']}, not running", field="run_id",
                                    context={"status": row["status"]})
            conn.execute("UPDATE runs SET heartbeat_at = ?, owner_pid = ?, owner_host = ? WHERE run_id = ?",
                         (now, os.getpid(), _HOST, run_id))

    def mark_interrupted(self, stale_after_s: float = 60.0) -> list[str]:
        """Mark ``running`` runs whose owner is gone as ``interrupted``; return their ids.

        A run counts as orphaned when its owner pid on this host no longer
        exists, or when its heartbeat is older than ``stale_after_s`` (which also
        covers owners on other hosts and recycled pids).  Steps it left
        ``running`` are closed as ``failed``.
        """
        if isinstance(stale_after_s, bool) or not isinstance(stale_after_s, (int, float)) or stale_after_s <= 0:
            raise InvalidInputError("must be a positive number of seconds", field="stale_after_s")
        now = utc_now()
        cutoff = format_ts(parse_ts(now) - timedelta(seconds=stale_after_s))
        interrupted: list[str] = []
        with self._db.write() as conn:
            for row in conn.execute("SELECT * FROM runs WHERE status = 'running'").fetchall():
                owner_dead = (row["owner_host"] == _HOST and row["owner_pid"] is not None
                              and not _pid_alive(row["owner_pid"]))
                stale = row["heartbeat_at"] is None or row["heartbeat_at"] < cutoff
                if not (owner_dead or stale):
                    continue
                reason = "owner process exited" if owner_dead else f"no heartbeat for {stale_after_s:g} s"
                error = {"type": "Interrupted", "message": f"run interrupted: {reason}",
                         "owner_pid": row["owner_pid"], "owner_host": row["owner_host"],
                         "heartbeat_at": row["heartbeat_at"]}
                conn.execute("UPDATE runs SET status = 'interrupted', error = ?, owner_pid = NULL,"
                             " owner_host = NULL, updated_at = ? WHERE run_id = ?",
                             (json.dumps(error), now, row["run_id"]))
                for step in conn.execute("SELECT step_id, started_at FROM steps WHERE run_id = ?"
                                         " AND status = 'running'", (row["run_id"],)).fetchall():
                    duration = max(0.0, (parse_ts(now) - parse_ts(step["started_at"])).total_seconds())
                    conn.execute("UPDATE steps SET status = 'failed', completed_at = ?, duration_s = ?,"
                                 " error = ? WHERE step_id = ?",
                                 (now, duration, json.dumps({"type": "Interrupted", "message": reason}),
                                  step["step_id"]))
                self._insert_event(conn, row["run_id"], "warning", f"run interrupted: {reason}", error)
                interrupted.append(row["run_id"])
        return interrupted

    def delete_run(self, run_id: str) -> bool:
        """Remove a run with its steps and log (artifacts are the store's: ArtifactStore.delete_run)."""
        validate_id(run_id, "run_id")
        with self._db.write() as conn:
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    # ----------------------------------------------------------------- steps
    def start_step(self, run_id: str, stage: str, *, item: str | None = None,
                   input_hash: str | None = None) -> StepRecord:
        """Record that ``stage`` (for ``item``) starts; attempt numbers count up per stage and item."""
        validate_id(run_id, "run_id")
        validate_id(stage, "stage")
        if item is not None:
            validate_id(item, "item")
        if input_hash is not None:
            validate_id(input_hash, "input_hash")
        step_id = new_id("step")
        now = utc_now()
        with self._db.write() as conn:
            row = self._fetch_run(conn, run_id)
            if row["status"] != "running":
                raise RunStateError(f"run {run_id!r} is {row['status']}; steps can start only while it is running",
                                    field="run_id", context={"status": row["status"]})
            (attempt,) = conn.execute("SELECT COALESCE(MAX(attempt), 0) + 1 FROM steps WHERE run_id = ?"
                                      " AND stage = ? AND item IS ?", (run_id, stage, item)).fetchone()
            conn.execute("INSERT INTO steps (step_id, run_id, stage, item, attempt, status, input_hash,"
                         " started_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                         (step_id, run_id, stage, item, attempt, input_hash, now))
            conn.execute("UPDATE runs SET current_stage = ?, updated_at = ? WHERE run_id = ?", (stage, now, run_id))
        return self.get_step(step_id)

    def get_step(self, step_id: str) -> StepRecord:
        validate_id(step_id, "step_id")
        with self._db.read() as conn:
            row = conn.execute("SELECT * FROM steps WHERE step_id = ?", (step_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no step {step_id!r}", field="step_id")
        return _step_from_row(row)

    def finish_step(self, step_id: str, status: str, artifact_ids: Sequence[str] = (),
                    output: Any = None, error: object = None) -> StepRecord:
        validate_id(step_id, "step_id")
        _choice(status, FINISHED_STEP_STATUSES, "status")
        if isinstance(artifact_ids, str):
            raise InvalidInputError("must be a list of artifact ids, not a string", field="artifact_ids")
        ids = [validate_id(value, f"artifact_ids[{index}]") for index, value in enumerate(artifact_ids)]
        output_json = None if output is None else encode_json(output, field="output", max_bytes=MAX_OUTPUT_BYTES)
        body = error_to_dict(error)
        error_json = None if body is None else encode_json(body, field="error", max_bytes=MAX_ERROR_BYTES)
        now = utc_now()
        with self._db.write() as conn:
            row = conn.execute("SELECT * FROM steps WHERE step_id = ?", (step_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no step {step_id!r}", field="step_id")
            if row["status"] != "running":
                raise RunStateError(f"step {step_id!r} already finished as {row['status']}", field="step_id",
                                    context={"status": row["status"]})
            duration = max(0.0, (parse_ts(now) - parse_ts(row["started_at"])).total_seconds())
            conn.execute("UPDATE steps SET status = ?, completed_at = ?, duration_s = ?, artifact_ids = ?,"
                         " output = ?, error = ? WHERE step_id = ?",
                         (status, now, duration, json.dumps(ids), output_json, error_json, step_id))
            conn.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (now, row["run_id"]))
        return self.get_step(step_id)

    def list_steps(self, run_id: str, stage: str | None = None) -> list[StepRecord]:
        """Steps of a run in start order."""
        validate_id(run_id, "run_id")
        sql, params = "SELECT * FROM steps WHERE run_id = ?", [run_id]
        if stage is not None:
            sql += " AND stage = ?"
            params.append(validate_id(stage, "stage"))
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY started_at, attempt, step_id", params).fetchall()
        return [_step_from_row(row) for row in rows]

    def find_cached_step(self, stage: str, item: str | None, input_hash: str) -> StepRecord | None:
        """The latest succeeded step of any run with the same stage, item and input hash.

        The caller must still check that the step's artifacts exist (a run's
        artifacts may have been pruned) before reusing them.
        """
        validate_id(stage, "stage")
        if item is not None:
            validate_id(item, "item")
        validate_id(input_hash, "input_hash")
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM steps WHERE input_hash = ? AND stage = ? AND item IS ? AND status = 'succeeded'"
                " ORDER BY completed_at DESC, step_id DESC LIMIT 1", (input_hash, stage, item)).fetchone()
        return None if row is None else _step_from_row(row)

    # ------------------------------------------------------------------- log
    def _insert_event(self, conn: sqlite3.Connection, run_id: str, level: str, message: str,
                      data: dict[str, Any]) -> int:
        data_json = json.dumps(data, ensure_ascii=False, default=str)
        if len(data_json.encode("utf-8")) > MAX_LOG_DATA_BYTES:
            # Logging must not fail the caller; record that data was dropped and how much.
            data_json = json.dumps({"data_dropped": True, "data_bytes": len(data_json.encode("utf-8")),
                                    "keys": sorted(map(str, data))[:50]})
        if len(message) > MAX_LOG_MESSAGE_CHARS:
            message = message[:MAX_LOG_MESSAGE_CHARS] + f"... [{len(message) - MAX_LOG_MESSAGE_CHARS} chars cut]"
        cursor = conn.execute("INSERT INTO run_events (run_id, ts, level, message, data) VALUES (?, ?, ?, ?, ?)",
                              (run_id, utc_now(), level, message, data_json))
        event_id = int(cursor.lastrowid or 0)
        if event_id % 100 == 0:  # keep each run's log bounded without paying for a prune on every line
            conn.execute("DELETE FROM run_events WHERE run_id = ? AND event_id < (SELECT event_id FROM run_events"
                         " WHERE run_id = ? ORDER BY event_id DESC LIMIT 1 OFFSET ?)",
                         (run_id, run_id, MAX_EVENTS_PER_RUN - 1))
        return event_id

    def log(self, run_id: str, level: str, message: str, **data: Any) -> int:
        """Append a line to the run's log; returns its event id."""
        validate_id(run_id, "run_id")
        _choice(level, LOG_LEVELS, "level")
        if not isinstance(message, str):
            raise InvalidInputError(f"must be a string (got {type(message).__name__})", field="message")
        with self._db.write() as conn:
            self._fetch_run(conn, run_id)
            return self._insert_event(conn, run_id, level, message, data)

    def log_tail(self, run_id: str, n: int = 50) -> list[RunEvent]:
        """The last ``n`` log lines of a run, oldest first."""
        validate_id(run_id, "run_id")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
            raise InvalidInputError("must be an integer between 1 and 10000", field="n")
        with self._db.read() as conn:
            self._fetch_run(conn, run_id)
            rows = conn.execute("SELECT * FROM run_events WHERE run_id = ? ORDER BY event_id DESC LIMIT ?",
                                (run_id, n)).fetchall()
        return [_event_from_row(row) for row in reversed(rows)]
