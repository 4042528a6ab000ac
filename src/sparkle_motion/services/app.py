"""The FastAPI app factory shared by every FunctionTool: ``create_app(spec)`` and its ``ToolRuntime``.

``create_app(spec)`` gives a tool ``/metadata``, ``/invoke`` and the ``/jobs``
routes (``services/jobs.py``: the same call, in the background) on top of what
``install_common`` adds to every mesh service (``services/common.py``: request
ids, bearer auth, body limit, JSON errors, access log, ``/health`` and
``/ready``).  ``ToolRuntime`` holds the live parts of one tool process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.http_store import HttpArtifactStore, open_tool_store
from sparkle_motion.artifacts.sweep import sweep_at_start
from sparkle_motion.config import Settings, ToolProfile, get_settings
from sparkle_motion.diskspace import disk_full_error, is_disk_full
from sparkle_motion.errors import BackendError, Cancelled, InvalidInputError, ServiceBusyError, SparkleError
from sparkle_motion.logs import get_logger, tool_id_var
from sparkle_motion.services.common import install_common
from sparkle_motion.services.context import CancelToken, ProgressSink, ToolContext
from sparkle_motion.services.http_errors import parse_json_body, validation_error
from sparkle_motion.services.jobs import JobTable, install_jobs
from sparkle_motion.services.openapi import error_responses, json_body_doc
from sparkle_motion.services import replica
from sparkle_motion.services.readiness import Readiness
from sparkle_motion.services.request_id import current_request_id
from sparkle_motion.services.spec import ToolSpec, import_string, resolve_profile

# An ASGI receive channel: /invoke watches it for the client's http.disconnect.
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

# The agents' services import current_request_id and install_common from here too.
__all__ = ["Readiness", "ToolRuntime", "create_app", "current_request_id", "install_common"]


class ToolRuntime:
    """The live parts of one tool process: profile, backend instance, store, slots."""

    def __init__(self, spec: ToolSpec, settings: Settings, profile: ToolProfile, readiness: Readiness) -> None:
        self.spec = spec
        self.settings = settings
        self.profile = profile
        self.readiness = readiness
        self.backend: Any = None
        self.store: ArtifactStore | HttpArtifactStore | None = None
        self.capacity = profile.max_concurrency or spec.max_concurrency
        self.slots = anyio.Semaphore(self.capacity)
        self.log = get_logger(f"sparkle_motion.services.{spec.tool_id}")
        self._loader: threading.Thread | None = None

    def start_loading(self) -> None:
        self.readiness.mark_loading()
        self._loader = threading.Thread(target=self._load, name=f"{self.spec.tool_id}-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        tool_id_var.set(self.spec.tool_id)
        started = time.perf_counter()
        name = self.profile.backend
        self.log.info("backend.load_start", backend=name, model=self.profile.model)
        try:
            self.store = open_tool_store(self.settings)  # store.mode http: through production_agent's face
            if isinstance(self.store, ArtifactStore):
                # A killed call's staging files: this tool's own at once (a Serve replica: its dead
                # siblings'), anyone's past the longest job.
                sweep_at_start(self.settings, self.log, self.store, own_prefix=self._own_staging())
            backend_cls = import_string(self.spec.backends[name], what=f"backend {name!r}")
            backend = backend_cls(self.profile, self.settings)
            backend.load()
        except BaseException as exc:  # noqa: BLE001 - reported through /ready and /invoke
            self.log.exception("backend.load_failed", backend=name)
            self.readiness.mark_failed(exc)
            return
        self.backend = backend
        self.readiness.mark_ready()
        self.log.info("backend.ready", backend=name, load_s=round(time.perf_counter() - started, 3))

    def _own_staging(self) -> str | Callable[[str], bool]:
        """The staging files a starting process may remove at once: all of its tool's, or, in one
        of several Serve replicas, those of replicas whose process is gone (services/replica.py)."""
        tool_id = self.spec.tool_id
        if replica.current() is None:
            return f"{tool_id}-"
        return lambda name: replica.dead_replica_staging(tool_id, name)

    def close(self) -> None:
        self.readiness.mark_stopping()
        # A load() still running is not waited for: its daemon thread dies with
        # the process, and there is no loaded backend to close yet.
        close = getattr(self.backend, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - shutdown must go on; the failure is logged
                self.log.exception("backend.close_failed", backend=self.profile.backend)
        if isinstance(self.store, HttpArtifactStore):
            self.store.close()  # its download cache is a private temp folder

    def metadata(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "tool_id": spec.tool_id,
            "version": spec.version,
            "description": spec.description,
            "backends": list(spec.backends),
            "active_backend": self.profile.backend,
            "model": self.profile.model,
            "state": self.readiness.state,
            # replicas: how many processes serve this tool behind its URL (Serve; 1 on the local engine).
            "limits": {"max_body_bytes": spec.max_body_bytes, "max_concurrency": self.capacity,
                       "replicas": info.replicas if (info := replica.current()) is not None else 1},
            # What the loaded backend can answer (e.g. qa_qwen2vl's checks); {} while loading or when it does not say.
            "capabilities": self.backend.capabilities() if hasattr(self.backend, "capabilities") else {},
            "request_schema": spec.request_model.model_json_schema(mode="validation"),
            "response_schema": spec.response_model.model_json_schema(mode="serialization"),
            "request_id": current_request_id(),
        }

    def parse_request(self, body: bytes) -> Any:
        """The request model from a raw body; every problem is an InvalidInputError (422)."""
        self.readiness.check()
        spec = self.spec
        data = parse_json_body(body)
        if not isinstance(data, dict):
            raise InvalidInputError(f"request body must be a JSON object (got {type(data).__name__})",
                                    field="body")
        try:
            # Strict: a JSON "5" is not the integer 5 the schema asks for.  Re-encoded from `data`
            # so that 2.0 reads as the integer JSON Schema says it is (JSON mode: arrays fill tuples).
            return spec.request_model.model_validate_json(json.dumps(data), strict=True)
        except ValidationError as exc:
            raise validation_error(list(exc.errors())) from None
        except ArithmeticError as exc:  # a validator's arithmetic on a number the schema let through
            raise InvalidInputError(f"request body: a number is out of range ({type(exc).__name__}: {exc})",
                                    field="body") from None

    async def invoke(self, body: bytes, *, receive: Receive | None = None) -> dict[str, Any]:
        """Validate ``body``, take a slot and run the backend.

        ``receive`` is the request's ASGI receive channel: while the backend runs,
        it is watched for ``http.disconnect`` and a client that goes away sets the
        call's cancel token, so the backend stops at its next step and frees the slot.
        """
        spec = self.spec
        request = self.parse_request(body)
        acquired = False
        with anyio.move_on_after(spec.busy_wait_s):
            await self.slots.acquire()
            acquired = True
        if not acquired:
            raise ServiceBusyError(
                f"{spec.tool_id} is busy: all {self.capacity} slot(s) in use",
                retry_after=1.0, context={"max_concurrency": self.capacity})
        try:
            return await self.run_backend(request, receive)
        finally:
            self.slots.release()

    async def _watch_disconnect(self, receive: Receive, token: CancelToken) -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                token.cancel("client disconnected")
                self.log.warning("invoke.client_disconnected", backend=self.profile.backend)
                return

    async def _call_backend(self, request: Any, ctx: ToolContext, receive: Receive | None) -> Any:
        """The backend's invoke on a worker thread, with the disconnect watcher beside it.

        The thread cannot be interrupted; the watcher only sets the token, and the
        slot is released once the backend has noticed it and returned.
        """
        outcome: dict[str, Any] = {}
        async with anyio.create_task_group() as group:
            if receive is not None:
                group.start_soon(self._watch_disconnect, receive, ctx.cancel_token)
            try:
                outcome["result"] = await anyio.to_thread.run_sync(self.backend.invoke, request, ctx)
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
                outcome["error"] = exc
            group.cancel_scope.cancel()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    async def run_backend(self, request: Any, receive: Receive | None = None, *, cancel_token: CancelToken | None = None,
                   progress_sink: ProgressSink | None = None) -> dict[str, Any]:
        """One backend call with a fresh ToolContext; the caller holds a slot.

        A job passes its own ``cancel_token`` (set by ``DELETE /jobs/{id}``) and
        ``progress_sink`` (what ``GET /jobs/{id}`` shows); a sync /invoke passes
        its ``receive`` channel instead.
        """
        spec, profile = self.spec, self.profile
        request_id = current_request_id()
        assert self.store is not None
        ctx = ToolContext(tool_id=spec.tool_id, tool_version=spec.version, backend=profile.backend,
                          model=profile.model, options=profile.options, settings=self.settings, store=self.store,
                          request_id=request_id,
                          log=get_logger(f"function_tools.{spec.tool_id}", request_id=request_id,
                                         tool_id=spec.tool_id),
                          cancel_token=cancel_token, progress_sink=progress_sink,
                          step_delay_s=profile.test_step_delay_s)
        started = time.perf_counter()
        try:
            result = await self._call_backend(request, ctx, receive)
            response = self._checked_response(result)
        except Cancelled:
            self.log.warning("invoke.cancelled", backend=profile.backend, reason=ctx.cancel_token.reason,
                             duration_ms=round((time.perf_counter() - started) * 1000, 3))
            raise
        except SparkleError:
            self._log_failure(ctx, started)
            raise
        except Exception as exc:
            self._log_failure(ctx, started)
            if is_disk_full(exc):
                raise disk_full_error(getattr(exc, "filename", None) or self.store.root / "staging",
                                      self.store.root, cause=f"{type(exc).__name__}: {exc}") from exc
            raise BackendError(
                f"{spec.tool_id} backend {profile.backend!r} failed: {type(exc).__name__}: {exc}",
                context={"backend": profile.backend, "exception_type": type(exc).__name__,
                         "exception_message": str(exc)},
            ) from exc
        finally:
            ctx.cleanup()
        elapsed = time.perf_counter() - started
        timings = {**response.timings, "invoke_s": round(elapsed, 6)}
        response = response.model_copy(update={"request_id": request_id, "tool_id": spec.tool_id,
                                               "backend": profile.backend, "model": profile.model,
                                               "timings": timings})
        self.log.info("invoke.done", backend=profile.backend, duration_ms=round(elapsed * 1000, 3),
                      artifacts=len(response.artifacts))
        return response.model_dump(mode="json")

    def _checked_response(self, result: Any) -> Any:
        model = self.spec.response_model
        if isinstance(result, model):
            return result
        problem: Exception | str = f"got {type(result).__name__}"
        if isinstance(result, Mapping):
            try:
                return model.model_validate(result)
            except ValidationError as exc:
                problem = exc
        raise BackendError(
            f"{self.spec.tool_id} backend {self.profile.backend!r} did not return a valid {model.__name__}: {problem}",
            code="invalid_backend_response", context={"backend": self.profile.backend},
        )

    def _log_failure(self, ctx: ToolContext, started: float) -> None:
        self.log.exception("invoke.failed", backend=self.profile.backend,
                           duration_ms=round((time.perf_counter() - started) * 1000, 3),
                           # outputs put before the failure are complete artifacts, but nobody
                           # will reference them; name them so an operator can find them.
                           orphaned_artifacts=[m.uri for m in ctx.outputs])


def create_app(spec: ToolSpec, settings: Settings | None = None, *, profile: ToolProfile | None = None) -> FastAPI:
    """Build the FastAPI app for one FunctionTool.

    The active backend is chosen by the profile (``SPARKLE_<TOOL>_BACKEND``
    overrides it); an unknown backend name fails here, at start.  The backend
    is imported, built and warmed up in a background thread once the server
    starts, while ``/health`` already answers and ``/ready`` says 503.
    """
    settings = settings or get_settings()
    profile = profile or resolve_profile(spec, settings)
    readiness = Readiness(Readiness.LOADING)
    runtime = ToolRuntime(spec, settings, profile, readiness)
    jobs = JobTable(runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start_loading()
        try:
            yield
        finally:
            jobs.shutdown()
            await anyio.to_thread.run_sync(runtime.close)

    app = FastAPI(title=f"sparkle-motion {spec.tool_id}", version=spec.version, lifespan=lifespan,
                  description=spec.description or f"FunctionTool {spec.tool_id}")
    app.state.runtime = runtime
    install_common(app, spec.tool_id, spec.version, settings, max_body_bytes=spec.max_body_bytes,
                   readiness=readiness)

    @app.get("/metadata", summary="tool id, version, backends, limits and the request/response JSON Schema")
    async def metadata() -> dict[str, Any]:
        return runtime.metadata()

    @app.post("/invoke", summary=f"run {spec.tool_id} once", openapi_extra=json_body_doc(app, spec.request_model),
              responses={200: {"model": spec.response_model, "description": "the outputs, stored as artifacts"},
                         **error_responses(503, 507)})
    async def invoke(request: Request) -> JSONResponse:
        # The body is read by hand (not as a FastAPI parameter) so that invalid
        # JSON, validation errors and the size limit all get our JSON errors.
        runtime.readiness.check()
        body = await request.body()
        return JSONResponse(await runtime.invoke(body, receive=request.receive))

    install_jobs(app, jobs)
    return app
