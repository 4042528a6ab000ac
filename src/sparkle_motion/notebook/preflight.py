"""Notebook preflight: environment, GPU, disk, profile and ffmpeg checks; Drive; starting the mesh.

Every check returns a :class:`CheckResult` instead of raising, runs its
subprocesses under a timeout, and says what it found — a preflight that hangs
or dies on the first problem is worse than none.
"""

from __future__ import annotations

import atexit
import html
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from sparkle_motion import mesh
from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import SparkleError

__all__ = [
    "CheckResult", "MeshReadiness", "PreflightReport", "check_disk", "check_environment", "check_ffmpeg",
    "check_gpu", "check_profile", "in_colab", "mesh_readiness", "mount_drive", "run_preflight", "start_mesh",
]

CheckStatus = Literal["ok", "warn", "fail", "skip"]
MIN_FREE_BYTES = 2 << 30  # a few short films plus their intermediate clips
# Packages the notebook imports; the version each has is part of the report.
NOTEBOOK_PACKAGES = ("sparkle-motion", "ipywidgets", "ipykernel", "httpx", "av", "imageio-ffmpeg")
# Backends that only make sense with a CUDA device.
GPU_BACKENDS = frozenset({"sdxl", "wan", "chatterbox", "wav2lip", "qwen2vl"})
_COLORS = {"ok": "#15803d", "warn": "#b45309", "fail": "#b91c1c", "skip": "#6b7280"}


class CheckResult(BaseModel):
    name: str
    status: CheckStatus
    detail: str
    elapsed_s: float = 0.0


class PreflightReport(BaseModel):
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def __str__(self) -> str:
        return "\n".join(f"[{c.status.upper():4}] {c.name}: {c.detail} ({c.elapsed_s:.2f} s)" for c in self.checks)

    def to_html(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(c.name)}</td><td style='color:{_COLORS[c.status]};font-weight:bold'>"
            f"{c.status.upper()}</td><td>{html.escape(c.detail)}</td><td>{c.elapsed_s:.2f} s</td></tr>"
            for c in self.checks)
        return f"<table><tr><th>check</th><th>status</th><th>detail</th><th>time</th></tr>{rows}</table>"

    def _repr_html_(self) -> str:
        return self.to_html()


def in_colab() -> bool:
    """True inside a Google Colab runtime (its kernel imports google.colab at start)."""
    return "google.colab" in sys.modules


def _timed(name: str, body: Callable[[], tuple[CheckStatus, str]]) -> CheckResult:
    started = time.monotonic()
    try:
        status, detail = body()
    except Exception as exc:  # noqa: BLE001 - a broken check is reported as a failed check, with its cause
        status, detail = "fail", f"check crashed: {type(exc).__name__}: {exc}"
    return CheckResult(name=name, status=status, detail=detail, elapsed_s=round(time.monotonic() - started, 3))


def check_environment() -> CheckResult:
    def body() -> tuple[CheckStatus, str]:
        versions, missing = [], []
        for package in NOTEBOOK_PACKAGES:
            try:
                versions.append(f"{package} {importlib.metadata.version(package)}")
            except importlib.metadata.PackageNotFoundError:
                missing.append(package)
        venv = "venv" if sys.prefix != sys.base_prefix else "system interpreter"
        where = f"Python {platform.python_version()} ({venv}: {sys.executable}); colab={in_colab()}"
        if missing:
            return "fail", f"{where}; missing: {', '.join(missing)} — run `pip install -e .[notebook]`"
        return "ok", f"{where}; {', '.join(versions)}"

    return _timed("environment", body)


def check_gpu(timeout_s: float = 10.0) -> CheckResult:
    """nvidia-smi's view of the GPUs; 'skip' when the tool is absent (a CPU machine)."""

    def body() -> tuple[CheckStatus, str]:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return "skip", "no nvidia-smi on PATH: no NVIDIA GPU visible; the cpu profile is the one that works here"
        try:
            done = subprocess.run([exe, "--query-gpu=name,memory.total,memory.used,driver_version",
                                   "--format=csv,noheader"], capture_output=True, text=True, timeout=timeout_s, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "warn", f"nvidia-smi did not answer within {timeout_s:.0f} s (driver busy or hung)"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return "warn", f"nvidia-smi exited {done.returncode}: {tail[0]}"
        gpus = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if not gpus:
            return "warn", "nvidia-smi lists no GPU"
        return "ok", "; ".join(gpus)

    return _timed("gpu", body)


def check_disk(path: Path, min_free_bytes: int = MIN_FREE_BYTES) -> CheckResult:
    def body() -> tuple[CheckStatus, str]:
        probe = Path(path)
        # The artifact root may not exist yet: measure the nearest existing parent.
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        usage = shutil.disk_usage(probe)
        detail = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB at {path}"
        if usage.free < min_free_bytes:
            return "warn", f"{detail}; below the {min_free_bytes / 2**30:.1f} GiB a few films need"
        return "ok", detail

    return _timed("disk", body)


def check_profile(settings: Settings, *, gpu_present: bool | None = None) -> CheckResult:
    """Which profile the mesh will run and with which backends; warns when it needs a GPU that is absent."""

    def body() -> tuple[CheckStatus, str]:
        backends = {tool: p.backend for tool, p in settings.profile.items()}
        listing = ", ".join(f"{tool}={backend}" for tool, backend in backends.items())
        detail = f"profile {settings.profile_name!r} ({settings.profile_path}); SPARKLE_HOME={settings.home}; {listing}"
        needs_gpu = sorted(t for t, b in backends.items() if b in GPU_BACKENDS)
        has_gpu = shutil.which("nvidia-smi") is not None if gpu_present is None else gpu_present
        if needs_gpu and not has_gpu:
            return "warn", f"{detail}; {', '.join(needs_gpu)} need a GPU and none is visible — use SPARKLE_PROFILE=cpu"
        return "ok", detail

    return _timed("profile", body)


def check_ffmpeg(timeout_s: float = 15.0) -> CheckResult:
    def body() -> tuple[CheckStatus, str]:
        from sparkle_motion.media import ffmpeg_exe

        exe = ffmpeg_exe()
        try:
            done = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, check=False,
                                  timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "fail", f"{exe} -version did not answer within {timeout_s:.0f} s"
        first = (done.stdout.splitlines() or ["no output"])[0]
        return ("ok" if done.returncode == 0 else "fail"), f"{first} ({exe})"

    return _timed("ffmpeg", body)


def run_preflight(settings: Settings | None = None, *, gpu_timeout_s: float = 10.0,
                  min_free_bytes: int = MIN_FREE_BYTES) -> PreflightReport:
    """All checks, in order; a settings error is itself reported as the failed 'profile' check."""
    checks = [check_environment()]
    gpu = check_gpu(gpu_timeout_s)
    checks.append(gpu)
    try:
        settings = settings or get_settings()
    except SparkleError as exc:
        checks.append(CheckResult(name="profile", status="fail", detail=f"settings: {exc}"))
        return PreflightReport(checks=checks)
    checks.append(check_disk(settings.home, min_free_bytes))
    checks.append(check_profile(settings, gpu_present=gpu.status == "ok"))
    checks.append(check_ffmpeg())
    return PreflightReport(checks=checks)


def mount_drive(mount_point: str = "/content/drive", subdir: str = "MyDrive/sparkle_motion",
                *, timeout_s: float = 120.0) -> Path | None:
    """Mount Google Drive (Colab only) and return ``<mount>/<subdir>`` for SPARKLE_HOME; None elsewhere."""
    if not in_colab():
        return None
    from google.colab import drive  # type: ignore[import-not-found]  # only exists in Colab

    drive.mount(mount_point, timeout_ms=int(timeout_s * 1000))
    home = Path(mount_point) / subdir
    home.mkdir(parents=True, exist_ok=True)
    return home


def resolve_home(parameter: str, environ: Mapping[str, str] | None = None, *,
                 drive_home: Callable[[], Path | None] | None = None) -> Path:
    """The notebook's SPARKLE_HOME: its parameter, else an exported ``SPARKLE_HOME``, else Drive, else ./.sparkle.

    An exported home is the user's (or CI's) choice and is never overwritten;
    ``drive_home`` (mounting Google Drive in Colab) is only called when neither is set.
    """
    environ = os.environ if environ is None else environ
    if parameter:
        return Path(parameter).expanduser()
    if environ.get("SPARKLE_HOME"):
        return Path(environ["SPARKLE_HOME"]).expanduser()
    mounted = drive_home() if drive_home is not None else None
    return mounted if mounted is not None else Path.cwd() / ".sparkle"


class MeshReadiness(BaseModel):
    profile: str
    home: str
    services: list[dict[str, object]]
    started_here: bool = False  # this call started the supervisor (a headless run stops what it started)

    @property
    def all_ready(self) -> bool:
        return bool(self.services) and all(s["ready"] for s in self.services)

    def to_html(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(str(s['tool_id']))}</td><td>{html.escape(str(s['url']))}</td>"
            f"<td>{s['pid'] or '—'}</td><td>{html.escape(str(s['backend']))}</td>"
            f"<td style='color:{'#15803d' if s['ready'] else '#b91c1c'};font-weight:bold'>"
            f"{'ready' if s['ready'] else ('alive, not ready' if s['alive'] else 'down')}</td>"
            f"<td>{s['restarts']}</td></tr>" for s in self.services)
        return (f"<p>mesh: profile <b>{html.escape(self.profile)}</b>, SPARKLE_HOME {html.escape(self.home)}</p>"
                f"<table><tr><th>service</th><th>url</th><th>pid</th><th>backend</th><th>state</th>"
                f"<th>restarts</th></tr>{rows}</table>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return "\n".join(f"{s['tool_id']:18} {s['url']:28} {'ready' if s['ready'] else 'NOT READY'}"
                         for s in self.services)


def mesh_readiness(settings: Settings | None = None) -> MeshReadiness:
    """Every service's pid, liveness and /ready answer, from the mesh's state file and a probe."""
    settings = settings or get_settings()
    _, rows = mesh.status(settings)
    return MeshReadiness(profile=settings.profile_name, home=str(settings.home),
                         services=[{"tool_id": r.tool_id, "url": r.url, "pid": r.pid, "alive": r.alive,
                                    "ready": r.ready, "restarts": r.restarts, "backend": r.backend} for r in rows])


def start_mesh(settings: Settings | None = None, *, timeout_s: float = 240.0,
               stop_at_exit: bool = False) -> MeshReadiness:
    """``sparkle-motion up`` from Python: start (or reuse) the mesh, wait for every /ready, report.

    Raises :class:`sparkle_motion.mesh.MeshError` naming the services that failed,
    with their log tails in ``context`` — after at most ``timeout_s``.  With
    ``stop_at_exit`` (a headless / CI run) a mesh this call started is stopped when
    the kernel exits, even if a later cell failed; a mesh that was already running
    is left alone.
    """
    settings = settings or get_settings()
    started_here = not mesh.supervisor_running(settings)
    if started_here and stop_at_exit:
        atexit.register(mesh.down, settings)  # registered first: a failed up() leaves services too
    mesh.up(settings, timeout=timeout_s)
    return mesh_readiness(settings).model_copy(update={"started_here": started_here})
