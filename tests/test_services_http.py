"""The FunctionTool framework end to end: the echo tool as a real uvicorn process."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import RunningTool, running_tool

ECHO = "function_tools.echo.service"
LIMIT = 1 << 20  # the default max_body_bytes the echo spec keeps
CLEAN_ENV = {"SPARKLE_TOKEN": None, "SPARKLE_ECHO_BACKEND": None}


@pytest.fixture(scope="module")
def echo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("echo-home")


@pytest.fixture(scope="module")
def echo(echo_home: Path) -> Iterator[RunningTool]:
    with running_tool(ECHO, home=echo_home, env=CLEAN_ENV) as tool:
        yield tool


@pytest.fixture(scope="module")
def echo_store(echo_home: Path) -> Iterator[ArtifactStore]:
    s = ArtifactStore(echo_home)
    yield s
    s.close()


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    if field is not None:
        assert body["error"].get("field") == field, body
    assert "Traceback" not in response.text
    return body


# ---------------------------------------------------------------- happy paths

def test_health_ready_metadata(echo: RunningTool) -> None:
    health = echo.client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = echo.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

    meta = echo.client.get("/metadata").json()
    assert meta["tool_id"] == "echo" and meta["version"] == "1.0.0"
    assert meta["backends"] == ["echo", "slow", "broken"]
    assert meta["active_backend"] == "echo" and meta["model"] == "echo"
    assert meta["limits"] == {"max_body_bytes": LIMIT, "max_concurrency": 1, "replicas": 1}
    assert {"text", "inputs", "run_id", "stage"} <= set(meta["request_schema"]["properties"])
    assert "text" in meta["request_schema"]["required"]
    assert {"text", "artifacts", "request_id"} <= set(meta["response_schema"]["properties"])


def test_invoke_stores_output_with_provenance(echo: RunningTool, echo_store: ArtifactStore) -> None:
    source = echo_store.put("run-inv", "seed", "text", b"from the store", "text/plain")
    response = echo.client.post("/invoke", json={"run_id": "run-inv", "text": "hi", "repeat": 2,
                                                 "inputs": [{"uri": source.uri}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "hihi\nfrom the store"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert (body["tool_id"], body["backend"], body["model"]) == ("echo", "echo", "echo")
    assert body["timings"]["invoke_s"] >= 0
    [artifact] = body["artifacts"]
    assert artifact["uri"].startswith("artifact+fs://run-inv/echo/")  # stage defaults to the tool id
    stored = echo_store.get(artifact["uri"])
    assert echo_store.read_bytes(stored.uri) == b"hihi\nfrom the store"
    assert stored.size_bytes == body["size_bytes"] == len(b"hihi\nfrom the store")
    meta = stored.metadata
    assert (meta["tool"], meta["backend"], meta["model"]) == ("echo", "echo", "echo")
    assert meta["request_id"] == body["request_id"]
    assert meta["params"] == {"repeat": 2, "inputs": 1}


def test_invoke_honours_stage(echo: RunningTool, echo_store: ArtifactStore) -> None:
    body = echo.client.post("/invoke", json={"run_id": "run-stage", "stage": "custom", "text": "x"}).json()
    assert body["artifacts"][0]["uri"].startswith("artifact+fs://run-stage/custom/")
    assert len(echo_store.list("run-stage", stage="custom")) == 1


# ---------------------------------------------------------------- 422

def test_validation_error_names_json_path(echo: RunningTool) -> None:
    body = assert_error(echo.client.post("/invoke", json={"text": "x", "inputs": [{"uri": "u"}, {}]}),
                        422, "invalid_input", field="inputs[1].uri")
    assert "inputs[1].uri" in body["error"]["message"]


def test_validation_error_lists_every_problem(echo: RunningTool) -> None:
    body = assert_error(echo.client.post("/invoke", json={"repeat": 99, "bogus": 1, "run_id": "../x"}),
                        422, "invalid_input")
    fields = {d["field"]: d["type"] for d in body["error"]["details"]}
    assert fields == {"text": "missing", "repeat": "less_than_equal", "bogus": "extra_forbidden",
                      "run_id": "string_pattern_mismatch"}


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"", b"[" * 200_000])
def test_invalid_json_body(echo: RunningTool, raw: bytes) -> None:
    assert_error(echo.client.post("/invoke", content=raw, headers={"Content-Type": "application/json"}),
                 422, "invalid_json", field="body")


def test_json_that_is_not_an_object(echo: RunningTool) -> None:
    assert_error(echo.client.post("/invoke", json=["text"]), 422, "invalid_input", field="body")


@pytest.mark.parametrize(("uri", "code"), [
    ("file:///etc/passwd", "invalid_input"),
    ("artifact+fs://../../etc/passwd", "path_escape"),
    ("artifact+fs://run/stage/%2e%2e", "path_escape"),
    ("artifact+fs://nobody/echo/text_000000000000", "artifact_not_found"),
    ("/etc/passwd", "path_escape"),
])
def test_input_outside_store_is_refused_naming_field(echo: RunningTool, uri: str, code: str) -> None:
    response = echo.client.post("/invoke", json={"text": "x", "inputs": [{"uri": uri}]})
    assert_error(response, 422, code, field="inputs[0].uri")


def test_input_with_missing_blob(echo: RunningTool, echo_store: ArtifactStore) -> None:
    m = echo_store.put("run-missing", "seed", "text", b"gone soon", "text/plain")
    Path(m.local_path).unlink()
    assert_error(echo.client.post("/invoke", json={"text": "x", "inputs": [{"uri": m.uri}]}),
                 422, "artifact_not_found", field="inputs[0].uri")


# ---------------------------------------------------------------- 413

def test_body_too_large_by_content_length(echo: RunningTool) -> None:
    payload = json.dumps({"text": "x" * (LIMIT + 10)}).encode()
    body = assert_error(echo.client.post("/invoke", content=payload), 413, "payload_too_large")
    assert body["error"]["context"]["limit_bytes"] == LIMIT


def test_body_too_large_chunked(echo: RunningTool) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB offered
            sent += 65536
            yield b"a" * 65536

    assert_error(echo.client.post("/invoke", content=chunks()), 413, "payload_too_large")


def test_chunked_limit_answers_before_the_body_ends(echo: RunningTool) -> None:
    # The body never ends (no terminating chunk): a server that read to the end
    # before checking would never answer.  Ours answers once the limit is crossed.
    with socket.create_connection(("127.0.0.1", echo.port), timeout=10) as sock:
        sock.sendall(b"POST /invoke HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/json\r\n\r\n")
        chunk = b"b" * 65536
        for _ in range(LIMIT // len(chunk) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(payload)["error"]["code"] == "payload_too_large"


# ---------------------------------------------------------------- 404 / 405 / request ids

def test_unknown_route_is_json_404(echo: RunningTool) -> None:
    assert_error(echo.client.get("/no/such/route"), 404, "not_found")
    assert_error(echo.client.post("/docs"), 405, "method_not_allowed")  # /docs exists, for GET only


def test_wrong_method_is_json_405(echo: RunningTool) -> None:
    response = echo.client.get("/invoke")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


def test_request_id_is_echoed_when_sane(echo: RunningTool) -> None:
    response = echo.client.post("/invoke", json={"text": "x"}, headers={"X-Request-ID": "caller-42.a:b"})
    assert response.headers["X-Request-ID"] == "caller-42.a:b"
    assert response.json()["request_id"] == "caller-42.a:b"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "-leading-dash", "a\tb", "é"])
def test_insane_request_id_is_replaced(echo: RunningTool, bad: str) -> None:
    response = echo.client.get("/health", headers={"X-Request-ID": bad.encode("utf-8")})
    rid = response.headers["X-Request-ID"]
    assert rid != bad and rid.startswith("req_")
    assert response.json()["request_id"] == rid


# ---------------------------------------------------------------- 500 / 503

def test_backend_failure_is_500_with_cause_and_leaves_no_artifact(echo: RunningTool, echo_store: ArtifactStore,
                                                                   echo_home: Path) -> None:
    staged_before = set((echo_home / "staging").glob("*"))
    body = assert_error(echo.client.post("/invoke", json={"run_id": "run-fail", "text": "x", "fail": True}),
                        500, "backend_error")
    assert body["error"]["context"]["exception_type"] == "RuntimeError"
    assert "echo asked to fail" in body["error"]["message"]
    assert echo_store.list("run-fail") == []
    assert set((echo_home / "staging").glob("*")) == staged_before


def test_busy_when_concurrency_is_exhausted(echo: RunningTool) -> None:
    first: dict[str, httpx.Response] = {}
    holder = threading.Thread(target=lambda: first.setdefault(
        "r", httpx.post(f"{echo.url}/invoke", json={"text": "slow", "hold_s": 1.5}, timeout=30)))
    holder.start()
    try:
        # Wait until the slow call holds the only slot (it shows as a 503 for others).
        deadline = time.monotonic() + 10
        while (busy := echo.client.post("/invoke", json={"text": "x"})).status_code != 503:
            assert time.monotonic() < deadline, "the holding call never took the slot"
        body = assert_error(busy, 503, "busy")
        assert int(busy.headers["Retry-After"]) >= 1
        assert body["error"]["context"]["max_concurrency"] == 1
    finally:
        holder.join()
    assert first["r"].status_code == 200
    assert echo.client.post("/invoke", json={"text": "free again"}).status_code == 200


# ---------------------------------------------------------------- logs

def test_logs_are_json_lines_with_one_access_line_per_request(echo: RunningTool) -> None:
    response = echo.client.post("/invoke", json={"text": "log me"}, headers={"X-Request-ID": "log-check-1"})
    assert response.status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the access line is written just after the response is sent
        lines = [line for line in echo.output().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # every line is JSON
        mine = [r for r in records if r["request_id"] == "log-check-1"]
        access = [r for r in mine if r["event"] == "http.request"]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for record in records:
        assert {"ts", "level", "logger", "event", "request_id", "tool_id"} <= set(record), record
    assert len(access) == 1
    assert access[0]["status"] == 200 and access[0]["path"] == "/invoke" and access[0]["duration_ms"] >= 0
    assert access[0]["tool_id"] == "echo"
    # The backend's own line carries the same request id without any plumbing.
    assert any(r["event"] == "echo.stored" for r in mine)
