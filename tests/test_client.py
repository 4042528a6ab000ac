"""ToolClient against a real echo process: typed results, retry policy, errors."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from function_tools.echo.models import EchoRequest, EchoResponse
from sparkle_motion.errors import ToolCallError
from sparkle_motion.services import ToolClient
from sparkle_motion.testing import RunningTool, free_port, running_tool

ECHO = "function_tools.echo.service"


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTool]:
    with running_tool(ECHO, home=tmp_path_factory.mktemp("client-home"),
                      env={"SPARKLE_TOKEN": None, "SPARKLE_ECHO_BACKEND": None}) as tool:
        yield tool


def client_for(tool: RunningTool, **kw: object) -> ToolClient:
    return ToolClient("echo", base_url=tool.url, token="", **kw)  # type: ignore[arg-type]


def invoke_statuses(tool: RunningTool, request_id: str, expected: int, timeout: float = 10.0) -> list[int]:
    """Statuses of the /invoke calls the server logged for ``request_id`` (waits for ``expected`` lines)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [r["status"] for r in tool.log_records()
                    if r.get("event") == "http.request" and r.get("request_id") == request_id
                    and r.get("path") == "/invoke"]
        if len(statuses) >= expected or time.monotonic() > deadline:
            return statuses
        time.sleep(0.05)


def retry_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [r.sparkle_fields["delay_s"] for r in caplog.records  # type: ignore[attr-defined]
            if getattr(r, "sparkle_fields", None) and r.msg == "tool_call.retry"]


def test_invoke_typed_and_untyped(echo: RunningTool) -> None:
    with client_for(echo) as client:
        data = client.invoke(EchoRequest(text="typed", run_id="client-run"))
        assert data["text"] == "typed" and data["tool_id"] == "echo"
        response = client.invoke({"text": "parsed"}, EchoResponse)
        assert isinstance(response, EchoResponse)
        assert response.text == "parsed" and response.artifacts[0].run_id == "adhoc"
        assert client.ready() and client.health()
        client.wait_ready(timeout=5)
        assert client.metadata()["tool_id"] == "echo"


def test_generic_get_and_post(echo: RunningTool) -> None:
    with client_for(echo) as client:
        assert client.get("/health", params={"verbose": 1})["status"] == "ok"
        assert client.post("/invoke", json={"text": "generic"})["text"] == "generic"
        with pytest.raises(ToolCallError) as exc_info:
            client.get("/no-such-route")
    assert exc_info.value.status == 404 and exc_info.value.remote_error["code"] == "not_found"


def test_request_id_travels_with_the_call(echo: RunningTool) -> None:
    with client_for(echo) as client:
        assert client.invoke({"text": "x"}, request_id="client-rid-1")["request_id"] == "client-rid-1"


def test_retries_503_then_succeeds_honouring_retry_after(echo: RunningTool,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    holder = threading.Thread(target=lambda: httpx.post(f"{echo.url}/invoke", json={"text": "hold", "hold_s": 1.0},
                                                        timeout=30))
    holder.start()
    try:
        # Make sure the slot is taken before the client calls.
        deadline = time.monotonic() + 10
        while echo.client.post("/invoke", json={"text": "probe"}).status_code != 503:
            assert time.monotonic() < deadline, "the holding call never took the slot"
        caplog.set_level(logging.INFO, logger="sparkle_motion.services.client")
        with client_for(echo, retries=0, max_retry_after_s=0.2) as client:
            result = client.invoke({"text": "patient"}, request_id="retry-503")
    finally:
        holder.join()
    assert result["text"] == "patient"
    statuses = invoke_statuses(echo, "retry-503", expected=2)
    assert statuses[-1] == 200 and statuses.count(200) == 1
    assert 503 in statuses and set(statuses) == {200, 503}
    # Retry-After (1 s) was honoured but bounded by max_retry_after_s, plus up to 25 % jitter.
    delays = retry_delays(caplog)
    assert delays and all(0.2 <= d <= 0.25 for d in delays)
    assert len(delays) == statuses.count(503)


def test_no_retry_on_422(echo: RunningTool) -> None:
    with client_for(echo, retries=5, backoff_s=0.01) as client:
        with pytest.raises(ToolCallError) as exc_info:
            client.invoke({"text": ""}, request_id="no-retry-422")
    err = exc_info.value
    assert err.status == 422 and err.tool_id == "echo"
    assert err.remote_error["code"] == "invalid_input" and err.remote_error["field"] == "text"
    assert err.field == "text"
    assert err.context["remote_request_id"] == "no-retry-422"
    assert "422" in str(err)
    assert invoke_statuses(echo, "no-retry-422", expected=1) == [422]


def test_no_retry_on_500(echo: RunningTool) -> None:
    with client_for(echo, retries=5, backoff_s=0.01) as client:
        with pytest.raises(ToolCallError) as exc_info:
            client.invoke({"text": "x", "fail": True}, request_id="no-retry-500")
    assert exc_info.value.status == 500
    assert exc_info.value.remote_error["context"]["exception_type"] == "RuntimeError"
    assert invoke_statuses(echo, "no-retry-500", expected=1) == [500]


def test_connection_refused_retries_then_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sparkle_motion.services.client")
    with ToolClient("echo", base_url=f"http://127.0.0.1:{free_port()}", token="", retries=3,
                    backoff_s=0.01, max_backoff_s=0.04) as client:
        with pytest.raises(ToolCallError) as exc_info:
            client.invoke({"text": "x"})
        assert not client.ready() and not client.health()
    err = exc_info.value
    assert err.code == "tool_unreachable" and err.status is None
    assert err.context["attempts"] == 4
    delays = retry_delays(caplog)
    assert len(delays) == 3
    # Exponential with jitter: each delay lies in [ceiling/2, ceiling], ceiling = min(max, base * 2^n).
    for attempt, delay in enumerate(delays):
        ceiling = min(0.04, 0.01 * 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling


def test_wait_ready_times_out(tmp_path: Path) -> None:
    with running_tool(ECHO, home=tmp_path, env={"SPARKLE_ECHO_BACKEND": "slow", "SPARKLE_TOKEN": None},
                      wait=False) as tool:
        tool.wait_listening()
        with client_for(tool) as client:
            assert client.ready() is False
            with pytest.raises(ToolCallError) as exc_info:
                client.wait_ready(timeout=0.5, interval=0.05)
    assert exc_info.value.code == "not_ready"
    assert "warming up" in str(exc_info.value)


def test_url_comes_from_the_registry() -> None:
    from sparkle_motion.config import load_settings

    with ToolClient("images_sdxl", settings=load_settings({})) as client:
        assert client.base_url == "http://127.0.0.1:5002"


def hold_slot(tool: RunningTool, seconds: float) -> threading.Thread:
    """Occupy the echo tool's only slot for ``seconds``; returns once the slot is taken."""
    holder = threading.Thread(target=lambda: httpx.post(f"{tool.url}/invoke", json={"text": "hold", "hold_s": seconds},
                                                        timeout=30))
    holder.start()
    deadline = time.monotonic() + 10
    while tool.client.post("/invoke", json={"text": "probe"}).status_code != 503:
        assert time.monotonic() < deadline, "the holding call never took the slot"
    return holder


def test_a_busy_tool_is_waited_for_by_time_not_by_a_count_of_retries(echo: RunningTool,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sparkle_motion.services.client")
    holder = hold_slot(echo, 4.0)  # each try also waits the tool's own 0.5 s for a slot
    try:
        with client_for(echo, retries=0, max_retry_after_s=0.05, busy_wait_s=60) as client:
            assert client.invoke({"text": "patient"}, request_id="busy-budget")["text"] == "patient"
    finally:
        holder.join()
    # More tries than the old fixed four, none of them counted against a limit.
    assert len(retry_delays(caplog)) > 4


def test_the_busy_budget_ends_the_wait_with_the_tools_503(echo: RunningTool) -> None:
    holder = hold_slot(echo, 3.0)
    try:
        with client_for(echo, max_retry_after_s=0.05, busy_wait_s=0.5) as client:
            started = time.monotonic()
            with pytest.raises(ToolCallError) as exc_info:
                client.invoke({"text": "impatient"})
            waited = time.monotonic() - started
    finally:
        holder.join()
    err = exc_info.value
    assert err.status == 503 and err.remote_error["code"] == "busy"
    assert 0.5 <= err.context["busy_waited_s"] < 2.5 and waited < 2.9


def write_mesh_state(home: Path, url: str, *, state: str, supervisor_pid: int) -> None:
    """mesh.json as the supervisor writes it, naming the echo service at ``url``."""
    import json
    import os

    home.mkdir(parents=True, exist_ok=True)
    (home / "mesh.json").write_text(json.dumps({
        "supervisor_pid": supervisor_pid, "services": {"echo": {
            "pid": os.getpid(), "url": url, "state": state, "restarts": 1, "gave_up": state == "gave_up",
            "log": str(home / "logs" / "echo.log")}}}))


def test_a_service_the_supervisor_restarts_is_waited_for(tmp_path: Path) -> None:
    import os

    from sparkle_motion.config import load_settings

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A live supervisor (this process stands in for it) says echo is restarting at that URL.
    write_mesh_state(tmp_path, url, state="restarting", supervisor_pid=os.getpid())
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    with ToolClient("echo", settings=settings, base_url=url, token="", retries=0, restart_wait_s=120) as client:
        result: dict = {}
        caller = threading.Thread(target=lambda: result.update(client.invoke({"text": "after restart"})))
        caller.start()
        time.sleep(3.0)  # longer than the old 2-4 s of connection retries
        assert caller.is_alive(), "the client gave up on a restarting service"
        with running_tool(ECHO, home=tmp_path, port=port, env={"SPARKLE_TOKEN": None, "SPARKLE_ECHO_BACKEND": None}):
            caller.join(timeout=60)
    assert result.get("text") == "after restart"


def test_a_service_the_supervisor_gave_up_on_fails_at_once(tmp_path: Path) -> None:
    import os

    from sparkle_motion.config import load_settings

    url = f"http://127.0.0.1:{free_port()}"
    write_mesh_state(tmp_path, url, state="gave_up", supervisor_pid=os.getpid())
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)})
    with ToolClient("echo", settings=settings, base_url=url, token="", restart_wait_s=120) as client:
        started = time.monotonic()
        with pytest.raises(ToolCallError) as exc_info:
            client.invoke({"text": "x"})
    assert exc_info.value.code == "tool_unreachable" and "gave up" in exc_info.value.message
    assert time.monotonic() - started < 5
