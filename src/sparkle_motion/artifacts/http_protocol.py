"""The wire names the artifact face (``http_face.py``) and its client (``http_store.py``) share.

Kept apart from both so the client, which tool processes import through
``services/app.py``, does not import the server side (and the services package).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sparkle_motion.errors import InvalidInputError

__all__ = ["UPLOAD_PATH", "CHECKSUM_HEADER", "METADATA_HEADER", "MAX_METADATA_HEADER_CHARS",
           "encode_metadata_header"]

UPLOAD_PATH = "/artifacts/upload"
CHECKSUM_HEADER = "X-Checksum-Sha256"
METADATA_HEADER = "X-Artifact-Metadata"
#: HTTP servers cap a request's headers (uvicorn/h11: 16 KiB in all), so the metadata header is kept below.
MAX_METADATA_HEADER_CHARS = 12 * 1024


def encode_metadata_header(metadata: dict[str, Any]) -> str:
    """The ``X-Artifact-Metadata`` value for ``metadata`` (base64url JSON); too big → InvalidInputError."""
    raw = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    value = base64.urlsafe_b64encode(raw).decode("ascii")
    if len(value) > MAX_METADATA_HEADER_CHARS:
        raise InvalidInputError(f"metadata of {len(raw)} bytes is too big to upload with an artifact "
                                f"(header limit {MAX_METADATA_HEADER_CHARS} characters)", field="metadata")
    return value
