"""Start-up, warm-up, load failure, auth and bind rules, each in its own real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from function_tools.echo.backend import RELEASE_FILE
from sparkle_motion.config import load_settings
from sparkle_motion.errors import ConfigError, ToolCallError
from sparkle_motion.services import ToolClient
from sparkle_motion.services.serve import check_bind_allowed, is_loopback
from sparkle_motion.testing import ToolStartError, running_tool, start_tool

ECHO = "function_tools.echo.service"
TOKEN = "t0ken-for-tests-5f2c"


def _wait_for_state(client: httpx.Client, code: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/ready")
        if response.status_code == 503 and response.json()["error"]["code"] == code:
            return response
        assert time.monotonic() < deadline, f"/ready never reported {code}: {response.text}"
        time.sleep(0.05)


def test_ready_is_503_while_loading_then_200(tmp_path: Path) -> None:
    with running_tool(ECHO, home=tmp_path, env={"SPARKLE_ECHO_BACKEND": "slow", "SPARKLE_TOKEN": None},
                      wait=False) as tool:
        tool.wait_listening()
        assert tool.client.get("/health").status_code == 200  # alive while warming up
        not_ready = tool.client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["code"] == "not_ready"
        assert int(not_ready.headers["Retry-After"]) >= 1
        invoke = tool.client.post("/invoke", json={"text": "early"})
        assert invoke.status_code == 503 and invoke.json()["error"]["code"] == "not_ready"
        assert "Retry-After" in invoke.headers
        assert tool.client.get("/metadata").json()["state"] == "loading"

        (tmp_path / RELEASE_FILE).touch()
        tool.wait_ready(timeout=30)
        response = tool.client.post("/invoke", json={"text": "late"})
        assert response.status_code == 200, response.text
        assert response.json()["backend"] == "slow"


def test_load_failure_keeps_ready_503_with_cause(tmp_path: Path) -> None:
    with running_tool(ECHO, home=tmp_path, env={"SPARKLE_ECHO_BACKEND": "broken", "SPARKLE_TOKEN": None},
                      wait=False) as tool:
        tool.wait_listening()
        ready = _wait_for_state(tool.client, "load_failed")
        error = ready.json()["error"]
        assert error["context"]["exception_type"] == "FileNotFoundError"
        assert "echo weights not found" in error["message"]
        invoke = tool.client.post("/invoke", json={"text": "x"})
        assert invoke.status_code == 503
        assert invoke.json()["error"]["code"] == "load_failed"
        assert "echo weights not found" in invoke.json()["error"]["message"]
        assert tool.client.get("/ready").status_code == 503  # stays failed

        # A client does not wait out or retry a failed load: it reports it at once.
        with ToolClient("echo", base_url=tool.url, token="", retries=3, backoff_s=0.01) as client:
            started = time.monotonic()
            with pytest.raises(ToolCallError) as exc_info:
                client.invoke({"text": "x"})
            assert exc_info.value.status == 503
            assert exc_info.value.remote_error["code"] == "load_failed"
            with pytest.raises(ToolCallError):
                client.wait_ready(timeout=20)
            assert time.monotonic() - started < 10


def test_unknown_backend_fails_at_start_with_stderr_tail(tmp_path: Path) -> None:
    with pytest.raises(ToolStartError) as exc_info:
        with running_tool(ECHO, home=tmp_path, env={"SPARKLE_ECHO_BACKEND": "nope", "SPARKLE_TOKEN": None},
                          ready_timeout=30):
            pass
    tail = exc_info.value.context["stderr_tail"]
    assert "has no backend 'nope'" in tail and "echo, slow, broken" in tail


def test_token_guards_every_endpoint_but_health(tmp_path: Path) -> None:
    with running_tool(ECHO, home=tmp_path, env={"SPARKLE_TOKEN": TOKEN, "SPARKLE_ECHO_BACKEND": None}) as tool:
        anonymous = httpx.Client(base_url=tool.url, timeout=10)
        try:
            assert anonymous.get("/health").status_code == 200
            for method, path in [("GET", "/ready"), ("GET", "/metadata"), ("POST", "/invoke"),
                                 ("GET", "/no-such-route")]:
                response = anonymous.request(method, path, json={"text": "x"})
                assert response.status_code == 401, (path, response.text)
                assert response.json()["error"]["code"] == "unauthorized"
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert response.headers["X-Request-ID"] == response.json()["request_id"]
            for header in [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer", f"bearer  {TOKEN} extra"]:
                response = anonymous.post("/invoke", json={"text": "x"}, headers={"Authorization": header})
                assert response.status_code == 401, header
        finally:
            anonymous.close()
        # running_tool's client sends the token it started the process with.
        assert tool.client.post("/invoke", json={"text": "x"}).status_code == 200
        assert tool.client.get("/no-such-route").status_code == 404
        # ToolClient takes the bearer token from settings.
        settings = load_settings({"SPARKLE_TOKEN": TOKEN, "SPARKLE_HOME": str(tmp_path)})
        with ToolClient("echo", settings=settings, base_url=tool.url) as client:
            assert client.invoke({"text": "via client"})["text"] == "via client"
        with ToolClient("echo", base_url=tool.url, token="wrong") as client:
            with pytest.raises(ToolCallError) as exc_info:
                client.metadata()
            assert exc_info.value.status == 401


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    tool = start_tool(ECHO, home=tmp_path, env={"SPARKLE_TOKEN": None}, host="0.0.0.0")
    try:
        assert tool.proc.wait(timeout=60) == 2
        assert "refusing to bind '0.0.0.0' without SPARKLE_TOKEN" in tool.output()
    finally:
        tool.stop()
        tool.log_path.unlink(missing_ok=True)


def test_bind_rules() -> None:
    no_token = load_settings({})
    with_token = load_settings({"SPARKLE_TOKEN": TOKEN})
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"):
        assert is_loopback(host)
        check_bind_allowed(host, no_token)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError) as exc_info:
            check_bind_allowed(host, no_token)
        assert exc_info.value.field == "host"
        check_bind_allowed(host, with_token)
    # A token anyone can guess, or one no client can send, does not count.
    for weak in ("x", " ", "short-token-15c", "sixteen chars ok", "a" * 15 + "\t", "0123456789abcde"):
        with pytest.raises(ConfigError) as exc_info:
            check_bind_allowed("0.0.0.0", load_settings({"SPARKLE_TOKEN": weak}))
        assert exc_info.value.field == "SPARKLE_TOKEN", weak
    check_bind_allowed("0.0.0.0", load_settings({"SPARKLE_TOKEN": "0123456789abcdef"}))
    check_bind_allowed("127.0.0.1", load_settings({"SPARKLE_TOKEN": "x"}))


@pytest.mark.parametrize(("args", "message"), [
    ([ECHO], "is not in the tool registry, so --port is required"),
    (["no_such_tool"], "unknown tool 'no_such_tool'"),
])
def test_serve_refuses_bad_targets(tmp_path: Path, args: list[str], message: str) -> None:
    env = {**os.environ, "SPARKLE_HOME": str(tmp_path)}
    env.pop("SPARKLE_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "sparkle_motion.services", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
