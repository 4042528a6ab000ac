"""``install_common(app, ...)``: what every mesh service shares, added to any FastAPI app.

The FunctionTools (``create_app``) and the custom services (script_agent,
production_agent) call it alike, so request ids, bearer auth, the body limit,
the JSON error format, the access log, ``/health`` and ``/ready`` behave the
same on every port of the mesh.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import SparkleError
from sparkle_motion.services.http_errors import error_body, parse_json_body, sparkle_error_response, validation_error
from sparkle_motion.services.middleware import PUBLIC_PATHS, CommonMiddleware
from sparkle_motion.services.openapi import error_responses, install_openapi
from sparkle_motion.services.readiness import Readiness
from sparkle_motion.services.request_id import current_request_id
from sparkle_motion.services.spec import DEFAULT_MAX_BODY_BYTES


class ServiceState(BaseModel):
    """``/health`` and ``/ready`` answer this."""

    status: str
    tool_id: str
    version: str
    request_id: str


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class JSONBodyRoute(APIRoute):
    """A route whose JSON body is parsed by ``parse_json_body`` before FastAPI sees it.

    Why: FastAPI turns any parse error other than ``JSONDecodeError`` (an
    integer over Python's int-string limit, nesting too deep) into a bare 400
    "There was an error parsing the body"; parsed here first, the same bodies
    get the FunctionTools' 422 naming the field.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def parse_then_handle(request: Request) -> Response:
            strict = _StrictJSONRequest(request.scope, request.receive)
            media = strict.headers.get("content-type", "").split(";")[0].strip().lower()
            if not media or media == "application/json" or (media.startswith("application/")
                                                              and media.endswith("+json")):
                if await strict.body():
                    await strict.json()  # raises InvalidInputError outside FastAPI's catch-all
            return await handler(strict)

        return parse_then_handle


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input"}


def install_common(
    app: FastAPI,
    service_id: str,
    version: str,
    settings: Settings | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    readiness: Readiness | None = None,
    body_limits: dict[str, int] | None = None,
) -> Readiness:
    """Give ``app`` the behaviour every mesh service shares; returns its Readiness.

    Adds the common middleware (request id, auth when ``settings.token`` is set,
    body limit, access log), JSON error handlers for SparkleError / validation /
    404 / 405, ``GET /health`` and ``GET /ready``. ``body_limits`` gives exact paths a
    bigger body limit than ``max_body_bytes`` (production_agent's artifact upload).  A custom service that warms
    up calls ``readiness.mark_loading()`` / ``mark_ready()`` / ``mark_failed(exc)``.
    """
    settings = settings or get_settings()
    readiness = readiness or Readiness()
    app.state.readiness = readiness
    app.state.service_id = service_id
    app.state.service_version = version
    app.add_middleware(CommonMiddleware, service_id=service_id, token=settings.token, max_body_bytes=max_body_bytes,
                       body_limits=body_limits)
    app.router.route_class = JSONBodyRoute
    install_openapi(app, service_id, version, auth=settings.token is not None, public_paths=PUBLIC_PATHS)

    async def on_sparkle_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SparkleError)
        return sparkle_error_response(exc)

    async def on_request_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return sparkle_error_response(validation_error(list(exc.errors()), strip_body=True))

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route of the path; /jobs/{id} has GET and DELETE routes.
            methods = {m for route in app.router.routes if getattr(route, "methods", None)
                       and route.path_regex.match(request.url.path) for m in route.methods}  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(sorted(methods)) or headers.get("Allow", "")
        return JSONResponse(error_body({"code": code, "message": message}), status_code=exc.status_code,
                            headers=headers)

    app.add_exception_handler(SparkleError, on_sparkle_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)

    @app.get("/health", response_model=ServiceState, summary="liveness; never needs a token")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tool_id": service_id, "version": version, "request_id": current_request_id()}

    @app.get("/ready", response_model=ServiceState, responses=error_responses(503),
             summary="200 once warmed up; 503 while loading, failed or stopping")
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
