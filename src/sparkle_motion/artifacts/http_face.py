"""The artifact store's HTTP face: download (with Range), manifest and verified upload.

Why: SQLite and the blobs stay on the host that owns the runs; a tool on another
host (``store.mode: http``, ``artifacts/http_store.py``), the notebook and remote
users reach any artifact through these routes instead of a shared filesystem.
production_agent mounts them (port 5008); ``create_artifact_router`` takes the
store and the settings by injection so tests can mount it on any app.

Contract:

* ``GET|HEAD /artifacts/{artifact_id}/content`` — the bytes, streamed from the
  blob (never read whole). ``Content-Type`` is the manifest's media type, ``ETag``
  and ``X-Checksum-Sha256`` its sha256, ``Accept-Ranges: bytes``; a ``Range``
  gets 206 with ``Content-Range`` (416 when no range is satisfiable).
  ``?download=1`` adds ``Content-Disposition: attachment`` with a safe filename.
* ``GET /artifacts/{artifact_id}/manifest`` — the ``ArtifactManifest`` JSON. Its
  ``local_path`` is the blob's path on the store's host: meaningful there only; a
  remote reader fetches ``/content`` instead.
* ``POST /artifacts/upload?run_id=&stage=&artifact_type=&media_type=`` (optional
  ``ext`` and the media fields ``duration_s``, ``fps``, ``width``, ``height``,
  ``sample_rate``) with the raw bytes as body, the required header
  ``X-Checksum-Sha256`` and an optional ``X-Artifact-Metadata`` (base64url of a JSON
  object, the provenance). The body streams into the store's staging area, at most
  ``store.max_upload_bytes`` (413 beyond); its sha256 must match the header (422
  ``checksum_mismatch``, nothing stored); then the store's atomic put moves it in.
  201 with the manifest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from sparkle_motion.artifacts.http_protocol import (CHECKSUM_HEADER, MAX_METADATA_HEADER_CHARS, METADATA_HEADER,
                                                    UPLOAD_PATH)
from sparkle_motion.artifacts.models import ArtifactManifest
from sparkle_motion.artifacts.store import MEDIA_TYPE_EXTENSIONS, ArtifactStore, normalise_media_type
from sparkle_motion.config import Settings
from sparkle_motion.errors import InvalidInputError, PayloadTooLargeError
from sparkle_motion.ids import validate_id
from sparkle_motion.logs import get_logger
from sparkle_motion.services.http_errors import error_body

__all__ = ["create_artifact_router"]

UPLOAD_ALLOWED_MEDIA_TYPES = frozenset(MEDIA_TYPE_EXTENSIONS)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_RANGE_SPEC_RE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")

log = get_logger("sparkle_motion.artifacts.http_face")


def _decode_metadata_header(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    if len(value) > MAX_METADATA_HEADER_CHARS:
        raise InvalidInputError(f"header is over {MAX_METADATA_HEADER_CHARS} characters", field=METADATA_HEADER)
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError):
        raise InvalidInputError("must be base64url of a JSON object", field=METADATA_HEADER) from None
    if not isinstance(data, dict):
        raise InvalidInputError("must be base64url of a JSON object", field=METADATA_HEADER)
    return data


def _unsatisfiable(range_header: str, size: int) -> bool:
    """True when ``range_header`` is a well-formed bytes range none of whose parts lies inside the file.

    Malformed headers are left to FileResponse (which refuses them); this only
    decides the 416, so it can carry the common JSON error body.
    """
    unit, _, specs = range_header.partition("=")
    if unit.strip().lower() != "bytes" or not specs:
        return False
    for spec in specs.split(","):
        match = _RANGE_SPEC_RE.match(spec)
        if match is None:
            return False
        first, last = match.groups()
        if first and int(first) < size:
            return False
        if not first and last and int(last) > 0 and size > 0:
            return False  # a suffix range of a non-empty file is always satisfiable
        if not first and not last:
            return False
    return True


def _download_name(manifest: ArtifactManifest) -> str:
    # Built only from safe ids and the store's validated extension: no quote, slash or control character.
    ext = Path(manifest.local_path).suffix
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,10}", ext):
        ext = ""
    return f"{manifest.artifact_type}-{manifest.artifact_id}{ext}"


def create_artifact_router(store: Callable[[], ArtifactStore], settings: Settings) -> APIRouter:
    """The routes of the face over ``store()`` (called per request), limits from ``settings.store``."""
    router = APIRouter(tags=["artifacts"])
    max_upload = settings.store.max_upload_bytes

    def manifest_of(artifact_id: str) -> ArtifactManifest:
        validate_id(artifact_id, "artifact_id")
        return store().get(artifact_id, field="artifact_id")

    @router.api_route("/artifacts/{artifact_id}/content", methods=["GET", "HEAD"],
                      summary="the artifact's bytes (Range, HEAD, ?download=1)")
    def content(artifact_id: str, request: Request, download: bool = Query(False)) -> Response:
        manifest = manifest_of(artifact_id)
        path = store().path_for(manifest.artifact_id, field="artifact_id")
        size = path.stat().st_size
        headers = {"ETag": f'"{manifest.sha256}"', CHECKSUM_HEADER: manifest.sha256, "Accept-Ranges": "bytes"}
        range_header = request.headers.get("range")
        if range_header and _unsatisfiable(range_header, size):
            body = error_body({"code": "range_not_satisfiable", "field": "Range",
                               "message": f"no part of {range_header!r:.80} lies inside the {size} bytes"})
            return JSONResponse(body, status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        return FileResponse(path, media_type=manifest.media_type, headers=headers,
                            filename=_download_name(manifest) if download else None,
                            content_disposition_type="attachment")

    @router.get("/artifacts/{artifact_id}/manifest", response_model=ArtifactManifest,
                summary="the artifact's manifest (local_path is a path on the store's host)")
    def manifest(artifact_id: str) -> ArtifactManifest:
        return manifest_of(artifact_id)

    @router.post(UPLOAD_PATH, status_code=201, response_model=ArtifactManifest,
                 summary="store the raw body as an artifact, verified against X-Checksum-Sha256")
    async def upload(
        request: Request,
        run_id: str = Query(...), stage: str = Query(...), artifact_type: str = Query(...),
        media_type: str = Query(...), ext: str | None = Query(None),
        duration_s: float | None = Query(None), fps: float | None = Query(None), width: int | None = Query(None),
        height: int | None = Query(None), sample_rate: int | None = Query(None),
        checksum: str = Header(..., alias=CHECKSUM_HEADER),
        metadata_header: str | None = Header(None, alias=METADATA_HEADER),
    ) -> ArtifactManifest:
        for value, field in ((run_id, "run_id"), (stage, "stage"), (artifact_type, "artifact_type")):
            validate_id(value, field)
        media_type = normalise_media_type(media_type)
        if media_type.split(";", 1)[0].strip() not in UPLOAD_ALLOWED_MEDIA_TYPES:
            raise InvalidInputError(f"media type {media_type!r} is not accepted; allowed: "
                                    f"{', '.join(sorted(UPLOAD_ALLOWED_MEDIA_TYPES))}", field="media_type")
        expected = checksum.strip().lower()
        if not _SHA256_RE.fullmatch(expected):
            raise InvalidInputError("must be the body's sha256 as 64 hex digits", field=CHECKSUM_HEADER)
        metadata = _decode_metadata_header(metadata_header)
        media = {k: v for k, v in (("duration_s", duration_s), ("fps", fps), ("width", width),
                                   ("height", height), ("sample_rate", sample_rate)) if v is not None}
        target = store()
        staged = target.staging_dir() / f"upload-{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        size = 0
        try:
            with open(staged, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload:
                        raise PayloadTooLargeError(f"upload exceeds store.max_upload_bytes ({max_upload} bytes)",
                                                   context={"limit_bytes": max_upload})
                    hasher.update(chunk)
                    out.write(chunk)
            actual = hasher.hexdigest()
            if actual != expected:
                log.warning("upload.checksum_mismatch", run_id=run_id, stage=stage, size=size)
                raise InvalidInputError("the body's sha256 does not match X-Checksum-Sha256; nothing was stored",
                                        field=CHECKSUM_HEADER, code="checksum_mismatch",
                                        context={"expected_sha256": expected, "actual_sha256": actual,
                                                 "size_bytes": size})
            stored = await run_in_threadpool(
                target.put, run_id, stage, artifact_type, staged, media_type, metadata,
                media=media or None, ext=ext, move=True)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        log.info("upload.stored", uri=stored.uri, size=stored.size_bytes)
        return stored

    return router
