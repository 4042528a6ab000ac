"""The engine part of the profile (engine_config.py), the Serve routes callers get, the client's
reading of a proxy's error for a lost replica, and staging files scoped per Serve replica.

None of these start Ray: the Ray engine's own tests are tests/test_ray_engine.py (slow).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.sweep import sweep_leftovers
from sparkle_motion.config import SweepSettings, load_settings
from sparkle_motion.errors import ConfigError, ToolCallError
from sparkle_motion.services import ToolClient, replica
from sparkle_motion.testing import write_test_profile


def _settings(tmp_path: Path, extra: dict, env: dict | None = None, tools: dict | None = None):
    path = write_test_profile(tmp_path / "home")
    profile = yaml.safe_load(path.read_text())
    profile.update(extra)
    for tool_id, entry in (tools or {}).items():
        profile["tools"][tool_id].update(entry)
    path.write_text(yaml.safe_dump(profile))
    return load_settings({"SPARKLE_PROFILE": str(path), "SPARKLE_HOME": str(tmp_path / "home"), **(env or {})})


def test_local_is_the_default_engine_and_keeps_the_registry_ports(tmp_path):
    settings = _settings(tmp_path, {})
    assert settings.engine == "local"
    assert settings.url_for("videos_wan") == f"http://127.0.0.1:{settings.tool('videos_wan').port}"


def test_on_ray_the_tools_are_serve_routes_and_the_agents_keep_their_ports(tmp_path):
    settings = _settings(tmp_path, {"engine": "ray", "ray": {"http_port": 18123}},
                         tools={"videos_wan": {"ray": {"num_replicas": 2, "num_gpus": 1}, "max_fan_out": 3}})
    assert settings.url_for("videos_wan") == "http://127.0.0.1:18123/videos_wan"
    assert settings.url_for("images_sdxl") == "http://127.0.0.1:18123/images_sdxl"
    agent_port = settings.tool("production_agent").port
    assert settings.url_for("production_agent") == f"http://127.0.0.1:{agent_port}"
    videos = settings.tool_profile("videos_wan")
    assert (videos.ray.num_replicas, videos.ray.num_gpus, videos.ray.most_replicas, videos.max_fan_out) == (2, 1.0, 2, 3)
    assert settings.tool_profile("images_sdxl").ray.num_replicas == 1


def test_the_env_overrides_pick_the_engine_and_the_cluster(tmp_path):
    settings = _settings(tmp_path, {}, env={"SPARKLE_ENGINE": "ray", "SPARKLE_RAY_ADDRESS": "10.0.0.5:6379"})
    assert (settings.engine, settings.ray.address) == ("ray", "10.0.0.5:6379")


def test_autoscaling_bounds_set_the_replicas_a_fan_out_counts_on(tmp_path):
    settings = _settings(tmp_path, {"engine": "ray"},
                         tools={"videos_wan": {"ray": {"min_replicas": 1, "max_replicas": 4}}})
    assert settings.tool_profile("videos_wan").ray.most_replicas == 4


@pytest.mark.parametrize(("extra", "tools", "field"), [
    ({"engine": "slurm"}, {}, "engine"),
    ({"ray": {"http_port": 0}}, {}, "ray.http_port"),
    ({"ray": {"dashboard": True}}, {}, "ray.dashboard"),
    ({}, {"videos_wan": {"ray": {"num_replicas": 0}}}, "tools.videos_wan.ray.num_replicas"),
    ({}, {"videos_wan": {"ray": {"num_gpus": -1}}}, "tools.videos_wan.ray.num_gpus"),
    ({}, {"videos_wan": {"ray": {"min_replicas": 1}}}, "tools.videos_wan.ray.min_replicas"),
    ({}, {"videos_wan": {"ray": {"min_replicas": 3, "max_replicas": 2}}}, "tools.videos_wan.ray.max_replicas"),
    ({}, {"videos_wan": {"max_fan_out": True}}, "tools.videos_wan.max_fan_out"),
])
def test_a_bad_engine_setting_is_a_config_error_naming_it(tmp_path, extra, tools, field):
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, extra, tools=tools)
    assert caught.value.field == field


def _client(answer) -> ToolClient:
    return ToolClient("videos_wan", base_url="http://proxy.test/videos_wan", token="", restart_wait_s=0.0,
                      retries=1, backoff_s=0.01, transport=httpx.MockTransport(answer))


def test_a_proxy_error_for_a_lost_replica_is_redone_once():
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:  # what Serve's proxy says when the replica died mid-call: no tool error body
            return httpx.Response(500, text="Internal Server Error")
        return httpx.Response(200, json={"artifacts": []})

    with _client(answer) as client:
        assert client.invoke({"run_id": "r"}) == {"artifacts": []}
    assert calls == ["/videos_wan/invoke", "/videos_wan/invoke"]


def test_a_tools_own_500_is_not_retried():
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(500, json={"error": {"code": "backend_error", "message": "boom"}, "request_id": "x"})

    with _client(answer) as client, pytest.raises(ToolCallError) as caught:
        client.invoke({"run_id": "r"})
    assert caught.value.status == 500 and caught.value.remote_error["code"] == "backend_error" and len(calls) == 1


def test_a_proxy_that_keeps_losing_the_replica_ends_unreachable():
    with _client(lambda request: httpx.Response(502, text="bad gateway")) as client, \
            pytest.raises(ToolCallError) as caught:
        client.invoke({"run_id": "r"})
    assert caught.value.code == "tool_unreachable"


def test_a_replica_sweeps_dead_siblings_staging_files_and_keeps_live_ones(tmp_path):
    store = ArtifactStore(tmp_path / "home")
    staging = store.staging_dir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f"videos_wan-p{dead_pid}-req-1.mp4", "live": f"videos_wan-p{sibling.pid}-req-2.mp4",
                 "other_tool": f"images_sdxl-p{dead_pid}-req-3.png"}
        for name in names.values():
            (staging / name).write_bytes(b"x")
        replica.set_current(replica.ReplicaInfo("r1", 2, os.getpid()))
        try:
            assert replica.staging_prefix("videos_wan") == f"videos_wan-p{os.getpid()}-"
            report = sweep_leftovers(store, SweepSettings(), own_prefix=lambda n: replica.dead_replica_staging(
                "videos_wan", n))
        finally:
            replica.set_current(None)
        assert report.staging == [f"staging/{names['dead']}"]
        assert sorted(p.name for p in staging.iterdir()) == sorted([names["live"], names["other_tool"]])
        assert replica.staging_prefix("videos_wan") == "videos_wan-"  # a plain process: today's names
    finally:
        sibling.kill()
        sibling.wait()
        store.close()


@pytest.mark.parametrize(("engine", "replicas", "uses_jobs"), [("ray", 2, False), ("ray", 1, True), ("local", 2, True)])
def test_a_long_running_tool_with_replicas_on_ray_is_called_without_jobs(tmp_path, engine, replicas, uses_jobs):
    """A job lives in one replica; Serve routes each poll anywhere, so several replicas mean one held /invoke."""
    settings = _settings(tmp_path, {"engine": engine}, tools={"videos_wan": {
        "long_running": True, "max_job_s": 600, "ray": {"num_replicas": replicas}}})
    with ToolClient("videos_wan", settings=settings) as client:
        assert client.use_jobs is uses_jobs
        read_timeout = client._http.timeout.read
        assert read_timeout == (settings.client.read_timeout_s if uses_jobs else 660.0)
