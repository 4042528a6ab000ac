"""``HttpArtifactStore``: the ArtifactStore a tool uses when the store is on another host.

Why: with ``store.mode: http`` in the profile (a tool on a GPU worker that does not
share the head node's disk) the tool reads its inputs and writes its outputs
through production_agent's artifact face (``artifacts/http_face.py``) instead of
``SPARKLE_HOME``. It offers what ``ToolContext`` uses of :class:`ArtifactStore` —
``get``, ``path_for``, ``open``, ``read_bytes``, ``verify``, ``staging_dir``, ``put``,
``put_json``, ``root`` — so backends do not change.

Checksums are checked at both ends: a download is hashed while it streams into a
local cache and must match the manifest's sha256 (and the ``X-Checksum-Sha256`` the
face sent), else ``IntegrityError`` and nothing is cached; an upload carries its
sha256, which the face verifies before its atomic put (422 ``checksum_mismatch``,
raised here as ``IntegrityError`` with that code).

The cache and the staging area live in a private temp folder of the process (not
``SPARKLE_HOME``): the tool host's own view of the store stays empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from sparkle_motion.artifacts.http_protocol import CHECKSUM_HEADER, METADATA_HEADER, UPLOAD_PATH, encode_metadata_header
from sparkle_motion.artifacts.models import URI_PREFIX, ArtifactManifest, parse_uri
from sparkle_motion.artifacts.store import CHUNK_BYTES, ArtifactStore, Source
from sparkle_motion.config import Settings
from sparkle_motion.errors import (ArtifactNotFoundError, IntegrityError, InvalidInputError, PathEscapeError,
                                   PayloadTooLargeError, ToolCallError, UnauthorizedError)
from sparkle_motion.ids import validate_id
from sparkle_motion.logs import get_logger

__all__ = ["HttpArtifactStore", "open_tool_store"]

log = get_logger("sparkle_motion.artifacts.http_store")


def open_tool_store(settings: Settings) -> ArtifactStore | HttpArtifactStore:
    """The store a tool process uses: the local one, or the HTTP face when ``store.mode`` is ``http``."""
    if settings.store.mode == "http":
        return HttpArtifactStore(settings.store.url or settings.url_for("production_agent"), token=settings.token)
    return ArtifactStore(settings.home, db_path=settings.db_path)


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


class HttpArtifactStore:
    """The artifact store of another host, reached through its HTTP face; a verified local cache."""

    def __init__(self, url: str, *, token: str | None = None, cache_root: Path | None = None,
                 timeout_s: float = 300.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._own_root = cache_root is None
        self.root = Path(cache_root or tempfile.mkdtemp(prefix="sparkle-remote-store-")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, transport=transport,
                                    timeout=httpx.Timeout(30.0, read=timeout_s, write=timeout_s))

    def __repr__(self) -> str:
        return f"HttpArtifactStore(url={self.url!r})"

    def close(self) -> None:
        self._client.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ errors
    def _raise_for(self, response: httpx.Response, field: str) -> None:
        if response.status_code < 400:
            return
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        code, message = error.get("code"), error.get("message") or response.text[:200]
        context = {"status": response.status_code, "remote_code": code, **(error.get("context") or {})}
        if code == "checksum_mismatch":
            raise IntegrityError(f"the store refused the upload: {message}", code="checksum_mismatch",
                                 field=field, context=context)
        if response.status_code == 404:
            raise ArtifactNotFoundError(message, field=field, context=context)
        if response.status_code == 413:
            raise PayloadTooLargeError(message, field=field, context=context)
        if response.status_code == 401:
            raise UnauthorizedError(f"the artifact store refused this tool's token: {message}", context=context)
        if response.status_code == 422:
            kind = PathEscapeError if code == "path_escape" else InvalidInputError
            raise kind(message, field=field, code=code, context=context)
        raise ToolCallError(f"artifact store at {self.url} answered {response.status_code}: {message}",
                            tool_id="production_agent", status=response.status_code, remote_error=error)

    def _request(self, method: str, path: str, field: str, **kw: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ToolCallError(f"artifact store at {self.url} unreachable: {type(exc).__name__}: {exc}",
                                tool_id="production_agent") from exc
        self._raise_for(response, field)
        return response

    # -------------------------------------------------------------------- read
    def _cache_path(self, manifest: ArtifactManifest) -> Path:
        suffix = Path(manifest.local_path).suffix
        return self.root / "cache" / manifest.run_id / manifest.stage / f"{manifest.artifact_id}{suffix}"

    def get(self, ref: str, *, field: str = "uri") -> ArtifactManifest:
        """The manifest from the store's host, ``local_path`` pointing at this process's cache."""
        if isinstance(ref, str) and not ref.startswith(URI_PREFIX) and "://" not in ref:
            if "/" in ref or "\\" in ref or ".." in ref or "%" in ref:
                raise PathEscapeError(f"an artifact id cannot contain path syntax (got {ref!r:.120})", field=field)
            artifact_id, expected = validate_id(ref, field), None
        else:
            parsed = parse_uri(ref, field)
            artifact_id, expected = parsed.artifact_id, (parsed.run_id, parsed.stage)
        remote = ArtifactManifest.model_validate(
            self._request("GET", f"/artifacts/{artifact_id}/manifest", field).json())
        if expected is not None and (remote.run_id, remote.stage) != expected:
            raise ArtifactNotFoundError(f"no artifact {ref!r}", field=field, context={"ref": ref})
        return remote.model_copy(update={"local_path": str(self._cache_path(remote))})

    def path_for(self, ref: str, *, field: str = "uri") -> Path:
        """A local copy of the blob, downloaded once and verified against its sha256."""
        manifest = self.get(ref, field=field)
        path = Path(manifest.local_path)
        if path.is_file() and path.stat().st_size == manifest.size_bytes:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        hasher = hashlib.sha256()
        try:
            with self._client.stream("GET", f"/artifacts/{manifest.artifact_id}/content") as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response, field)
                sent = response.headers.get(CHECKSUM_HEADER)
                with open(temp, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        hasher.update(chunk)
                        out.write(chunk)
            actual = hasher.hexdigest()
            if actual != manifest.sha256 or (sent and sent != manifest.sha256):
                raise IntegrityError(f"download of {manifest.uri} does not match its sha256",
                                     field=field, code="checksum_mismatch",
                                     context={"uri": manifest.uri, "expected_sha256": manifest.sha256,
                                              "actual_sha256": actual, "header_sha256": sent})
            os.replace(temp, path)
        except httpx.HTTPError as exc:
            raise ToolCallError(f"download of {manifest.uri} from {self.url} failed: {exc}",
                                tool_id="production_agent") from exc
        finally:
            temp.unlink(missing_ok=True)
        return path

    def open(self, ref: str) -> BinaryIO:
        return open(self.path_for(ref), "rb")

    def read_bytes(self, ref: str) -> bytes:
        with self.open(ref) as handle:
            return handle.read()

    def verify(self, ref: str) -> ArtifactManifest:
        """Re-hash the cached copy (downloading it if needed) against the store's sha256."""
        manifest = self.get(ref)
        path = self.path_for(ref)
        if _sha256_of(path) != manifest.sha256:
            path.unlink(missing_ok=True)
            raise IntegrityError(f"cached copy of {manifest.uri} does not match its sha256",
                                 context={"uri": manifest.uri})
        return manifest

    # ------------------------------------------------------------------- write
    def staging_dir(self) -> Path:
        directory = self.root / "staging"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def put(self, run_id: str, stage: str, artifact_type: str, source: Source, media_type: str,
            metadata: dict[str, Any] | None = None, *, media: dict[str, float | int] | None = None,
            ext: str | None = None, move: bool = False) -> ArtifactManifest:
        """Upload ``source`` with its sha256; the store verifies it and puts it atomically.

        A Path is streamed from disk; bytes or a stream are spooled to staging first
        (the checksum goes in a header, before the body). With ``move=True`` the file
        becomes the cached copy of the new artifact, as a local put would consume it.
        """
        for value, name in ((run_id, "run_id"), (stage, "stage"), (artifact_type, "artifact_type")):
            validate_id(value, name)
        spooled: Path | None = None
        if isinstance(source, os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise InvalidInputError(f"file not found: {path.name}", field="source")
        elif isinstance(source, (bytes, bytearray, memoryview)):
            spooled = path = self.staging_dir() / f"spool-{uuid.uuid4().hex}"
            path.write_bytes(bytes(source))
        elif callable(getattr(source, "read", None)):
            spooled = path = self.staging_dir() / f"spool-{uuid.uuid4().hex}"
            with open(path, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK_BYTES)  # type: ignore[misc]
        else:
            raise InvalidInputError(f"must be a Path, bytes or a binary stream (got {type(source).__name__})",
                                    field="source")
        try:
            sha256 = _sha256_of(path)
            params: dict[str, Any] = {"run_id": run_id, "stage": stage, "artifact_type": artifact_type,
                                      "media_type": media_type, **(media or {})}
            if ext is not None:
                params["ext"] = ext
            headers = {CHECKSUM_HEADER: sha256, "Content-Type": "application/octet-stream",
                       "Content-Length": str(path.stat().st_size)}
            if metadata:
                headers[METADATA_HEADER] = encode_metadata_header(metadata)
            response = self._request("POST", UPLOAD_PATH, "source", params=params, headers=headers,
                                     content=_file_chunks(path))
            remote = ArtifactManifest.model_validate(response.json())
            if remote.sha256 != sha256:
                raise IntegrityError(f"the store recorded {remote.uri} with another sha256 than was sent",
                                     context={"uri": remote.uri, "sent": sha256, "recorded": remote.sha256})
            manifest = remote.model_copy(update={"local_path": str(self._cache_path(remote))})
            if move or spooled is not None:
                Path(manifest.local_path).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, manifest.local_path)
                spooled = None
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
        log.info("remote_put", uri=manifest.uri, size=manifest.size_bytes)
        return manifest

    def put_json(self, run_id: str, stage: str, artifact_type: str, obj: Any,
                 metadata: dict[str, Any] | None = None) -> ArtifactManifest:
        if hasattr(obj, "model_dump") and callable(obj.model_dump):
            obj = obj.model_dump(mode="json")
        data = json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=2).encode("utf-8") + b"\n"
        return self.put(run_id, stage, artifact_type, data, "application/json", metadata)

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` as errors may show it: relative to the cache root (a foreign path: its name only)."""
        given = Path(path)
        return given.relative_to(self.root).as_posix() if given.is_relative_to(self.root) else given.name
