"""The FastAPI app factory shared by every FunctionTool, and the common middleware.

``create_app(spec)`` gives a tool ``/health``, ``/ready``, ``/metadata`` and
``/invoke``.  ``install_common(app, ...)`` adds what every mesh service shares
(request ids, bearer auth, body limit, JSON errors, access log, ``/health`` and
``/ready``) so custom services such as the agents reuse it unchanged.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings, ToolProfile, get_settings
from sparkle_motion.errors import (
    BackendError,
    InvalidInputError,
    NotReadyError,
    PayloadTooLargeError,
    ServiceBusyError,
    SparkleError,
    UnauthorizedError,
)
from sparkle_motion.ids import new_id
from sparkle_motion.logs import get_logger, request_id_var, tool_id_var
from sparkle_motion.services.context import ToolContext
from sparkle_motion.services.spec import DEFAULT_MAX_BODY_BYTES, ToolSpec, import_string, resolve_profile

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed into logs and headers, so only a short, plain token is accepted.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
PUBLIC_PATHS = frozenset({"/health"})
NOT_READY_RETRY_AFTER_S = 2.0
LOAD_FAILED_RETRY_AFTER_S = 30.0

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input"}


# ---------------------------------------------------------------- error bodies

def current_request_id() -> str:
    return request_id_var.get() or ""


def error_body(error: Mapping[str, Any]) -> dict[str, Any]:
    return {"error": dict(error), "request_id": current_request_id()}


def _retry_after_header(seconds: float) -> str:
    # HTTP wants whole delay-seconds; never advertise 0 (clients would spin).
    return str(max(1, math.ceil(seconds)))


def sparkle_error_response(exc: SparkleError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, ServiceBusyError):
        headers["Retry-After"] = _retry_after_header(exc.retry_after)
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc.to_dict()), status_code=exc.http_status, headers=headers)


def json_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """Pydantic ``loc`` → JSON path: ``("clips", 0, "uri")`` → ``clips[0].uri``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_error(errors: list[Mapping[str, Any]], *, strip_body: bool = False) -> InvalidInputError:
    """Map pydantic errors to one InvalidInputError: ``field`` = first error's path, ``details`` = all."""
    details = []
    for err in errors:
        if err.get("type") == "json_invalid":
            # FastAPI reports an unparseable body at a character offset ("body", 0): that is the
            # body itself, answered like the FunctionTools' own invalid_json.
            return InvalidInputError(f"request body is not valid JSON: {err.get('msg', 'JSON decode error')}",
                                     field="body", code="invalid_json")
        loc = tuple(err.get("loc", ()))
        if strip_body and loc[:1] == ("body",):
            loc = loc[1:]
        details.append({"field": json_path(loc) or "body", "message": err.get("msg", "invalid"),
                        "type": err.get("type", "value_error")})
    first = details[0] if details else {"field": "body", "message": "invalid input"}
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return InvalidInputError(f"{first['field']}: {first['message']}{more}", field=first["field"], details=details)


# ---------------------------------------------------------------- readiness

class Readiness:
    """Thread-safe readiness state behind ``/ready``: loading → ready | failed, then stopping."""

    LOADING, READY, FAILED, STOPPING = "loading", "ready", "failed", "stopping"

    def __init__(self, state: str = READY) -> None:
        self._lock = threading.Lock()
        self._state = state
        self._cause: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def mark_loading(self) -> None:
        self._set(self.LOADING, None)

    def mark_ready(self) -> None:
        self._set(self.READY, None)

    def mark_failed(self, exc: BaseException) -> None:
        cause = {"exception_type": type(exc).__name__, "exception_message": str(exc)}
        if isinstance(exc, SparkleError):
            cause["code"] = exc.code
        self._set(self.FAILED, cause)

    def mark_stopping(self) -> None:
        self._set(self.STOPPING, None)

    def _set(self, state: str, cause: dict[str, Any] | None) -> None:
        with self._lock:
            if self._state == self.STOPPING:
                return  # shutting down is final
            self._state, self._cause = state, cause

    def check(self) -> None:
        """Raise the NotReadyError a request should get, or return when ready."""
        with self._lock:
            state, cause = self._state, self._cause
        if state == self.READY:
            return
        if state == self.LOADING:
            raise NotReadyError("service is warming up (backend load() still running)",
                                retry_after=NOT_READY_RETRY_AFTER_S, context={"state": state})
        if state == self.FAILED:
            assert cause is not None
            raise NotReadyError(f"backend failed to load: {cause['exception_type']}: {cause['exception_message']}",
                                code="load_failed", retry_after=LOAD_FAILED_RETRY_AFTER_S,
                                context={"state": state, **cause})
        raise NotReadyError("service is shutting down", code="shutting_down",
                            retry_after=NOT_READY_RETRY_AFTER_S, context={"state": state})


# ---------------------------------------------------------------- middleware

def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class CommonMiddleware:
    """Request id, access log, bearer auth, body-size limit and a last-resort 500.

    A pure ASGI middleware (not BaseHTTPMiddleware) so it can watch the request
    body as it streams in and stop a chunked upload at the limit.
    """

    def __init__(self, app: ASGIApp, *, service_id: str, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.service_id = service_id
        self.token = token.encode("utf-8") if token else None
        self.max_body_bytes = max_body_bytes
        self.log = get_logger("sparkle_motion.services.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        rid_token = request_id_var.set(request_id)
        tool_token = tool_id_var.set(self.service_id)
        started = time.perf_counter()
        outcome: dict[str, Any] = {"status": None, "rejected": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message["headers"] = headers
                outcome["status"] = message["status"]
            await send(message)

        async def reply(exc: SparkleError) -> None:
            await sparkle_error_response(exc)(scope, receive, send_with_id)

        try:
            path = scope.get("path", "")
            if self.token is not None and path not in PUBLIC_PATHS:
                problem = self._auth_problem(scope)
                if problem is not None:
                    await reply(UnauthorizedError(problem))
                    return
            declared = _header(scope, b"content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
                await reply(PayloadTooLargeError(
                    f"request body of {int(declared)} bytes exceeds the limit of {self.max_body_bytes} bytes; "
                    "send media by artifact URI, not inline", context={"limit_bytes": self.max_body_bytes}))
                return
            await self.app(scope, self._limited_receive(receive, outcome, reply), self._guarded_send(send_with_id, outcome))
        except Exception as exc:  # noqa: BLE001 - the one place that turns anything left into JSON
            if outcome["rejected"]:
                pass  # the app noticed the cut-off body; the 413 is already sent
            elif outcome["status"] is None:
                self.log.exception("http.unhandled_error", path=scope.get("path"))
                await reply(SparkleError(f"internal error: {type(exc).__name__}",
                                         context={"exception_type": type(exc).__name__}))
            else:
                self.log.exception("http.error_after_response_start", path=scope.get("path"))
        finally:
            self.log.info("http.request", method=scope.get("method"), path=scope.get("path"),
                          status=outcome["status"], duration_ms=round((time.perf_counter() - started) * 1000, 3),
                          client=(scope.get("client") or ("", 0))[0])
            tool_id_var.reset(tool_token)
            request_id_var.reset(rid_token)

    def _auth_problem(self, scope: Scope) -> str | None:
        value = _header(scope, b"authorization")
        if not value:
            return "missing bearer token (send 'Authorization: Bearer <SPARKLE_TOKEN>')"
        scheme, _, credential = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return "Authorization header must be 'Bearer <token>'"
        assert self.token is not None
        if not hmac.compare_digest(credential.strip().encode("utf-8"), self.token):
            return "invalid bearer token"
        return None

    def _limited_receive(self, receive: Receive, outcome: dict[str, Any],
                         reply: Callable[[SparkleError], Awaitable[None]]) -> Receive:
        received = 0
        limit = self.max_body_bytes

        async def limited() -> Message:
            nonlocal received
            if outcome["rejected"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now and tell the app the client is gone, so nothing
                    # past the limit is read or buffered.
                    await reply(PayloadTooLargeError(
                        f"request body exceeds the limit of {limit} bytes; send media by artifact URI, not inline",
                        context={"limit_bytes": limit}))
                    outcome["rejected"] = True
                    return {"type": "http.disconnect"}
            return message

        return limited

    @staticmethod
    def _guarded_send(send: Send, outcome: dict[str, Any]) -> Send:
        async def guarded(message: Message) -> None:
            if outcome["rejected"]:
                return  # the 413 went out already; drop whatever the app answers
            await send(message)

        return guarded


def install_common(
    app: FastAPI,
    service_id: str,
    version: str,
    settings: Settings | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    readiness: Readiness | None = None,
) -> Readiness:
    """Give ``app`` the behaviour every mesh service shares; returns its Readiness.

    Adds the common middleware (request id, auth when ``settings.token`` is set,
    body limit, access log), JSON error handlers for SparkleError / validation /
    404 / 405, ``GET /health`` and ``GET /ready``.  A custom service that warms
    up calls ``readiness.mark_loading()`` / ``mark_ready()`` / ``mark_failed(exc)``.
    """
    settings = settings or get_settings()
    readiness = readiness or Readiness()
    app.state.readiness = readiness
    app.state.service_id = service_id
    app.state.service_version = version
    app.add_middleware(CommonMiddleware, service_id=service_id, token=settings.token, max_body_bytes=max_body_bytes)

    async def on_sparkle_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SparkleError)
        return sparkle_error_response(exc)

    async def on_request_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return sparkle_error_response(validation_error(list(exc.errors()), strip_body=True))

    async def on_http_exception(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        return JSONResponse(error_body({"code": code, "message": message}), status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    app.add_exception_handler(SparkleError, on_sparkle_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tool_id": service_id, "version": version, "request_id": current_request_id()}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> dict[str, Any]:
        readiness.check()
        return {"status": "ready", "tool_id": service_id, "version": version, "request_id": current_request_id()}

    # Mark "stopping" as soon as shutdown begins, whatever lifespan the app has.
    inner_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner_lifespan(a) as state:
            try:
                yield state
            finally:
                readiness.mark_stopping()

    app.router.lifespan_context = lifespan
    return readiness


# ---------------------------------------------------------------- FunctionTool app

class ToolRuntime:
    """The live parts of one tool process: profile, backend instance, store, slots."""

    def __init__(self, spec: ToolSpec, settings: Settings, profile: ToolProfile, readiness: Readiness) -> None:
        self.spec = spec
        self.settings = settings
        self.profile = profile
        self.readiness = readiness
        self.backend: Any = None
        self.store: ArtifactStore | None = None
        self.slots = anyio.Semaphore(spec.max_concurrency)
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
            self.store = ArtifactStore(self.settings.home, db_path=self.settings.db_path)
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
            "limits": {"max_body_bytes": spec.max_body_bytes, "max_concurrency": spec.max_concurrency},
            "request_schema": spec.request_model.model_json_schema(mode="validation"),
            "response_schema": spec.response_model.model_json_schema(mode="serialization"),
            "request_id": current_request_id(),
        }

    async def invoke(self, body: bytes) -> dict[str, Any]:
        self.readiness.check()
        spec = self.spec
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"request body is not valid JSON: {exc}", code="invalid_json",
                                    field="body") from None
        except RecursionError:  # 1 MiB of '[' fits under the size limit
            raise InvalidInputError("request body nests too deeply", code="invalid_json", field="body") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"request body must be a JSON object (got {type(data).__name__})",
                                    field="body")
        try:
            request = spec.request_model.model_validate(data)
        except ValidationError as exc:
            raise validation_error(list(exc.errors())) from None

        acquired = False
        with anyio.move_on_after(spec.busy_wait_s):
            await self.slots.acquire()
            acquired = True
        if not acquired:
            raise ServiceBusyError(
                f"{spec.tool_id} is busy: all {spec.max_concurrency} slot(s) in use",
                retry_after=1.0, context={"max_concurrency": spec.max_concurrency})
        try:
            return await self._run(request)
        finally:
            self.slots.release()

    async def _run(self, request: Any) -> dict[str, Any]:
        spec, profile = self.spec, self.profile
        request_id = current_request_id()
        assert self.store is not None
        ctx = ToolContext(tool_id=spec.tool_id, tool_version=spec.version, backend=profile.backend,
                          model=profile.model, options=profile.options, settings=self.settings, store=self.store,
                          request_id=request_id,
                          log=get_logger(f"function_tools.{spec.tool_id}", request_id=request_id,
                                         tool_id=spec.tool_id))
        started = time.perf_counter()
        try:
            result = await anyio.to_thread.run_sync(self.backend.invoke, request, ctx)
            response = self._checked_response(result)
        except SparkleError:
            self._log_failure(ctx, started)
            raise
        except Exception as exc:
            self._log_failure(ctx, started)
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start_loading()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(runtime.close)

    app = FastAPI(title=f"sparkle-motion {spec.tool_id}", version=spec.version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    install_common(app, spec.tool_id, spec.version, settings, max_body_bytes=spec.max_body_bytes,
                   readiness=readiness)

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return runtime.metadata()

    @app.post("/invoke")
    async def invoke(request: Request) -> JSONResponse:
        # The body is read by hand (not as a FastAPI parameter) so that invalid
        # JSON, validation errors and the size limit all get our JSON errors.
        runtime.readiness.check()
        body = await request.body()
        return JSONResponse(await runtime.invoke(body))

    return app
