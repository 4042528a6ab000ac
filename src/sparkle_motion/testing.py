"""Start real mesh service processes for tests and benchmarks.

``running_tool`` launches ``python -m sparkle_motion.services <tool> --port <free>``
with the same interpreter, so a test exercises exactly what production runs:
uvicorn, the middleware, the warm-up thread and the backend in its own process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

import yaml

from sparkle_motion import mesh
from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.config import Settings, load_settings, project_path
from sparkle_motion.errors import SparkleError
from sparkle_motion.services.serve import LISTENING_EVENT

STDERR_TAIL_CHARS = 4000


class ToolStartError(SparkleError):
    """A tool process exited or never became ready; ``context['stderr_tail']`` says why."""

    code = "tool_start_failed"
    http_status = 500


# Below Linux's default ephemeral range (32768-60999): the OS gives those to outgoing connections (every HTTP
# client in a test run), which could take a port between free_port() and the service binding it.
TEST_PORT_RANGE = (20000, 32700)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago: random in TEST_PORT_RANGE, else one the OS picks."""
    pick = random.SystemRandom()
    for _ in range(64):
        port = pick.randrange(*TEST_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningTool:
    """A started tool process: ``url``, ``port``, ``proc`` and an ``httpx.Client`` on ``url``."""

    target: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    token: str | None
    client: httpx.Client = field(init=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def output(self) -> str:
        """Everything the process wrote to stdout/stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def output_tail(self, chars: int = STDERR_TAIL_CHARS) -> str:
        return self.output()[-chars:]

    def log_records(self) -> list[dict[str, Any]]:
        """The process's JSON log lines, parsed (lines that are not JSON are skipped)."""
        records = []
        for line in self.output().splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                records.append(value)
        return records

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /ready until 200; ToolStartError with the output tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if self.proc.poll() is not None:
                raise ToolStartError(f"{self.target} exited with code {self.proc.returncode} before becoming ready",
                                     context={"stderr_tail": self.output_tail(), "url": self.url})
            try:
                response = self.client.get("/ready", timeout=2.0)
                if response.status_code == 200 and self._listening():
                    return
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
            if time.monotonic() >= deadline:
                raise ToolStartError(f"{self.target} not ready after {timeout:.0f}s (last answer: {last})",
                                     context={"stderr_tail": self.output_tail(), "url": self.url})
            time.sleep(0.05)

    def _listening(self) -> bool:
        """True once this process logged that it bound our port (not some other process on it)."""
        return any(r.get("event") == LISTENING_EVENT and r.get("port") == self.port and r.get("pid") == self.proc.pid
                   for r in self.log_records())

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Poll /health until the process answers (for tests that watch warm-up)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ToolStartError(f"{self.target} exited with code {self.proc.returncode}",
                                     context={"stderr_tail": self.output_tail()})
            try:
                if self.client.get("/health", timeout=2.0).status_code == 200 and self._listening():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise ToolStartError(f"{self.target} not listening after {timeout:.0f}s",
                                     context={"stderr_tail": self.output_tail()})
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return int(self.proc.returncode)


def _child_env(home: Path | str, env: Mapping[str, str | None] | None) -> dict[str, str]:
    child = dict(os.environ)
    child["SPARKLE_HOME"] = str(home)
    child["PYTHONUNBUFFERED"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            child.pop(key, None)  # None removes an inherited variable
        else:
            child[key] = value
    return child


def start_tool(
    tool_id_or_module: str,
    *,
    home: Path | str,
    env: Mapping[str, str | None] | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
) -> RunningTool:
    """Start the service process without waiting for it; the caller must ``stop()`` it."""
    child_env = _child_env(home, env)
    port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
    log_fd, log_name = tempfile.mkstemp(prefix=f"sparkle-{tool_id_or_module.replace('/', '_')}-", suffix=".log")
    log_file = os.fdopen(log_fd, "wb")
    cmd = [sys.executable, "-m", "sparkle_motion.services", tool_id_or_module, "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=child_env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    tool = RunningTool(target=tool_id_or_module, host=connect_host, port=port, proc=proc, log_path=Path(log_name),
                       token=child_env.get("SPARKLE_TOKEN") or None)
    tool._log_file = log_file
    return tool


@contextmanager
def running_tool(
    tool_id_or_module: str,
    *,
    home: Path | str,
    env: Mapping[str, str | None] | None = None,
    port: int | None = None,
    ready_timeout: float = 60.0,
    wait: bool = True,
) -> Iterator[RunningTool]:
    """Run a tool process for the duration of the block.

    Sets ``SPARKLE_HOME=home`` (plus ``env``; a value of None unsets a variable),
    picks a free port unless given, waits for ``/ready`` (unless ``wait=False``)
    and on exit terminates the process, killing it if it does not stop.
    ``client`` sends ``SPARKLE_TOKEN`` from ``env`` when one is set.
    """
    attempts = 1 if port is not None else 3
    for attempt in range(1, attempts + 1):
        tool = start_tool(tool_id_or_module, home=home, env=env, port=port)
        try:
            if wait:
                tool.wait_ready(ready_timeout)
        except ToolStartError:
            # free_port() cannot reserve the port: another process may grab it
            # before the tool binds.  Only that case is worth another try.
            lost_port = "address already in use" in tool.output().lower()
            _discard(tool)
            if lost_port and attempt < attempts:
                continue
            raise
        except BaseException:
            _discard(tool)
            raise
        break
    try:
        yield tool
    finally:
        _discard(tool)


def _discard(tool: RunningTool) -> None:
    tool.stop()
    try:
        tool.log_path.unlink()
    except OSError:
        pass


# ---------------------------------------------------------------- a whole mesh

def write_test_profile(home: Path, *, render: dict[str, Any] | None = None, base: str = "cpu",
                       tool_options: dict[str, dict[str, Any]] | None = None,
                       backends: dict[str, tuple[str, str]] | None = None,
                       settings: dict[str, Any] | None = None) -> Path:
    """The cpu profile with every service moved to a free port (meshes run side by side).

    ``backends``: tool id → (backend, model) replacing the profile's, e.g. the eSpeak voice
    for a benchmark's comparison (SPARKLE_* variables do not reach a test mesh).
    ``settings``: top-level profile keys to set, e.g. ``{"max_concurrent_runs": 2}``.
    """
    profile = yaml.safe_load(project_path(f"configs/profiles/{base}.yaml").read_text())
    profile["name"] = f"{base}-test"
    for tool_id, entry in profile["tools"].items():
        entry["port"] = free_port()
        if backends and tool_id in backends:
            entry["backend"], entry["model"] = backends[tool_id]
        if tool_options and tool_id in tool_options:
            entry["options"] = {**entry.get("options", {}), **tool_options[tool_id]}
    if render:
        profile["render"] = {**profile.get("render", {}), **render}
    profile.update(settings or {})
    path = home / "profile.yaml"
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile))
    return path


def mesh_env(home: Path, profile: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env.update(SPARKLE_HOME=str(home), SPARKLE_PROFILE=str(profile))
    return env


@contextmanager
def running_mesh(home: Path, **profile_kw: Any) -> Iterator[Settings]:
    """Eight real service processes on free ports under ``home``; stopped on exit."""
    profile = write_test_profile(home, **profile_kw)
    env = mesh_env(home, profile)
    settings = load_settings(env)
    try:
        with _process_env(env):  # mesh.up() starts the supervisor with this process's environment
            mesh.up(settings, timeout=240)
        yield settings
    finally:
        with _process_env(env):
            mesh.down(settings)


@contextmanager
def _process_env(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` is ``env`` only inside the block: a mesh's SPARKLE_PROFILE must not leak into
    tools that other tests start while the mesh is up (they would render at the mesh's size)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_for_status(client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 300.0,
                    predicate: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """ProductionClient.wait_for_status for tests of the raw HTTP contract, which hold an ``httpx.Client``
    on production_agent: the run's last status as its JSON dict (``predicate`` gets that dict too)."""
    auth = client.headers.get("Authorization", "")
    with ProductionClient(base_url=str(client.base_url), token=auth.removeprefix("Bearer "),
                          timeout=client.timeout.read or 30.0) as production:
        status = production.wait_for_status(
            run_id, statuses, timeout=timeout,
            predicate=None if predicate is None else lambda s: predicate(s.model_dump(mode="json")))
    return status.model_dump(mode="json")
