"""A whole mesh for tests: eight real processes on free ports under a temp SPARKLE_HOME."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from sparkle_motion import mesh
from sparkle_motion.config import Settings, load_settings, project_path
from sparkle_motion.testing import free_port


def write_test_profile(home: Path, *, render: dict[str, Any] | None = None, base: str = "cpu",
                       tool_options: dict[str, dict[str, Any]] | None = None) -> Path:
    """The cpu profile with every service moved to a free port (meshes run side by side)."""
    profile = yaml.safe_load(project_path(f"configs/profiles/{base}.yaml").read_text())
    profile["name"] = f"{base}-test"
    for tool_id, entry in profile["tools"].items():
        entry["port"] = free_port()
        if tool_options and tool_id in tool_options:
            entry["options"] = {**entry.get("options", {}), **tool_options[tool_id]}
    if render:
        profile["render"] = {**profile.get("render", {}), **render}
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
    profile = write_test_profile(home, **profile_kw)
    env = mesh_env(home, profile)
    settings = load_settings(env)
    saved = dict(os.environ)
    # mesh.up() starts the supervisor with this process's environment.
    os.environ.clear()
    os.environ.update(env)
    try:
        mesh.up(settings, timeout=240)
        yield settings
    finally:
        try:
            mesh.down(settings)
        finally:
            os.environ.clear()
            os.environ.update(saved)


def wait_for_status(client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 300.0,
                    predicate=None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get("/status", params={"run_id": run_id})
        if response.status_code == 200:
            last = response.json()
            if last["status"] in statuses and (predicate is None or predicate(last)):
                return last
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} did not reach {statuses} in {timeout} s; last: "
                         f"{ {k: last.get(k) for k in ('status', 'current_stage', 'error')} }")
