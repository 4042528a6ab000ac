"""In-process checks of the framework pieces: spec rules, lazy backends, install_common, ToolContext."""

from __future__ import annotations

import time
import types
import warnings
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from function_tools.echo.models import EchoRequest, EchoResponse
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import ToolProfile, load_settings
from sparkle_motion.errors import ConfigError, InvalidInputError, PathEscapeError
from sparkle_motion.logs import get_logger
from sparkle_motion.services import (
    ToolContext,
    ToolRequest,
    ToolResponse,
    ToolSpec,
    create_app,
    install_common,
)
from sparkle_motion.services.http_errors import json_path
from sparkle_motion.services.serve import build_app

with warnings.catch_warnings():
    # starlette now prefers httpx2 for its TestClient; with httpx it still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

ECHO_BACKEND = "function_tools.echo.backend:EchoBackend"


def wait_state(client: TestClient, status: int, code: str | None = None, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/ready")
        if response.status_code == status and (code is None or response.json()["error"]["code"] == code):
            return response.json()
        assert time.monotonic() < deadline, response.text
        time.sleep(0.02)


# ---------------------------------------------------------------- ToolSpec

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"tool_id": "../x"}, "tool_id"),
    ({"request_model": BaseModel}, "request_model"),
    ({"response_model": EchoRequest}, "response_model"),
    ({"backends": {}}, "backends"),
    ({"backends": {"a": "no_colon_here"}}, "backends.a"),
    ({"max_body_bytes": 0}, "max_body_bytes"),
    ({"max_concurrency": 0}, "max_concurrency"),
])
def test_spec_rejects_bad_declarations(kwargs: dict, field: str) -> None:
    base = dict(tool_id="t", version="1", request_model=EchoRequest, response_model=EchoResponse,
                backends={"echo": ECHO_BACKEND})
    with pytest.raises(ConfigError) as exc_info:
        ToolSpec(**{**base, **kwargs})
    assert exc_info.value.field == field


def test_spec_backends_are_read_only() -> None:
    spec = ToolSpec("t", "1", EchoRequest, EchoResponse, {"echo": ECHO_BACKEND})
    with pytest.raises(TypeError):
        spec.backends["x"] = "y:z"  # type: ignore[index]


def test_request_base_refuses_unsafe_ids_and_unknown_fields() -> None:
    assert ToolRequest().run_id == "adhoc" and ToolRequest().stage is None
    for bad in ({"run_id": "a/b"}, {"stage": ".."}, {"surprise": 1}):
        with pytest.raises(ValueError):
            ToolRequest.model_validate(bad)


def test_json_path() -> None:
    assert json_path(("clips", 0, "uri")) == "clips[0].uri"
    assert json_path((0, "a", 1, 2)) == "[0].a[1][2]"
    assert json_path(()) == ""


# ---------------------------------------------------------------- lazy backends

def test_only_the_active_backend_is_imported(tmp_path: Path) -> None:
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    spec = ToolSpec("lazy", "1", EchoRequest, EchoResponse,
                    {"echo": ECHO_BACKEND, "ghost": "function_tools.echo.no_such_module:Ghost"})
    # The ghost module does not exist: serving "echo" works because it is never imported.
    with TestClient(create_app(spec, settings, profile=ToolProfile("echo", "m1"))) as client:
        wait_state(client, 200)
        body = client.post("/invoke", json={"text": "lazy"}).json()
        assert (body["tool_id"], body["backend"], body["model"]) == ("lazy", "echo", "m1")
    with TestClient(create_app(spec, settings, profile=ToolProfile("ghost", "m1"))) as client:
        error = wait_state(client, 503, "load_failed")["error"]
        assert "cannot import backend 'ghost' module 'function_tools.echo.no_such_module'" in error["message"]


def test_ready_is_503_after_shutdown(tmp_path: Path) -> None:
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    app = create_app(ToolSpec("stopping", "1", EchoRequest, EchoResponse, {"echo": ECHO_BACKEND}), settings)
    with TestClient(app) as client:
        wait_state(client, 200)
    after = TestClient(app).get("/ready")  # lifespan has ended: the service is going away
    assert after.status_code == 503 and after.json()["error"]["code"] == "shutting_down"
    assert "Retry-After" in after.headers


def test_unknown_backend_is_refused_at_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    spec = ToolSpec("lazy", "1", EchoRequest, EchoResponse, {"echo": ECHO_BACKEND})
    monkeypatch.setenv("SPARKLE_LAZY_BACKEND", "gpu")
    with pytest.raises(ConfigError) as exc_info:
        create_app(spec, settings)
    assert exc_info.value.field == "SPARKLE_LAZY_BACKEND"


def test_backend_returning_the_wrong_type_is_a_500(tmp_path: Path) -> None:
    module = types.ModuleType("sparkle_test_bad_backend")

    class Bad:
        def __init__(self, profile: object, settings: object) -> None: ...
        def load(self) -> None: ...
        def invoke(self, request: object, ctx: object) -> object:
            return ["not", "a", "response"]

    module.Bad = Bad  # type: ignore[attr-defined]
    import sys

    sys.modules[module.__name__] = module
    try:
        spec = ToolSpec("bad", "1", EchoRequest, EchoResponse, {"bad": "sparkle_test_bad_backend:Bad"})
        settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
        with TestClient(create_app(spec, settings)) as client:
            wait_state(client, 200)
            response = client.post("/invoke", json={"text": "x"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "invalid_backend_response"
    finally:
        del sys.modules[module.__name__]


# ---------------------------------------------------------------- install_common for custom services

class PlanIn(BaseModel):
    title: str
    shots: list[int]


def custom_app(token: str | None, home: Path) -> FastAPI:
    env = {"SPARKLE_HOME": str(home), **({"SPARKLE_TOKEN": token} if token else {})}
    app = FastAPI()
    readiness = install_common(app, "custom_agent", "2.0", load_settings(env), max_body_bytes=256)

    @app.post("/plan")
    async def plan(body: PlanIn) -> dict:
        return {"shots": len(body.shots)}

    @app.get("/explode")
    async def explode() -> dict:
        raise KeyError("secret internals")

    @app.post("/warm")
    async def warm() -> dict:
        readiness.mark_loading()
        return {}

    return app


def test_install_common_gives_custom_services_the_same_behaviour(tmp_path: Path) -> None:
    client = TestClient(custom_app(None, tmp_path), raise_server_exceptions=False)
    assert client.get("/health").json()["tool_id"] == "custom_agent"
    assert client.get("/ready").status_code == 200
    ok = client.post("/plan", json={"title": "t", "shots": [1, 2]}, headers={"X-Request-ID": "custom-1"})
    assert ok.json() == {"shots": 2} and ok.headers["X-Request-ID"] == "custom-1"

    invalid = client.post("/plan", json={"title": "t", "shots": [1, "x"]})
    assert invalid.status_code == 422
    assert invalid.json()["error"]["field"] == "shots[1]"

    too_big = client.post("/plan", json={"title": "t" * 300, "shots": []})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"

    boom = client.get("/explode")
    assert boom.status_code == 500
    assert boom.json()["error"] == {"code": "internal_error", "message": "internal error: KeyError",
                                    "context": {"exception_type": "KeyError"}}
    assert "secret internals" not in boom.text and boom.json()["request_id"] == boom.headers["X-Request-ID"]

    missing = client.get("/missing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    client.post("/warm")
    assert client.get("/ready").status_code == 503


def test_install_common_auth(tmp_path: Path) -> None:
    client = TestClient(custom_app("tok-123", tmp_path))
    assert client.get("/health").status_code == 200
    assert client.post("/plan", json={"title": "t", "shots": []}).status_code == 401
    authed = client.post("/plan", json={"title": "t", "shots": []}, headers={"Authorization": "Bearer tok-123"})
    assert authed.status_code == 200


def test_build_app_accepts_spec_factory_or_app(tmp_path: Path) -> None:
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    with_factory = types.ModuleType("svc_factory")
    with_factory.create_app = lambda settings: custom_app(None, tmp_path)  # type: ignore[attr-defined]
    assert isinstance(build_app(with_factory, settings), FastAPI)
    with_app = types.ModuleType("svc_app")
    with_app.APP = custom_app(None, tmp_path)  # type: ignore[attr-defined]
    assert build_app(with_app, settings) is with_app.APP  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        build_app(types.ModuleType("svc_empty"), settings)


# ---------------------------------------------------------------- ToolContext

def make_ctx(store: ArtifactStore, sparkle_home: Path) -> ToolContext:
    return ToolContext(tool_id="echo", tool_version="1.0.0", backend="echo", model="m", options={},
                       settings=load_settings({"SPARKLE_HOME": str(sparkle_home)}), store=store,
                       request_id="req_ctx", log=get_logger("test"))


def test_put_output_records_provenance(store: ArtifactStore, sparkle_home: Path) -> None:
    ctx = make_ctx(store, sparkle_home)
    request = EchoRequest(text="x", run_id="r1")
    m = ctx.put_output(request, "text", b"abc", "text/plain", {"seed": 7, "model": "override"})
    assert m.uri.startswith("artifact+fs://r1/echo/")
    assert m.metadata == {"tool": "echo", "tool_version": "1.0.0", "backend": "echo", "model": "override",
                          "request_id": "req_ctx", "seed": 7}
    assert ctx.outputs == [m]
    assert ctx.resolve_input(m.uri, "inputs[0].uri") == (m, Path(m.local_path).resolve())
    assert ctx.resolve_input(m.artifact_id, "x")[0] == m  # a bare id works too


@pytest.mark.parametrize(("uri", "error"), [
    ("artifact+fs://r1/echo/../../../etc", PathEscapeError),
    ("artifact+fs://r1/echo", InvalidInputError),
    ("artifact+fs://r1/echo/text_ffffffffffff", InvalidInputError),
    ("../../etc/passwd", PathEscapeError),
    ("https://example.com/x.png", InvalidInputError),
])
def test_resolve_input_errors_name_the_field(store: ArtifactStore, sparkle_home: Path, uri: str,
                                             error: type[Exception]) -> None:
    with pytest.raises(error) as exc_info:
        make_ctx(store, sparkle_home).resolve_input(uri, "clips[2].uri")
    assert exc_info.value.field == "clips[2].uri"  # type: ignore[attr-defined]
    assert exc_info.value.http_status == 422  # type: ignore[attr-defined]


def test_cleanup_removes_unput_staging(store: ArtifactStore, sparkle_home: Path) -> None:
    ctx = make_ctx(store, sparkle_home)
    kept, dropped, folder = ctx.staging_path(".txt"), ctx.staging_path(".tmp"), ctx.staging_path()
    kept.write_bytes(b"kept")
    dropped.write_bytes(b"half-written")
    folder.mkdir()
    (folder / "frame.png").write_bytes(b"x")
    m = ctx.put_output(EchoRequest(text="x"), "text", kept, "text/plain", move=True)
    ctx.cleanup()
    assert not dropped.exists() and not folder.exists() and not kept.exists()
    assert Path(m.local_path).read_bytes() == b"kept"


def test_response_base_defaults() -> None:
    response = ToolResponse()
    assert response.artifacts == [] and response.timings == {} and response.request_id == ""
