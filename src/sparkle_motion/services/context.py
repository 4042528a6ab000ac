"""ToolContext: what a backend gets with every call."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from sparkle_motion.artifacts import ArtifactManifest, ArtifactStore
from sparkle_motion.artifacts.http_store import HttpArtifactStore
from sparkle_motion.config import Settings
from sparkle_motion.errors import Cancelled, InvalidInputError, NotFoundError
from sparkle_motion.logs import SparkleLogger
from sparkle_motion.services.models import ToolRequest
from sparkle_motion.services.replica import staging_prefix


class CancelToken:
    """A thread-safe, set-once cancel flag with a reason.

    The runtime sets it when a sync ``/invoke``'s client disconnects; a job
    runner sets it for ``DELETE /jobs/{id}``.  The backend, running on a worker
    thread, polls it between steps (``ToolContext.check_cancelled``), and
    subprocess helpers (``run_ffmpeg(cancel=...)``) kill their child when it is set.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``, waking at once on a cancel; True when cancelled."""
        return self._event.wait(timeout_s)


#: Where a backend's progress reports go: ``sink(step, total, phase)`` (a job's tracker).
ProgressSink = Callable[[int, "int | None", str], None]


class ToolContext:
    """Per-request services for a backend: the store, provenance, logging, staging.

    Outputs contract: a backend writes its work into paths from
    :meth:`staging_path` and stores it with :meth:`put_output` only once the
    whole result exists (normally as the last step of ``invoke``).  The
    framework deletes whatever is still staged when the call ends, so a call
    that raises leaves neither a half-written file under a final name nor an
    index row — nothing was put.
    """

    def __init__(
        self,
        *,
        tool_id: str,
        tool_version: str,
        backend: str,
        model: str,
        options: Mapping[str, Any],
        settings: Settings,
        store: ArtifactStore | HttpArtifactStore,
        request_id: str,
        log: SparkleLogger,
        cancel_token: CancelToken | None = None,
        progress_sink: ProgressSink | None = None,
        step_delay_s: float = 0.0,
    ) -> None:
        self.tool_id = tool_id
        self.tool_version = tool_version
        self.backend = backend
        self.model = model
        self.options = dict(options)
        self.settings = settings
        self.store = store
        self.request_id = request_id
        self.log = log
        self.outputs: list[ArtifactManifest] = []
        self._staged: list[Path] = []
        self.cancel_token = cancel_token if cancel_token is not None else CancelToken()
        self._progress_sink = progress_sink
        self._step_delay_s = step_delay_s

    @property
    def cancelled(self) -> bool:
        """True once the caller went away or a cancel was asked for; the backend should stop soon."""
        return self.cancel_token.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the work was cancelled; backends call it once per frame/chunk/step."""
        if self.cancel_token.is_set():
            raise Cancelled(f"{self.tool_id} call cancelled: {self.cancel_token.reason or 'cancel requested'}",
                            context={"reason": self.cancel_token.reason})

    def progress(self, step: int, total: int | None = None, phase: str = "") -> None:
        """Report that ``step`` of ``total`` units of ``phase`` are done; also a cancellation point.

        Backends call it from their inner loop (a diffusers ``callback_on_step_end``,
        a token loop, a frame loop).  A job shows it in ``GET /jobs/{id}`` with an
        ETA; a sync /invoke has nobody to show it to and only checks for a cancel.
        The profile's test-only ``test_step_delay_s`` is waited here (woken by a
        cancel), so a tiny model can stand in for a slow real one.
        """
        if self._progress_sink is not None:
            self._progress_sink(step, total, phase)
        if self._step_delay_s > 0:
            self.cancel_token.wait(self._step_delay_s)
        self.check_cancelled()

    def provenance(self, **extra: Any) -> dict[str, Any]:
        """Provenance for an output: who made it and how; ``extra`` wins on conflicts."""
        return {
            "tool": self.tool_id,
            "tool_version": self.tool_version,
            "backend": self.backend,
            "model": self.model,
            "request_id": self.request_id,
            **extra,
        }

    def stage_for(self, request: ToolRequest) -> str:
        return request.stage or self.tool_id

    def resolve_input(self, uri: str, field: str) -> tuple[ArtifactManifest, Path]:
        """Find an input artifact; every failure is an InvalidInputError naming ``field``.

        Refuses unknown artifacts, malformed URIs, URIs that try to leave the
        artifact root and index rows whose blob is missing on disk.
        """
        try:
            manifest = self.store.get(uri, field=field)
            path = self.store.path_for(uri, field=field)
        except InvalidInputError as exc:  # malformed / escaping URIs (PathEscapeError keeps its code)
            if exc.field != field:
                raise type(exc)(exc.message, field=field, context=exc.context) from None
            raise
        except NotFoundError as exc:
            # 422, not 404: the endpoint exists; the caller's input names a missing artifact.
            raise InvalidInputError(exc.message, field=field, code=exc.code,
                                    context={"uri": str(uri)[:200]}) from None
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(Path(self.store.root).resolve()):  # the store checks too; inputs are untrusted
            raise InvalidInputError(f"artifact {uri!r:.200} resolves outside the artifact root", field=field,
                                    code="path_escape")
        return manifest, resolved

    def staging_path(self, suffix: str = "") -> Path:
        """A fresh path in the store's staging area; removed when the call ends unless put with move=True."""
        name = f"{staging_prefix(self.tool_id)}{self.request_id}-{uuid.uuid4().hex[:12]}{suffix}"
        path = Path(self.store.staging_dir()) / name
        self._staged.append(path)
        return path

    def put_output(
        self,
        request: ToolRequest,
        artifact_type: str,
        source: Path | bytes | BinaryIO,
        media_type: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        media: Mapping[str, Any] | None = None,
        ext: str | None = None,
        move: bool = False,
    ) -> ArtifactManifest:
        """Store one finished output under ``request.run_id / stage_for(request)``.

        ``metadata`` is merged into :meth:`provenance` (its keys win), so every
        stored artifact says which tool, backend, model and request made it.
        """
        manifest = self.store.put(
            request.run_id,
            self.stage_for(request),
            artifact_type,
            source,
            media_type,
            self.provenance(**dict(metadata or {})),
            media=dict(media) if media else None,
            ext=ext,
            move=move,
        )
        self.outputs.append(manifest)
        return manifest

    def cleanup(self) -> None:
        """Remove staged paths that were not moved into the store (framework calls this)."""
        for path in self._staged:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            except OSError as exc:
                self.log.warning("staging.cleanup_failed", path=str(path), error=str(exc))
        self._staged.clear()
