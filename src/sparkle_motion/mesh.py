"""The mesh: eight service processes under one supervisor.

``sparkle-motion up`` starts a detached supervisor (``python -m sparkle_motion.mesh``)
that launches every service of the registry as its own process, restarts one
that crashes (at most ``MAX_RESTARTS`` times each) and records pids, ports and
each service's ``state`` in ``SPARKLE_HOME/mesh.json``: ``starting`` (spawned,
not yet ready), ``ready``, ``restarting`` (crashed; respawned at
``restart_at``) or ``gave_up``. Callers read it (:func:`supervision`) to tell a
service that is being restarted, worth waiting for, from one that is gone.
``down`` asks the supervisor to stop everything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import ConfigError, SparkleError
from sparkle_motion.logs import configure_logging, get_logger
from sparkle_motion.process_liveness import pid_alive as _pid_alive

MAX_RESTARTS = 3
POLL_S = 0.5
RAY_POLL_S = 2.0
STOP_GRACE_S = 10.0

log = get_logger("sparkle_motion.mesh")


class MeshError(SparkleError):
    code = "mesh_error"
    http_status = 500


def state_path(settings: Settings) -> Path:
    return settings.home / "mesh.json"


def logs_dir(settings: Settings) -> Path:
    return settings.home / "logs"


def read_state(settings: Settings) -> dict[str, Any] | None:
    path = state_path(settings)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise MeshError(f"{path} is corrupt ({exc}); remove it and run `sparkle-motion up` again") from exc


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = state_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _ready(client: httpx.Client, url: str, tool_id: str | None = None) -> bool:
    """``/ready`` answers 200 — from ``tool_id`` itself, when given.

    Why the identity: if a service could not bind its port because another
    process (another mesh's tool) holds it, that process answers our probe; a
    bare 200 would call the service ready and send it requests it cannot parse.
    """
    try:
        reply = client.get(f"{url}/ready", timeout=2.0)
    except httpx.HTTPError:
        return False
    if reply.status_code != 200:
        return False
    if tool_id is None:
        return True
    try:
        return reply.json().get("tool_id") == tool_id
    except (ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class Supervision:
    """What the supervisor says about one service at one URL: is it worth waiting for?"""

    managed: bool          # a live supervisor runs this service at this URL
    state: str | None      # starting | ready | restarting | gave_up (None: not managed)
    restarts: int = 0
    log: str | None = None

    @property
    def gave_up(self) -> bool:
        return self.state == "gave_up"


def supervision(settings: Settings, tool_id: str, url: str | None = None) -> Supervision:
    """Read mesh.json: whether a live supervisor manages ``tool_id`` (at ``url``, when given), and its state.

    Never raises: a missing or unreadable mesh.json means "not managed" (the
    caller then does not wait for a restart that nobody will do).
    """
    try:
        state = read_state(settings)
    except MeshError:
        return Supervision(False, None)
    if not state or not _pid_alive(state.get("supervisor_pid")):
        return Supervision(False, None)
    info = (state.get("services") or {}).get(tool_id)
    if not isinstance(info, dict) or (url is not None and str(info.get("url", "")).rstrip("/") != url.rstrip("/")):
        return Supervision(False, None)
    service_state = info.get("state") or ("gave_up" if info.get("gave_up") else "starting")
    return Supervision(True, str(service_state), int(info.get("restarts") or 0), info.get("log"))


@dataclass
class ServiceRow:
    tool_id: str
    url: str
    pid: int | None
    alive: bool
    ready: bool
    restarts: int
    backend: str
    engine: str = "local"
    replicas: int = 1     # Serve replicas running (ray); 1 process (local)


def status(settings: Settings | None = None) -> tuple[dict[str, Any] | None, list[ServiceRow]]:
    settings = settings or get_settings()
    state = read_state(settings)
    services = (state or {}).get("services", {})
    rows = []
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    with httpx.Client(headers=headers) as client:
        for tool_id in settings.tools:
            info = services.get(tool_id, {})
            url = info.get("url") or settings.url_for(tool_id)
            pid = info.get("pid")
            # A Serve deployment has no pid of ours: it lives while the supervisor (its Ray driver) does.
            on_ray = info.get("engine") == "ray"
            alive = _pid_alive(state.get("supervisor_pid")) if on_ray and state else _pid_alive(pid)
            # Serve's view: a /ready probe would queue behind replicas busy with a clip.
            ready = info.get("state") == "ready" if on_ray else _ready(client, url, tool_id)
            rows.append(ServiceRow(tool_id, url, pid, alive, ready, info.get("restarts", 0),
                                   settings.tool_profile(tool_id).backend if tool_id in settings.profile else "?",
                                   "ray" if on_ray else "local", int(info.get("replicas") or 0) if on_ray else 1))
    return state, rows


def supervisor_running(settings: Settings | None = None) -> bool:
    """True while this home's supervisor process lives (ready or not): ``up()`` would reuse it."""
    state = read_state(settings or get_settings())
    return bool(state) and _pid_alive(state.get("supervisor_pid"))


def is_up(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    state = read_state(settings)
    if not state or not _pid_alive(state.get("supervisor_pid")):
        return False
    _, rows = status(settings)
    return all(r.ready and r.alive for r in rows)


def up(settings: Settings | None = None, *, timeout: float | None = None) -> dict[str, Any]:
    """Start the mesh (if it is not running) and wait until every service is ready.

    ``timeout``: 180 s on the local engine; on Ray 600 s, since the replicas' workers are
    started by Ray one after another and a loaded machine takes minutes for them.
    """
    settings = settings or get_settings()
    timeout = timeout if timeout is not None else (600.0 if settings.engine == "ray" else 180.0)
    settings.home.mkdir(parents=True, exist_ok=True)
    state = read_state(settings)
    if state and _pid_alive(state.get("supervisor_pid")):
        if state.get("profile_path") != str(settings.profile_path):
            raise MeshError(f"the mesh in {settings.home} runs profile {state.get('profile')!r}; "
                            f"run `sparkle-motion down` before starting profile {settings.profile_name!r}")
        if state.get("engine", "local") != settings.engine:
            raise MeshError(f"the mesh in {settings.home} runs on engine {state.get('engine', 'local')!r}; "
                            f"run `sparkle-motion down` before starting it on {settings.engine!r}")
    else:
        busy = [f"{t} (port {_port_of(settings, t)})" for t in _own_ports(settings) if _port_in_use(settings, t)]
        if busy:
            raise MeshError(f"ports already in use: {', '.join(busy)} — another mesh (another SPARKLE_HOME?) or "
                            "program holds them; stop it (`sparkle-motion down` in its folder) or move the tools to "
                            "other ports in a profile file")
        logs_dir(settings).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SPARKLE_HOME": str(settings.home), "SPARKLE_PROFILE": str(settings.profile_path)}
        with open(logs_dir(settings) / "supervisor.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "sparkle_motion.mesh"], env=env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        log.info("supervisor_started", pid=proc.pid, home=str(settings.home))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(settings)
        if state and not _pid_alive(state.get("supervisor_pid")):
            raise MeshError(f"the mesh supervisor exited; see {logs_dir(settings) / 'supervisor.log'}")
        if state and state.get("services"):
            _, rows = status(settings)
            # Ready *and* ours: a port answered by some other process does not count.
            if all(r.ready and r.alive for r in rows):
                return state
            given_up = [r.tool_id for r in rows if not r.alive and state["services"].get(r.tool_id, {}).get("gave_up")]
            if given_up:
                raise MeshError(f"services failed to start: {', '.join(given_up)}; see {logs_dir(settings)}/<tool>.log",
                                context={"logs": {t: _tail(logs_dir(settings) / f"{t}.log") for t in given_up}})
        time.sleep(POLL_S)
    _, rows = status(settings)
    missing = [r.tool_id for r in rows if not r.ready]
    raise MeshError(f"services not ready after {timeout:.0f} s: {', '.join(missing)}; see {logs_dir(settings)}",
                    context={"logs": {t: _tail(logs_dir(settings) / f"{t}.log") for t in missing}})


def _own_ports(settings: Settings) -> list[str]:
    """The services that bind a registry port of their own (on Ray, the tools share Serve's proxy)."""
    if settings.engine != "ray":
        return list(settings.tools)
    return [t for t, entry in settings.tools.items() if entry.is_agent] + ["ray_serve_proxy"]


def _port_of(settings: Settings, tool_id: str) -> int:
    return settings.ray.http_port if tool_id == "ray_serve_proxy" else settings.tool(tool_id).port


def _port_in_use(settings: Settings, tool_id: str) -> bool:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, _port_of(settings, tool_id))) == 0


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def down(settings: Settings | None = None, *, timeout: float = 30.0) -> bool:
    """Stop the mesh; returns False when nothing was running."""
    settings = settings or get_settings()
    state = read_state(settings)
    if not state:
        return False
    supervisor = state.get("supervisor_pid")
    if _pid_alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
    # Whatever survived the supervisor (or an orphaned mesh) is killed directly.
    for info in state.get("services", {}).values():
        if _pid_alive(info.get("pid")):
            os.kill(info["pid"], signal.SIGKILL)
    if _pid_alive(supervisor):
        os.kill(supervisor, signal.SIGKILL)
    state_path(settings).unlink(missing_ok=True)
    return True


class Supervisor:
    """Runs in its own process: starts, watches and restarts the services.

    A crashed service is marked ``restarting`` in mesh.json at once, and
    respawned after a backoff without blocking the watch of the others; a
    spawned one is ``starting`` until its /ready answers 200, then ``ready``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {t: 0 for t in settings.tools}
        self.states: dict[str, str] = {}
        self.restart_at: dict[str, float] = {}
        self.stopping = False
        self.ray: Any = None            # ray_engine.RayServeMesh when the engine is ray
        self.ray_states: dict[str, dict[str, Any]] = {}
        self.ray_polled = 0.0

    def _process_services(self) -> list[str]:
        """The services this supervisor runs as processes: all of them, or on Ray only the agents."""
        if self.ray is None:
            return list(self.settings.tools)
        return [t for t, entry in self.settings.tools.items() if entry.is_agent]

    def _spawn(self, tool_id: str) -> subprocess.Popen[bytes]:
        entry = self.settings.tool(tool_id)
        python = entry.python or sys.executable
        env = {**os.environ, "SPARKLE_HOME": str(self.settings.home), "SPARKLE_PROFILE": str(self.settings.profile_path)}
        out = open(logs_dir(self.settings) / f"{tool_id}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            proc = subprocess.Popen([python, "-m", "sparkle_motion.services", tool_id], env=env, stdout=out,
                                    stderr=out, stdin=subprocess.DEVNULL)
        finally:
            out.close()
        self.states[tool_id] = "starting"
        return proc

    def _record(self) -> None:
        wall_now, mono_now = time.time(), time.monotonic()
        services = {}
        for t, p in self.procs.items():
            info: dict[str, Any] = {
                "pid": p.pid, "port": self.settings.tool(t).port, "url": self.settings.url_for(t),
                "restarts": self.restarts[t], "state": self.states[t], "gave_up": self.states[t] == "gave_up",
                "log": str(logs_dir(self.settings) / f"{t}.log")}
            if t in self.restart_at:
                info["restart_at"] = round(wall_now + self.restart_at[t] - mono_now, 3)
            services[t] = info
        for t, ray_state in self.ray_states.items():
            services[t] = {"engine": "ray", "pid": None, "url": self.settings.url_for(t), "restarts": 0,
                           "gave_up": ray_state["state"] == "gave_up", **ray_state}
        extra = {} if self.ray is None else {"ray": {"gcs_address": self.ray.gcs_address, "local": self.ray.started_local,
                                                     "startup_s": self.ray.startup_s,
                                                     "http_port": self.settings.ray.http_port}}
        _write_state(self.settings, {
            "supervisor_pid": os.getpid(), "profile": self.settings.profile_name,
            "profile_path": str(self.settings.profile_path), "home": str(self.settings.home),
            "started_at": self.started_at, "services": services, "engine": self.settings.engine, **extra,
        })

    def run(self) -> None:
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # mesh.json at once, before Ray's slow start: a second `up` on this home then waits for this
        # supervisor instead of starting another one.
        self._record()
        if self.settings.engine == "ray":
            from sparkle_motion.ray_engine import RayServeMesh

            self.ray = RayServeMesh(self.settings)
            self.ray.start()
            self.ray_states = self.ray.states()
        # After ray.init, which installs a SIGTERM handler of its own: `down` must reach _shutdown.
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for tool_id in self._process_services():
            self.procs[tool_id] = self._spawn(tool_id)
            log.info("service_started", tool_id=tool_id, pid=self.procs[tool_id].pid)
        self._record()
        headers = {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
        with httpx.Client(headers=headers) as client:
            while not self.stopping:
                if self._watch_once(client):
                    self._record()
                time.sleep(POLL_S)
        self._shutdown()

    def _watch_once(self, client: httpx.Client) -> bool:
        """One pass over the services; True when a state changed (mesh.json is rewritten)."""
        changed = self._watch_ray()
        for tool_id, proc in list(self.procs.items()):
            state = self.states[tool_id]
            if state == "gave_up":
                continue
            if state == "restarting":
                if time.monotonic() >= self.restart_at[tool_id]:
                    del self.restart_at[tool_id]
                    self.procs[tool_id] = self._spawn(tool_id)
                    log.warning("service_restarted", tool_id=tool_id, pid=self.procs[tool_id].pid,
                                restarts=self.restarts[tool_id])
                    changed = True
                continue
            code = proc.poll()
            if code is not None:
                if self.restarts[tool_id] >= MAX_RESTARTS:
                    log.error("service_gave_up", tool_id=tool_id, exit_code=code, restarts=self.restarts[tool_id])
                    self.states[tool_id] = "gave_up"
                else:
                    self.restarts[tool_id] += 1
                    self.states[tool_id] = "restarting"
                    self.restart_at[tool_id] = time.monotonic() + min(5.0, 0.5 * 2 ** self.restarts[tool_id])
                    log.warning("service_crashed", tool_id=tool_id, exit_code=code, restarts=self.restarts[tool_id])
                changed = True
            elif state == "starting" and _ready(client, self.settings.url_for(tool_id), tool_id):
                self.states[tool_id] = "ready"
                changed = True
        return changed

    def _watch_ray(self) -> bool:
        """Serve's view of the tools, every few seconds (Serve itself restarts a dead replica)."""
        if self.ray is None or time.monotonic() - self.ray_polled < RAY_POLL_S:
            return False
        self.ray_polled = time.monotonic()
        try:
            states = self.ray.states()
        except Exception:  # noqa: BLE001 - a slow controller answer must not end the supervisor
            log.exception("ray_status_failed")
            return False
        changed, self.ray_states = states != self.ray_states, states
        return changed

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.ray is not None:
            self.ray.stop()
        state_path(self.settings).unlink(missing_ok=True)
        log.info("mesh_stopped")


def main() -> None:
    configure_logging()
    settings = get_settings()
    try:
        Supervisor(settings).run()
    except ConfigError as exc:
        log.error("supervisor_failed", error=exc.to_dict())
        sys.exit(1)


if __name__ == "__main__":
    main()
