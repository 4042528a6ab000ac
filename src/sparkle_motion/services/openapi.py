"""The published HTTP contract of every mesh service: ``/openapi.json`` and an offline ``/docs``.

Why a module of its own: the FunctionTools read ``/invoke``'s body by hand (one
JSON error format for invalid JSON, out-of-range numbers and validation), so
FastAPI cannot see their request model; and every service answers errors that
FastAPI does not know about (the middleware's 401/413, ``SparkleError``'s
404/409/503/507).  ``install_openapi`` fills both in, so the document describes
what the service really answers, with the one error body of ``http_errors.py``.

``/docs`` is Swagger UI served from the ``fastapi-offline`` package's copy of
the assets (this project runs without internet; FastAPI's default page loads
them from a CDN).  Both ``/openapi.json`` and ``/docs`` sit behind the bearer
token when ``SPARKLE_TOKEN`` is set, like everything but ``/health``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from sparkle_motion.errors import ConfigError

__all__ = ["ErrorBody", "error_responses", "install_openapi", "json_body_doc"]

_ASSETS = Path(fastapi_offline.__file__).parent / "static"
_ASSET_MEDIA = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
_FASTAPI_DOC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class ErrorDetail(BaseModel):
    """One problem: a validation error ``{field, message, type}`` or a plan rule ``{path, rule, message}``."""

    model_config = ConfigDict(extra="allow")

    message: str
    field: str | None = Field(default=None, description="JSON path of the offending input, e.g. 'clips[0].uri'")
    type: str | None = Field(default=None, description="the validation rule that failed")
    path: str | None = Field(default=None, description="MoviePlan violations: where in the plan")
    rule: str | None = Field(default=None, description="MoviePlan violations: the rule broken")


class ErrorInfo(BaseModel):
    # Open: a newer error may carry more keys; clients read code, message and field.
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="stable machine-readable code, e.g. invalid_input, busy, run_active")
    message: str
    field: str | None = Field(default=None, description="JSON path (or query parameter) the error is about")
    details: list[ErrorDetail] | None = Field(default=None, description="every validation failure")
    context: dict[str, Any] | None = Field(default=None, description="what the service knew when it failed")


class ErrorBody(BaseModel):
    """Every error of every mesh service: ``{"error": {...}, "request_id": ...}``."""

    error: ErrorInfo
    request_id: str


ERROR_DESCRIPTIONS = {
    401: "missing or wrong bearer token (only when SPARKLE_TOKEN is set)",
    404: "the run or artifact named does not exist",
    409: "the request collides with the run's current state",
    413: "request body over the service's size limit",
    416: "no part of the requested byte range lies inside the artifact (Content-Range: bytes */size)",
    422: "invalid input: unparseable JSON, a number out of range, a schema violation, or a rule the schema cannot "
         "state (e.g. between two fields, or an artifact URI the store does not hold); `error.field` names it",
    500: "the service or its backend failed (a bug or broken environment, never the caller's input)",
    503: "busy (all slots in use) or not ready (warming up, stopping); retry after Retry-After seconds",
    507: "disk full: the artifact store has no room for the output",
}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait before retrying"}},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for a route decorator: each status with the shared error body."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status],
                     **({"headers": _ERROR_HEADERS[status]} if status in _ERROR_HEADERS else {})}
            for status in statuses}


def json_body_doc(app: FastAPI, model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body by hand: the body is ``model``."""
    app.state.openapi_models = [*getattr(app.state, "openapi_models", []), model]
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _merge_model(schemas: dict[str, Any], model: type[BaseModel], mode: str) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    for name, sub in {**schema.pop("$defs", {}), model.__name__: schema}.items():
        known = schemas.setdefault(name, sub)
        # FastAPI writes the same model a little differently (it drops null defaults);
        # two different models of one name would be a real clash.
        if _shape(known) != _shape(sub):
            raise ConfigError(f"OpenAPI component {name!r} names two different models", field="openapi")


def _shape(schema: dict[str, Any]) -> tuple[Any, ...]:
    return (sorted(schema.get("properties", {})), sorted(schema.get("required", [])), schema.get("enum"))


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for item in document.get("paths", {}).values() for op in item.values() if isinstance(op, dict)]


def _finish(document: dict[str, Any], app: FastAPI, *, auth: bool) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in getattr(app.state, "openapi_models", []):
        _merge_model(schemas, model, "validation")
    _merge_model(schemas, ErrorBody, "serialization")
    error_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for op in _operations(document):
        responses = op.setdefault("responses", {})
        common = [500]
        if op.get("parameters") or op.get("requestBody"):
            common.append(422)  # replaces FastAPI's own 422 body, which the services never send
        if op.get("requestBody"):
            common.append(413)
        if auth and op.get("security") != []:
            common.append(401)
        for status in common:
            entry = {"description": ERROR_DESCRIPTIONS[status], **error_ref}
            if status in _ERROR_HEADERS:
                entry["headers"] = _ERROR_HEADERS[status]
            responses[str(status)] = entry
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if auth:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "SPARKLE_TOKEN"}}
        document["security"] = [{"bearer": []}]
    return document


def install_openapi(app: FastAPI, service_id: str, version: str, *, auth: bool,
                    public_paths: frozenset[str]) -> None:
    """Serve the true contract at ``/openapi.json`` and Swagger UI at ``/docs``, both offline."""
    # FastAPI's own doc routes (added when the app was built) load Swagger UI from a CDN.
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in _FASTAPI_DOC_PATHS]
    app.docs_url = app.redoc_url = None
    app.openapi_url = "/openapi.json"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title or service_id, version=version, openapi_version="3.1.0",
                                   description=app.description or f"sparkle-motion {service_id}",
                                   routes=app.routes)
            for path in public_paths:
                for op in document.get("paths", {}).get(path, {}).values():
                    op["security"] = []
            app.openapi_schema = _finish(document, app, auth=auth)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> dict[str, Any]:
        return openapi()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{service_id} - Swagger UI",
                                   swagger_js_url="/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/swagger-ui.css",
                                   swagger_favicon_url="/docs/favicon.png")

    def asset_route(name: str) -> None:
        @app.get(f"/docs/{name}", include_in_schema=False, name=f"docs_{name}")
        async def asset() -> FileResponse:
            return FileResponse(_ASSETS / name, media_type=_ASSET_MEDIA[name])

    for name in _ASSET_MEDIA:
        asset_route(name)
