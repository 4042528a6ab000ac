"""A sync /invoke whose client goes away is cancelled at the backend's next step and frees its slot."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from sparkle_motion.errors import Cancelled
from sparkle_motion.media import run_ffmpeg
from sparkle_motion.services import CancelToken
from sparkle_motion.testing import running_tool

ECHO = "function_tools.echo.service"


def send_and_hang_up(port: int, body: dict, after_s: float) -> None:
    """POST /invoke on a raw socket, then close it without reading the answer."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        time.sleep(after_s)


@pytest.mark.slow
def test_disconnected_call_is_cancelled_and_its_slot_freed(sparkle_home: Path):
    with running_tool(ECHO, home=sparkle_home, env={"SPARKLE_TOKEN": None}) as tool:
        started = time.monotonic()
        send_and_hang_up(tool.port, {"text": "held", "hold_s": 10.0}, after_s=1.0)
        # The slot must be free long before the 10 s hold would end; busy_wait_s is 0.5 s,
        # so a call while the slot is held is a 503 busy.
        deadline = time.monotonic() + 8
        while True:
            answer = tool.client.post("/invoke", json={"text": "next"})
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 9
        events = {r.get("event"): r for r in tool.log_records()}
        assert "invoke.client_disconnected" in events
        assert events["invoke.cancelled"]["reason"] == "client disconnected"
        outputs = sorted(p.read_text() for p in (sparkle_home / "artifacts/adhoc/echo").iterdir())
        assert outputs == ["next"], "the cancelled call stored its output"
        assert not list((sparkle_home / "staging").glob("echo-*")), "the cancelled call left staging files"


def test_context_check_raises_cancelled_once_set():
    token = CancelToken()
    token.cancel("client disconnected")
    token.cancel("second reason is ignored")
    assert token.is_set() and token.reason == "client disconnected"
    assert Cancelled("x").code == "cancelled" and 400 <= Cancelled("x").http_status < 500


def test_run_ffmpeg_is_killed_on_cancel(tmp_path: Path):
    token = CancelToken()
    timer = threading.Timer(0.5, token.cancel, args=("job deleted",))
    timer.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        run_ffmpeg(["-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=30",
                    "-c:v", "libx264", "-preset", "ultrafast", str(tmp_path / "out.mp4")], cancel=token)
    assert time.monotonic() - started < 10
