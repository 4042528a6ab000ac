"""The artifact manifest and the ``artifact+fs://`` URI form."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from sparkle_motion.errors import InvalidInputError, PathEscapeError
from sparkle_motion.ids import validate_id

URI_SCHEME = "artifact+fs"
URI_PREFIX = f"{URI_SCHEME}://"
MAX_URI_CHARS = 512
ISO_UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"

#: Media fields a caller may pass in ``put(media=...)``, with their types.
MEDIA_FIELDS: dict[str, type] = {
    "duration_s": float, "fps": float, "width": int, "height": int, "sample_rate": int,
}


class ArtifactManifest(BaseModel):
    """What the store knows about one stored blob."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact_id: str
    uri: str
    run_id: str
    stage: str
    artifact_type: str
    media_type: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    created_at: str = Field(pattern=ISO_UTC_PATTERN, description="ISO-8601 UTC")
    local_path: str = Field(description="absolute path of the blob on the store's filesystem")
    duration_s: float | None = Field(default=None, ge=0)
    fps: float | None = Field(default=None, gt=0)
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    sample_rate: int | None = Field(default=None, gt=0)
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="provenance: tool, backend, model, seed, params, timings, request_id")

    @property
    def path(self) -> Path:
        return Path(self.local_path)


class ArtifactRef(NamedTuple):
    run_id: str
    stage: str
    artifact_id: str


def make_uri(run_id: str, stage: str, artifact_id: str) -> str:
    return f"{URI_PREFIX}{run_id}/{stage}/{artifact_id}"


def parse_uri(uri: object, field: str = "uri") -> ArtifactRef:
    """Split ``artifact+fs://<run_id>/<stage>/<artifact_id>`` into validated ids.

    Anything that could name a path outside the run/stage folder — '..', an
    absolute path, backslashes, percent-encoding (``%2F``), extra segments — is
    refused rather than normalised, so there is exactly one spelling per artifact.
    """
    if not isinstance(uri, str):
        raise InvalidInputError(f"must be a string {URI_PREFIX}<run_id>/<stage>/<artifact_id> "
                                f"(got {type(uri).__name__})", field=field)
    if len(uri) > MAX_URI_CHARS:
        raise InvalidInputError(f"is longer than {MAX_URI_CHARS} characters", field=field)
    if not uri.startswith(URI_PREFIX):
        scheme = uri.split("://", 1)[0] if "://" in uri else None
        reason = f"unsupported scheme {scheme!r}" if scheme is not None else "not a URI"
        raise InvalidInputError(f"{reason}; expected {URI_PREFIX}<run_id>/<stage>/<artifact_id> (got {uri!r:.120})",
                                field=field)
    body = uri[len(URI_PREFIX):]
    if "%" in body or "\\" in body or "\x00" in body:
        raise PathEscapeError(f"percent-encoding, backslashes and NUL are not allowed in artifact URIs "
                              f"(got {uri!r:.120})", field=field)
    parts = body.split("/")
    if body.startswith("/") or any(part in ("..", ".") for part in parts):
        raise PathEscapeError(f"refers outside the artifact root (got {uri!r:.120})", field=field)
    if len(parts) != 3:
        raise InvalidInputError(f"must have exactly three segments <run_id>/<stage>/<artifact_id> "
                                f"(got {uri!r:.120})", field=field)
    run_id, stage, artifact_id = parts
    for value, name in ((run_id, "run_id"), (stage, "stage"), (artifact_id, "artifact_id")):
        try:
            validate_id(value, name)
        except InvalidInputError as exc:
            raise InvalidInputError(f"segment {name} {exc.message}", field=field) from None
    return ArtifactRef(run_id, stage, artifact_id)
