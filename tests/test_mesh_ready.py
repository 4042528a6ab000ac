"""The supervisor's readiness probe is answered by the service itself, not by whatever holds its port."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from sparkle_motion.mesh import _ready
from sparkle_motion.testing import TEST_PORT_RANGE, free_port, running_tool


def test_a_port_held_by_another_tool_is_not_ready_for_this_one(tmp_path: Path) -> None:
    env = {"SPARKLE_PROFILE": "cpu", "SPARKLE_TOKEN": None}
    with running_tool("function_tools.echo.service", home=tmp_path, env=env) as echo, httpx.Client() as client:
        assert _ready(client, echo.url, "echo") and _ready(client, echo.url)
        assert not _ready(client, echo.url, "lipsync_wav2lip")   # another mesh's tool on "our" port
    assert not _ready(httpx.Client(), echo.url, "echo")           # nothing listens any more


def test_free_ports_come_from_below_the_ephemeral_range_and_bind() -> None:
    for _ in range(20):
        port = free_port()
        assert TEST_PORT_RANGE[0] <= port < TEST_PORT_RANGE[1]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
