"""Filesystem artifact store with a SQLite index.

Layout: ``<root>/artifacts/<run_id>/<stage>/<artifact_id><ext>``, index rows in
``<root>/sparkle.db`` (table ``artifacts``, DDL in ``db/schema``).

Durability order for every put: stream into a hidden temp file in the final
directory while hashing, fsync the file, ``os.replace`` it to its final name,
fsync the directory, and only then insert the index row.  A crash can therefore
leave an unindexed file (``sweep`` removes those) but never a row without its
file nor a partial file under a final name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from sparkle_motion.artifacts.models import (
    MEDIA_FIELDS,
    URI_PREFIX,
    ArtifactManifest,
    make_uri,
    parse_uri,
)
from sparkle_motion.db import Database, encode_json, utc_now
from sparkle_motion.diskspace import disk_full_error, disk_full_guard, home_relative, is_disk_full
from sparkle_motion.errors import (
    ArtifactNotFoundError,
    DiskFullError,
    IntegrityError,
    InvalidInputError,
    PathEscapeError,
    PayloadTooLargeError,
)
from sparkle_motion.ids import new_id, validate_id

CHUNK_BYTES = 1 << 20
MAX_METADATA_BYTES = 256 * 1024
DEFAULT_MAX_ARTIFACT_BYTES = 64 * (1 << 30)
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"

MEDIA_TYPE_EXTENSIONS: dict[str, str] = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
    "video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/mpeg": ".mp3",
    "audio/flac": ".flac", "audio/ogg": ".ogg", "audio/aac": ".aac", "audio/mp4": ".m4a",
    "application/json": ".json", "application/x-ndjson": ".jsonl", "application/yaml": ".yaml",
    "text/plain": ".txt", "text/markdown": ".md", "text/csv": ".csv", "text/html": ".html",
    "text/vtt": ".vtt", "application/x-subrip": ".srt", "application/zip": ".zip",
    "application/octet-stream": ".bin",
}
_TOKEN = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}"
_MEDIA_TYPE_RE = re.compile(rf"^({_TOKEN}/{_TOKEN})(\s*;\s*[a-z0-9_-]{{1,32}}=[A-Za-z0-9_.+-]{{1,64}})*$")
_EXT_RE = re.compile(r"^(\.[A-Za-z0-9]{1,10}){1,2}$")


def _umask_file_mode() -> int:
    # mkstemp creates 0600 files; published blobs get the mode open() would give.
    # Read once: os.umask is process-global and racy to sample per call.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_file_mode()

Source = Path | bytes | bytearray | memoryview | BinaryIO


class RunUsage(NamedTuple):
    run_id: str
    bytes: int
    newest_created_at: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def normalise_media_type(media_type: object) -> str:
    if not isinstance(media_type, str) or not _MEDIA_TYPE_RE.fullmatch(media_type.lower()):
        raise InvalidInputError(f"must be a MIME type such as 'image/png' (got {media_type!r:.80})",
                                field="media_type")
    return media_type.lower()


def extension_for(media_type: str, ext: str | None) -> str:
    if ext is not None:
        if not isinstance(ext, str) or not _EXT_RE.fullmatch(ext):
            raise InvalidInputError(f"must look like '.png' or '.tar.gz' (got {ext!r:.40})", field="ext")
        return ext.lower()
    return MEDIA_TYPE_EXTENSIONS.get(media_type.split(";", 1)[0].strip(), ".bin")


def _validate_media(media: object) -> dict[str, float | int]:
    if media is None:
        return {}
    if not isinstance(media, dict):
        raise InvalidInputError(f"must be a mapping of {sorted(MEDIA_FIELDS)}", field="media")
    values: dict[str, float | int] = {}
    for key, value in media.items():
        kind = MEDIA_FIELDS.get(key)
        if kind is None:
            raise InvalidInputError(f"unknown media field; allowed: {', '.join(MEDIA_FIELDS)}", field=f"media.{key}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInputError(f"must be a finite number (got {value!r:.40})", field=f"media.{key}")
        if kind is int:
            if value != int(value):
                raise InvalidInputError(f"must be an integer (got {value!r})", field=f"media.{key}")
            value = int(value)
        else:
            value = float(value)
        if value < 0 or (value == 0 and key != "duration_s"):
            raise InvalidInputError(f"must be {'>= 0' if key == 'duration_s' else '> 0'} (got {value})",
                                    field=f"media.{key}")
        values[key] = value
    return values


def _hash_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


class ReadsByPath:
    """``open`` and ``read_bytes`` over a store's ``path_for`` (the local store and the HTTP one, http_store.py)."""

    def path_for(self, ref: str, *, field: str = "uri") -> Path:
        raise NotImplementedError

    def open(self, ref: str) -> BinaryIO:
        return open(self.path_for(ref), "rb")

    def read_bytes(self, ref: str) -> bytes:
        with self.open(ref) as handle:
            return handle.read()


class ArtifactStore(ReadsByPath):
    """Blobs under ``root/artifacts``, indexed in ``root/sparkle.db`` (or ``db_path``).

    Thread-safe and multi-process safe: every put is one short SQLite
    transaction on a WAL database with a 30 s busy timeout.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 db_path: str | os.PathLike[str] | None = None,
                 max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> None:
        if root is None:
            from sparkle_motion.config import get_settings

            settings = get_settings()
            root = settings.home
            db_path = settings.db_path if db_path is None else db_path
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob_root = self.root / "artifacts"
        self.db_path = Path(db_path) if db_path is not None else self.root / "sparkle.db"
        self.max_artifact_bytes = int(max_artifact_bytes)
        self._db = Database(self.db_path)
        with self._db.read():
            pass  # open now: a schema problem should surface at construction, not mid-put

    def __repr__(self) -> str:
        return f"ArtifactStore(root={str(self.root)!r})"

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ paths
    def _inside_root(self, path: Path, field: str) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            # Name the path as the caller knows it (store-relative); never the absolute
            # root or where a symlink points, which would map the server's disk for them.
            shown = self.relative(path)
            raise PathEscapeError(f"{shown!r:.160} resolves outside the artifact root",
                                  field=field, context={"path": shown})
        return resolved

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` as errors may show it: relative to the store root (a foreign path: its name only)."""
        return home_relative(path, self.root)

    def _stage_dir(self, run_id: str, stage: str) -> Path:
        directory = self.blob_root / run_id / stage
        # Checked before mkdir too, so a planted symlink cannot make us create
        # folders elsewhere; and after, in case it appeared in between.
        self._inside_root(directory, "stage")
        directory.mkdir(parents=True, exist_ok=True)
        self._inside_root(directory, "stage")
        return directory

    def staging_dir(self) -> Path:
        """Scratch space on the store's filesystem; files here can be put with ``move=True``."""
        directory = self.root / "staging"
        directory.mkdir(parents=True, exist_ok=True)
        return self._inside_root(directory, "staging_dir")

    # -------------------------------------------------------------------- put
    def put(self, run_id: str, stage: str, artifact_type: str, source: Source, media_type: str,
            metadata: dict[str, Any] | None = None, *, media: dict[str, float | int] | None = None,
            ext: str | None = None, move: bool = False) -> ArtifactManifest:
        """Store ``source`` (a Path, bytes or a binary stream) and index it."""
        return self._put(run_id, stage, artifact_type, source, media_type, metadata,
                         media=media, ext=ext, move=move)

    def put_json(self, run_id: str, stage: str, artifact_type: str, obj: Any,
                 metadata: dict[str, Any] | None = None) -> ArtifactManifest:
        """Store a JSON document (a pydantic model is dumped in JSON mode)."""
        if hasattr(obj, "model_dump") and callable(obj.model_dump):
            obj = obj.model_dump(mode="json")
        try:
            data = json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=2).encode("utf-8") + b"\n"
        except (TypeError, ValueError):
            encode_json(obj, field="obj", max_bytes=self.max_artifact_bytes)  # raises naming the key
            raise
        return self._put(run_id, stage, artifact_type, data, "application/json", metadata)

    def _put(self, run_id: str, stage: str, artifact_type: str, source: Source, media_type: str,
             metadata: dict[str, Any] | None, *, media: dict[str, float | int] | None = None,
             ext: str | None = None, move: bool = False,
             on_insert: Callable[[Any, ArtifactManifest], None] | None = None) -> ArtifactManifest:
        # ``on_insert`` runs inside the index transaction (the ADK adapter records
        # its version row atomically with the artifact row).
        validate_id(run_id, "run_id")
        validate_id(stage, "stage")
        validate_id(artifact_type, "artifact_type")
        media_type = normalise_media_type(media_type)
        extension = extension_for(media_type, ext)
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise InvalidInputError(f"must be a JSON object (got {type(metadata).__name__})", field="metadata")
        metadata_json = encode_json(metadata, field="metadata", max_bytes=MAX_METADATA_BYTES)
        media_values = _validate_media(media)

        artifact_id = new_id(artifact_type[:40])
        final = self._stage_dir(run_id, stage) / f"{artifact_id}{extension}"
        with disk_full_guard(final, self.root):
            if move:
                sha256, size, undo = self._publish_by_move(source, final)
            else:
                sha256, size = self._publish_by_copy(source, final)
                undo = lambda: final.unlink(missing_ok=True)  # noqa: E731
        try:
            manifest = ArtifactManifest(
                artifact_id=artifact_id, uri=make_uri(run_id, stage, artifact_id), run_id=run_id,
                stage=stage, artifact_type=artifact_type, media_type=media_type, sha256=sha256,
                size_bytes=size, created_at=utc_now(), local_path=str(final),
                metadata=json.loads(metadata_json), **media_values)
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO artifacts (artifact_id, run_id, stage, artifact_type, media_type, rel_path,"
                    " sha256, size_bytes, created_at, duration_s, fps, width, height, sample_rate, metadata)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (artifact_id, run_id, stage, artifact_type, media_type,
                     final.relative_to(self.root).as_posix(), sha256, size, manifest.created_at,
                     manifest.duration_s, manifest.fps, manifest.width, manifest.height,
                     manifest.sample_rate, metadata_json))
                if on_insert is not None:
                    on_insert(conn, manifest)
        except BaseException as exc:
            undo()
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise disk_full_error(self.db_path, self.root, cause=str(exc)) from exc
            raise
        return manifest

    def _chunks(self, source: object) -> Iterator[bytes | memoryview]:
        if isinstance(source, (bytes, bytearray, memoryview)):
            view = memoryview(source).cast("B")
            for start in range(0, len(view), CHUNK_BYTES):
                yield view[start:start + CHUNK_BYTES]
            return
        if isinstance(source, str):
            raise InvalidInputError("a str is ambiguous; pass a pathlib.Path, bytes or a binary stream",
                                    field="source")
        if isinstance(source, os.PathLike):
            path = Path(source)
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                raise InvalidInputError(f"file not found: {self.relative(path)}", field="source") from None
            except IsADirectoryError:
                raise InvalidInputError(f"is a directory, not a file: {self.relative(path)}", field="source") from None
            with handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise InvalidInputError(f"is not a regular file: {self.relative(path)}", field="source")
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk
            return
        read = getattr(source, "read", None)
        if not callable(read):
            raise InvalidInputError(f"must be a Path, bytes or a binary stream (got {type(source).__name__})",
                                    field="source")
        while True:
            chunk = read(CHUNK_BYTES)
            if not chunk:
                return
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise InvalidInputError(f"stream must yield bytes (got {type(chunk).__name__}); "
                                        "open files in binary mode", field="source")
            yield chunk

    def _check_size(self, size: int) -> None:
        if size > self.max_artifact_bytes:
            raise PayloadTooLargeError(f"artifact exceeds the store limit of {self.max_artifact_bytes} bytes",
                                       field="source", context={"max_bytes": self.max_artifact_bytes})

    def _publish_by_copy(self, source: object, final: Path) -> tuple[str, int]:
        fd, temp_name = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        temp = Path(temp_name)
        published = False
        try:
            hasher = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in self._chunks(source):
                    size += len(chunk)
                    self._check_size(size)
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, _FILE_MODE)
            os.replace(temp, final)
            published = True
            _fsync_dir(final.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            if published:
                final.unlink(missing_ok=True)
            raise
        return hasher.hexdigest(), size

    def _publish_by_move(self, source: object, final: Path) -> tuple[str, int, Callable[[], None]]:
        if not isinstance(source, os.PathLike):
            raise InvalidInputError("move=True needs a Path inside store.staging_dir()", field="source")
        given = Path(source)
        staging = self.staging_dir()
        try:
            info = given.lstat()
        except FileNotFoundError:
            raise InvalidInputError(f"file not found: {self.relative(given)}", field="source") from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(f"must be a regular file, not a link or folder: {self.relative(given)}", field="source")
        # The parent is resolved (not the file): the file itself is known not to be a link.
        path = given.parent.resolve() / given.name
        if not path.is_relative_to(staging):
            raise PathEscapeError(f"move=True only accepts files under staging/ (got {self.relative(given)!r})",
                                  field="source")
        self._check_size(info.st_size)
        sha256, size = _hash_file(path)
        self._check_size(size)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # the tool may not have; the rename must not publish unflushed data
        finally:
            os.close(fd)
        os.replace(path, final)
        try:
            _fsync_dir(final.parent)
            _fsync_dir(path.parent)
        except BaseException:
            os.replace(final, path)
            raise

        def undo() -> None:
            # Give the caller its file back rather than losing it.
            try:
                os.replace(final, path)
            except OSError:
                final.unlink(missing_ok=True)

        return sha256, size, undo

    # ------------------------------------------------------------------- read
    def _row_to_manifest(self, row: Any) -> ArtifactManifest:
        metadata = json.loads(row["metadata"])
        return ArtifactManifest(
            artifact_id=row["artifact_id"], uri=make_uri(row["run_id"], row["stage"], row["artifact_id"]),
            run_id=row["run_id"], stage=row["stage"], artifact_type=row["artifact_type"],
            media_type=row["media_type"], sha256=row["sha256"], size_bytes=row["size_bytes"],
            created_at=row["created_at"], local_path=str(self.root / row["rel_path"]),
            duration_s=row["duration_s"], fps=row["fps"], width=row["width"], height=row["height"],
            sample_rate=row["sample_rate"], metadata=metadata)

    def get(self, ref: str, *, field: str = "uri") -> ArtifactManifest:
        """Look up ``artifact+fs://run/stage/id`` or a bare artifact id."""
        if isinstance(ref, str) and not ref.startswith(URI_PREFIX) and "://" not in ref:
            if "/" in ref or "\\" in ref or ".." in ref or "%" in ref:
                raise PathEscapeError(f"an artifact id cannot contain path syntax (got {ref!r:.120})", field=field)
            artifact_id = validate_id(ref, field)
            expected = None
        else:
            parsed = parse_uri(ref, field)
            artifact_id, expected = parsed.artifact_id, (parsed.run_id, parsed.stage)
        with self._db.read() as conn:
            row = conn.execute("SELECT * FROM artifacts WHERE artifact_id = ?", (artifact_id,)).fetchone()
        if row is None or (expected is not None and (row["run_id"], row["stage"]) != expected):
            raise ArtifactNotFoundError(f"no artifact {ref!r}", field=field, context={"ref": ref})
        return self._row_to_manifest(row)

    def path_for(self, ref: str, *, field: str = "uri") -> Path:
        """The blob's real path; refuses one that resolves outside the root (e.g. via a symlink)."""
        manifest = self.get(ref, field=field)
        path = self._inside_root(Path(manifest.local_path), field)
        if not path.is_file():
            raise ArtifactNotFoundError(f"artifact {manifest.uri} is indexed but its file is missing",
                                        field=field, context={"path": self.relative(path)})
        return path

    def list(self, run_id: str, stage: str | None = None,
             artifact_type: str | None = None) -> list[ArtifactManifest]:
        """Artifacts of a run, oldest first (created_at, then artifact_id)."""
        validate_id(run_id, "run_id")
        sql, params = "SELECT * FROM artifacts WHERE run_id = ?", [run_id]
        if stage is not None:
            sql += " AND stage = ?"
            params.append(validate_id(stage, "stage"))
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            params.append(validate_id(artifact_type, "artifact_type"))
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, artifact_id", params).fetchall()
        return [self._row_to_manifest(row) for row in rows]

    def verify(self, ref: str) -> ArtifactManifest:
        """Re-hash the blob; raise IntegrityError if it is missing or changed."""
        manifest = self.get(ref)
        path = Path(manifest.local_path)
        context: dict[str, Any] = {"uri": manifest.uri, "path": self.relative(path),
                                   "expected_sha256": manifest.sha256, "expected_size": manifest.size_bytes}
        try:
            path = self._inside_root(path, "uri")
            sha256, size = _hash_file(path)
        except (FileNotFoundError, IsADirectoryError):
            raise IntegrityError(f"artifact {manifest.uri} is indexed but its file is missing",
                                 context=context) from None
        if sha256 != manifest.sha256 or size != manifest.size_bytes:
            context.update(actual_sha256=sha256, actual_size=size)
            raise IntegrityError(f"artifact {manifest.uri} does not match its recorded checksum",
                                 context=context)
        return manifest

    # -------------------------------------------------------------- retention
    def runs_usage(self) -> list[RunUsage]:
        """(run_id, total bytes, newest created_at) per run, least recently written first."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT run_id, SUM(size_bytes), MAX(created_at) FROM artifacts"
                                " GROUP BY run_id ORDER BY MAX(created_at), run_id").fetchall()
        return [RunUsage(row[0], int(row[1]), row[2]) for row in rows]

    def delete_run(self, run_id: str) -> int:
        """Remove every artifact of ``run_id``; returns how many were indexed.

        Rows go first, then files, so no reader ever sees a row whose file is gone.
        """
        validate_id(run_id, "run_id")
        with self._db.write() as conn:
            count = conn.execute("DELETE FROM artifacts WHERE run_id = ?", (run_id,)).rowcount
        directory = self.blob_root / run_id
        if directory.is_symlink():
            directory.unlink()
        elif directory.exists():
            self._inside_root(directory, "run_id")
            shutil.rmtree(directory)
        return count

    def _delete_artifacts(self, conn: Any, artifact_ids: list[str]) -> list[Path]:
        """Delete index rows inside the caller's transaction; return the files to unlink after commit."""
        paths: list[Path] = []
        for artifact_id in artifact_ids:
            row = conn.execute("SELECT rel_path FROM artifacts WHERE artifact_id = ?", (artifact_id,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM artifacts WHERE artifact_id = ?", (artifact_id,))
                paths.append(self.root / row["rel_path"])
        return paths

    @property
    def database(self) -> Database:
        """The index database (shared with the run registry); the sweep reads which steps name what."""
        return self._db

    def delete_artifacts(self, artifact_ids: list[str]) -> int:
        """Remove these artifacts (rows first, then files); returns how many were indexed."""
        with self._db.write() as conn:
            paths = self._delete_artifacts(conn, list(artifact_ids))
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def sweep(self, older_than_s: float = 3600.0, *, apply: bool = True) -> list[Path]:
        """Remove (``apply``) temp files and unindexed blobs older than ``older_than_s`` (crash leftovers).

        The age threshold keeps it from racing a put that has renamed its file
        but not yet committed the row.  ``artifacts/sweep.py`` adds staging and
        unreferenced artifacts on top of this.
        """
        if not self.blob_root.exists():
            return []
        cutoff = time.time() - older_than_s
        with self._db.read() as conn:
            indexed = {row[0] for row in conn.execute("SELECT rel_path FROM artifacts")}
        removed: list[Path] = []
        for directory, _dirs, files in os.walk(self.blob_root):
            for name in files:
                path = Path(directory) / name
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue
                if info.st_mtime >= cutoff:
                    continue
                if path.relative_to(self.root).as_posix() in indexed:
                    continue
                if apply:
                    path.unlink(missing_ok=True)
                removed.append(path)
        return removed


__all__ = ["ArtifactStore", "RunUsage", "MEDIA_TYPE_EXTENSIONS", "normalise_media_type", "extension_for",
           "CHUNK_BYTES", "MAX_METADATA_BYTES"]
