"""google-adk ``BaseArtifactService`` over the Sparkle artifact store.

ADK agents' ``save_artifact`` / ``load_artifact`` land in the same store (and
the same SQLite file) as every FunctionTool output:

* session-scoped artifacts go to run ``session_id`` (ADK sessions are runs),
  user-scoped ones (``user:`` filenames, or no session) to a run derived from
  ``app_name``/``user_id``; the stage is ``"adk"``;
* the ADK filename is kept verbatim in ``adk_artifact_versions`` and is never
  used as a path — on disk only a sanitised copy appears, inside an artifact id;
* versions are rows in ``adk_artifact_versions``, numbered 0, 1, 2 ... per
  (app, user, scope, filename) and inserted in the same transaction as the blob's
  index row, so concurrent savers from several processes get distinct versions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import Any, Optional, Union

from google.adk.artifacts import artifact_util
from google.adk.artifacts.base_artifact_service import ArtifactVersion, BaseArtifactService, ensure_part
from google.adk.errors.input_validation_error import InputValidationError
from google.genai import types

from sparkle_motion.artifacts.models import ArtifactManifest, make_uri
from sparkle_motion.artifacts.store import MAX_METADATA_BYTES, ArtifactStore, normalise_media_type
from sparkle_motion.db import encode_json
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.ids import is_valid_id, validate_id

USER_PREFIX = "user:"
USER_SCOPE = ""
MAX_NAME_CHARS = 1024
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_SIMPLE_EXT = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def _require_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError("must be a non-empty string", field=field)
    if len(value) > MAX_NAME_CHARS or "\x00" in value:
        raise InvalidInputError(f"must be at most {MAX_NAME_CHARS} characters without NUL", field=field)
    return value


def _derived_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:20]
    return f"{prefix}-{digest}"


def _artifact_type_and_ext(filename: str) -> tuple[str, str | None]:
    """A readable, safe artifact_type (and extension) from an arbitrary ADK filename."""
    base = filename.removeprefix(USER_PREFIX).replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    ext = f".{suffix}" if dot and stem and _SIMPLE_EXT.fullmatch(f".{suffix}") else None
    cleaned = _UNSAFE_CHARS.sub("_", stem if ext else base)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).lstrip("._-")[:64].rstrip(".")
    return (cleaned if is_valid_id(cleaned) else "artifact"), ext


class SparkleArtifactService(BaseArtifactService):
    """ADK artifact service persisting into an :class:`ArtifactStore`."""

    def __init__(self, store: ArtifactStore | None = None, *, stage: str = "adk") -> None:
        self.store = store if store is not None else ArtifactStore()
        self.stage = validate_id(stage, "stage")

    # --------------------------------------------------------------- helpers
    def _scope(self, app_name: str, user_id: str, filename: str,
               session_id: Optional[str]) -> tuple[str, str]:
        """Return (scope key, run_id) for an artifact."""
        _require_name(app_name, "app_name")
        _require_name(user_id, "user_id")
        _require_name(filename, "filename")
        if filename.startswith(USER_PREFIX) or session_id is None:
            return USER_SCOPE, _derived_id("adk-user", app_name, user_id)
        _require_name(session_id, "session_id")
        run_id = session_id if is_valid_id(session_id) else _derived_id("adk-session", session_id)
        return session_id, run_id

    def _version_row(self, app_name: str, user_id: str, scope: str, filename: str,
                     version: Optional[int]) -> Any:
        sql = ("SELECT v.*, a.run_id AS run_id, a.stage AS stage FROM adk_artifact_versions v"
               " LEFT JOIN artifacts a ON a.artifact_id = v.artifact_id"
               " WHERE v.app_name = ? AND v.user_id = ? AND v.scope = ? AND v.filename = ?")
        params: list[Any] = [app_name, user_id, scope, filename]
        if version is None:
            sql += " ORDER BY v.version DESC LIMIT 1"
        else:
            if isinstance(version, bool) or not isinstance(version, int):
                raise InvalidInputError(f"must be an integer (got {version!r:.40})", field="version")
            sql += " AND v.version = ?"
            params.append(version)
        with self.store._db.read() as conn:
            return conn.execute(sql, params).fetchone()

    @staticmethod
    def _to_version(row: Any) -> ArtifactVersion:
        canonical = (row["file_uri"] if row["kind"] == "file"
                     else make_uri(row["run_id"], row["stage"], row["artifact_id"]))
        return ArtifactVersion(version=row["version"], canonical_uri=canonical,
                               custom_metadata=json.loads(row["custom_metadata"]),
                               create_time=row["create_time"], mime_type=row["mime_type"])

    # ------------------------------------------------------------------ save
    def _save_sync(self, app_name: str, user_id: str, filename: str,
                   artifact: Union[types.Part, dict[str, Any]], session_id: Optional[str],
                   custom_metadata: Optional[dict[str, Any]]) -> int:
        part = ensure_part(artifact)
        scope, run_id = self._scope(app_name, user_id, filename, session_id)
        if custom_metadata is not None and not isinstance(custom_metadata, dict):
            raise InvalidInputError("must be a JSON object", field="custom_metadata")
        custom_json = encode_json(custom_metadata or {}, field="custom_metadata", max_bytes=MAX_METADATA_BYTES)
        key = (app_name, user_id, scope, filename)
        versions: list[int] = []

        def insert_version(conn: Any, kind: str, artifact_id: str | None, mime_type: str | None,
                           display_name: str | None, file_uri: str | None) -> None:
            (version,) = conn.execute(
                "SELECT COALESCE(MAX(version), -1) + 1 FROM adk_artifact_versions"
                " WHERE app_name = ? AND user_id = ? AND scope = ? AND filename = ?", key).fetchone()
            conn.execute(
                "INSERT INTO adk_artifact_versions (app_name, user_id, scope, filename, version, kind,"
                " artifact_id, mime_type, display_name, file_uri, custom_metadata, create_time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, version, kind, artifact_id, mime_type, display_name, file_uri, custom_json, time.time()))
            versions.append(version)

        if part.file_data is not None and part.inline_data is None and part.text is None:
            file_data = part.file_data
            if not file_data.file_uri:
                raise InvalidInputError("must be set", field="artifact.file_data.file_uri")
            if artifact_util.is_artifact_ref(part):
                parsed = artifact_util.parse_artifact_uri(file_data.file_uri)
                if parsed is None:
                    raise InvalidInputError(f"invalid artifact reference {file_data.file_uri!r:.200}",
                                            field="artifact.file_data.file_uri")
                try:
                    artifact_util.validate_artifact_reference_scope(
                        app_name=app_name, user_id=user_id, session_id=session_id, parsed_uri=parsed)
                except InputValidationError as exc:
                    raise InvalidInputError(str(exc), field="artifact.file_data.file_uri") from exc
            with self.store._db.write() as conn:
                insert_version(conn, "file", None, file_data.mime_type, file_data.display_name,
                               file_data.file_uri)
            return versions[0]

        if part.inline_data is not None:
            if part.inline_data.data is None:
                raise InvalidInputError("inline_data must contain data", field="artifact.inline_data.data")
            kind, payload = "inline", part.inline_data.data
            mime_type = part.inline_data.mime_type or "application/octet-stream"
            display_name = part.inline_data.display_name
        elif part.text is not None:
            kind, payload, mime_type, display_name = "text", part.text.encode("utf-8"), "text/plain", None
        else:
            raise InvalidInputError("an artifact needs inline_data, text or file_data", field="artifact")
        try:
            store_media_type = normalise_media_type(mime_type)
        except InvalidInputError:
            store_media_type = "application/octet-stream"  # the exact ADK mime type is kept in the version row
        artifact_type, ext = _artifact_type_and_ext(filename)
        provenance = {"source": "adk", "app_name": app_name, "user_id": user_id,
                      "session_id": session_id, "filename": filename}

        def on_insert(conn: Any, manifest: ArtifactManifest) -> None:
            insert_version(conn, kind, manifest.artifact_id, mime_type, display_name, None)

        self.store._put(run_id, self.stage, artifact_type, payload, store_media_type, provenance,
                        ext=ext, on_insert=on_insert)
        return versions[0]

    # ------------------------------------------------------------------ load
    def _load_sync(self, app_name: str, user_id: str, filename: str, session_id: Optional[str],
                   version: Optional[int], remaining_depth: int) -> Optional[types.Part]:
        scope, _run_id = self._scope(app_name, user_id, filename, session_id)
        row = self._version_row(app_name, user_id, scope, filename, version)
        if row is None:
            return None
        if row["kind"] == "file":
            if row["file_uri"].startswith("artifact://"):
                try:
                    parsed = artifact_util.resolve_artifact_reference(
                        file_uri=row["file_uri"], app_name=app_name, user_id=user_id,
                        session_id=session_id, remaining_depth=remaining_depth)
                except InputValidationError as exc:
                    raise InvalidInputError(str(exc), field="filename",
                                            context={"file_uri": row["file_uri"]}) from exc
                return self._load_sync(parsed.app_name, parsed.user_id, parsed.filename, parsed.session_id,
                                       parsed.version, remaining_depth - 1)
            return types.Part(file_data=types.FileData(file_uri=row["file_uri"], mime_type=row["mime_type"],
                                                       display_name=row["display_name"]))
        data = self.store.read_bytes(row["artifact_id"])
        if row["kind"] == "text":
            return types.Part(text=data.decode("utf-8"))
        part = types.Part(inline_data=types.Blob(mime_type=row["mime_type"], data=data,
                                                 display_name=row["display_name"]))
        # A session rewind "deletes" by saving this marker as a new version.
        return None if artifact_util._is_rewind_tombstone(part) else part

    # ------------------------------------------------------------ list / rm
    def _list_keys_sync(self, app_name: str, user_id: str, session_id: Optional[str]) -> list[str]:
        _require_name(app_name, "app_name")
        _require_name(user_id, "user_id")
        scopes = [USER_SCOPE]
        if session_id is not None:
            scopes.append(_require_name(session_id, "session_id"))
        with self.store._db.read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT filename FROM adk_artifact_versions WHERE app_name = ? AND user_id = ?"
                f" AND scope IN ({', '.join('?' * len(scopes))}) ORDER BY filename",
                (app_name, user_id, *scopes)).fetchall()
        return [row[0] for row in rows]

    def _delete_sync(self, app_name: str, user_id: str, filename: str, session_id: Optional[str]) -> None:
        scope, _run_id = self._scope(app_name, user_id, filename, session_id)
        key = (app_name, user_id, scope, filename)
        with self.store._db.write() as conn:
            ids = [row[0] for row in conn.execute(
                "SELECT artifact_id FROM adk_artifact_versions WHERE app_name = ? AND user_id = ?"
                " AND scope = ? AND filename = ? AND artifact_id IS NOT NULL", key)]
            conn.execute("DELETE FROM adk_artifact_versions WHERE app_name = ? AND user_id = ?"
                         " AND scope = ? AND filename = ?", key)
            paths = self.store._delete_artifacts(conn, ids)
        for path in paths:  # after commit: a row never outlives its file
            path.unlink(missing_ok=True)

    def _versions_sync(self, app_name: str, user_id: str, filename: str,
                       session_id: Optional[str]) -> list[ArtifactVersion]:
        scope, _run_id = self._scope(app_name, user_id, filename, session_id)
        with self.store._db.read() as conn:
            rows = conn.execute(
                "SELECT v.*, a.run_id AS run_id, a.stage AS stage FROM adk_artifact_versions v"
                " LEFT JOIN artifacts a ON a.artifact_id = v.artifact_id"
                " WHERE v.app_name = ? AND v.user_id = ? AND v.scope = ? AND v.filename = ?"
                " ORDER BY v.version", (app_name, user_id, scope, filename)).fetchall()
        return [self._to_version(row) for row in rows]

    def _get_version_sync(self, app_name: str, user_id: str, filename: str, session_id: Optional[str],
                          version: Optional[int]) -> Optional[ArtifactVersion]:
        scope, _run_id = self._scope(app_name, user_id, filename, session_id)
        row = self._version_row(app_name, user_id, scope, filename, version)
        return None if row is None else self._to_version(row)

    # ------------------------------------------------------- ADK interface
    async def save_artifact(self, *, app_name: str, user_id: str, filename: str,
                            artifact: Union[types.Part, dict[str, Any]], session_id: Optional[str] = None,
                            custom_metadata: Optional[dict[str, Any]] = None) -> int:
        return await asyncio.to_thread(self._save_sync, app_name, user_id, filename, artifact, session_id,
                                       custom_metadata)

    async def load_artifact(self, *, app_name: str, user_id: str, filename: str,
                            session_id: Optional[str] = None,
                            version: Optional[int] = None) -> Optional[types.Part]:
        return await asyncio.to_thread(self._load_sync, app_name, user_id, filename, session_id, version,
                                       artifact_util._MAX_ARTIFACT_REFERENCE_DEPTH)

    async def list_artifact_keys(self, *, app_name: str, user_id: str,
                                 session_id: Optional[str] = None) -> list[str]:
        return await asyncio.to_thread(self._list_keys_sync, app_name, user_id, session_id)

    async def delete_artifact(self, *, app_name: str, user_id: str, filename: str,
                              session_id: Optional[str] = None) -> None:
        await asyncio.to_thread(self._delete_sync, app_name, user_id, filename, session_id)

    async def list_versions(self, *, app_name: str, user_id: str, filename: str,
                            session_id: Optional[str] = None) -> list[int]:
        versions = await asyncio.to_thread(self._versions_sync, app_name, user_id, filename, session_id)
        return [entry.version for entry in versions]

    async def list_artifact_versions(self, *, app_name: str, user_id: str, filename: str,
                                     session_id: Optional[str] = None) -> list[ArtifactVersion]:
        return await asyncio.to_thread(self._versions_sync, app_name, user_id, filename, session_id)

    async def get_artifact_version(self, *, app_name: str, user_id: str, filename: str,
                                   session_id: Optional[str] = None,
                                   version: Optional[int] = None) -> Optional[ArtifactVersion]:
        return await asyncio.to_thread(self._get_version_sync, app_name, user_id, filename, session_id, version)
