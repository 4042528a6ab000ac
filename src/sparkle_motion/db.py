"""SQLite access shared by the artifact index and the run registry.

One database file (``Settings.db_path`` = ``SPARKLE_HOME/sparkle.db``) holds both.
The DDL lives only in ``db/schema/NNN_name.sql``; :func:`connect` applies the
files it has not applied yet, in order, each inside its own ``BEGIN IMMEDIATE``
transaction, and records them in ``schema_version``.  ``BEGIN IMMEDIATE`` takes
the write lock before the version is re-read, so two processes that start at the
same moment serialise: the second one finds the work done and applies nothing.

Threading: connections are opened with ``check_same_thread=False`` because the
ADK adapter and FastAPI run store calls on worker threads.  SQLite itself is
thread-safe, but a *transaction* on one connection is not: interleaved
statements from two threads would join the same transaction.  :class:`Database`
therefore serialises every use of its connection with a lock, and re-opens the
connection after ``fork()`` (a SQLite handle must never cross a fork).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sparkle_motion.config import project_path
from sparkle_motion.diskspace import disk_full_error, is_disk_full
from sparkle_motion.errors import ConfigError, InvalidInputError, PayloadTooLargeError

BUSY_TIMEOUT_MS = 30_000
_MIGRATION_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class SchemaError(ConfigError):
    """The database schema cannot be used by this code (too new, edited, malformed)."""

    code = "schema_error"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def schema_dir() -> Path:
    return project_path("db/schema")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read ``NNN_name.sql`` files; versions must run 1, 2, 3 ... without gaps."""
    directory = schema_dir() if directory is None else Path(directory)
    migrations: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _MIGRATION_NAME_RE.fullmatch(path.name)
        if not match:
            raise SchemaError(f"migration file name {path.name!r} must look like 001_name.sql",
                              context={"path": str(path)})
        migrations.append(Migration(int(match.group(1)), match.group(2), path,
                                    path.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise SchemaError(f"migration versions must be contiguous from 001; expected {expected:03d}, "
                              f"found {migration.path.name}", context={"dir": str(directory)})
    return migrations


def split_statements(sql: str) -> list[str]:
    """Split a script into statements with SQLite's own completeness test.

    ``executescript`` is not usable: it COMMITs any open transaction first, which
    would break the one-transaction-per-migration guarantee.  ``complete_statement``
    understands comments, string literals and trigger bodies, so a ';' inside
    them does not end a statement.
    """
    statements: list[str] = []
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    leftover = pending[:-1]
    if _strip_sql_comments(leftover).strip():
        raise SchemaError("SQL script ends with an incomplete statement", context={"tail": leftover.strip()[:200]})
    return statements


def _strip_sql_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.S)


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if row is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply pending migrations; return the resulting schema version."""
    migrations = load_migrations() if migrations is None else migrations
    known = migrations[-1].version if migrations else 0
    version = current_version(conn)
    if version > known:
        raise SchemaError(
            f"database schema version {version} is newer than this code knows ({known}); "
            "upgrade sparkle-motion or use another SPARKLE_HOME",
            context={"db_version": version, "code_version": known})
    if version == known:
        _check_applied(conn, migrations)
        return version
    for migration in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                         " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                         " checksum TEXT NOT NULL, applied_at TEXT NOT NULL)")
            # Re-read under the write lock: another process may have applied it.
            if current_version(conn) >= migration.version:
                conn.execute("COMMIT")
                continue
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                         (migration.version, migration.name, migration.checksum, utc_now()))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn, exc)
            raise SchemaError(f"migration {migration.path.name} failed: {exc}",
                              context={"path": str(migration.path)}) from exc
        except BaseException as exc:
            _rollback(conn, exc)
            raise
    _check_applied(conn, migrations)
    return migrations[-1].version


def _rollback(conn: sqlite3.Connection, cause: BaseException) -> None:
    # Only when a transaction is still open (a failed COMMIT may have ended it);
    # a failing ROLLBACK must not replace the error that caused it, so it
    # travels as a note on that error.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as rollback_error:
            cause.add_note(f"ROLLBACK also failed: {rollback_error}")


def _check_applied(conn: sqlite3.Connection, migrations: list[Migration]) -> None:
    """An applied migration whose file was edited afterwards means the DDL has two truths."""
    if not migrations:
        return
    recorded = dict(conn.execute("SELECT version, checksum FROM schema_version").fetchall())
    for migration in migrations:
        checksum = recorded.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise SchemaError(
                f"migration {migration.path.name} was edited after it was applied; "
                "add a new migration file instead",
                context={"version": migration.version})


def connect(path: str | os.PathLike[str], *, migrate_schema: bool = True,
            migrations: list[Migration] | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` and bring its schema up to date.

    The connection is in autocommit mode (``isolation_level=None``): callers open
    transactions explicitly, preferably with :meth:`Database.write`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"could not enable WAL on {path} (journal_mode={mode})",
                              context={"path": str(path)})
        # With WAL, NORMAL keeps committed transactions durable across a process
        # crash; only an OS crash may lose the last commits, never corrupt.
        conn.execute("PRAGMA synchronous = NORMAL")
        if migrate_schema:
            migrate(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


class Database:
    """A lazily opened, lock-guarded connection with explicit write transactions."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # After fork the inherited handle belongs to the parent; drop it unclosed.
            self._conn = connect(self.path)
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short ``BEGIN IMMEDIATE`` transaction; committed on exit, rolled back on error."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn, exc)
                if isinstance(exc, sqlite3.Error) and is_disk_full(exc):
                    # SQLITE_FULL: the transaction rolled back whole; say so plainly (507).
                    raise disk_full_error(self.path, self.path.parent, cause=str(exc)) from exc
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def utc_now() -> str:
    """ISO-8601 UTC with microseconds and a 'Z'; fixed width, so strings sort by time."""
    return format_ts(datetime.now(timezone.utc))


def format_ts(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def encode_json(value: Any, *, field: str, max_bytes: int) -> str:
    """Serialise ``value`` for a JSON column; the error names the offending key."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        where, why = _find_unencodable(value, field)
        raise InvalidInputError(why or f"is not JSON-serialisable: {exc}", field=where) from exc
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLargeError(f"is {size} bytes of JSON; the limit is {max_bytes}", field=field,
                                   context={"size_bytes": size, "max_bytes": max_bytes})
    return text


def _find_unencodable(value: Any, path: str) -> tuple[str, str | None]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"keys must be strings (got {type(key).__name__} key {key!r:.40})"
            found = _find_unencodable(item, f"{path}.{key}")
            if found[1] is not None:
                return found
        return path, None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{index}]")
            if found[1] is not None:
                return found
        return path, None
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"must be a finite number (got {value!r})"
    if value is None or isinstance(value, (str, int, float, bool)):
        return path, None
    return path, f"is not JSON-serialisable (type {type(value).__name__})"
