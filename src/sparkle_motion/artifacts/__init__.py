"""Artifact store (filesystem blobs + SQLite index) and its ADK artifact-service adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparkle_motion.artifacts.models import ArtifactManifest, ArtifactRef, make_uri, parse_uri
from sparkle_motion.artifacts.store import ArtifactStore, RunUsage

if TYPE_CHECKING:
    from sparkle_motion.artifacts.adk_service import SparkleArtifactService

__all__ = ["ArtifactManifest", "ArtifactRef", "ArtifactStore", "RunUsage", "SparkleArtifactService",
           "make_uri", "parse_uri"]


def __getattr__(name: str) -> Any:
    # google.adk is slow to import; FunctionTool processes that only need the
    # store should not pay for it.
    if name == "SparkleArtifactService":
        from sparkle_motion.artifacts.adk_service import SparkleArtifactService

        return SparkleArtifactService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
