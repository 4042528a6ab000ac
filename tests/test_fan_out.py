"""Stage fan-out: bounded, results in item order, every item finished before a failure is raised;
and the tool capacity it is sized by (a profile's ``max_concurrency``, reported in /metadata)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from sparkle_motion.agents.fan_out import MAX_FAN_OUT, fan_out, tool_capacity
from sparkle_motion.config import load_settings
from sparkle_motion.errors import ConfigError
from sparkle_motion.services import ToolClient
from sparkle_motion.testing import running_tool, write_test_profile


def test_results_come_back_in_item_order_and_concurrency_is_bounded():
    running, peak, lock = 0, 0, threading.Lock()

    def work(item: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05 * (5 - item))  # later items finish first
        with lock:
            running -= 1
        return item * 10

    assert fan_out(list(range(5)), work, lambda: 2) == [0, 10, 20, 30, 40]
    assert peak == 2


def test_every_item_runs_before_the_first_failure_in_item_order_is_raised():
    done: list[int] = []

    def work(item: int) -> int:
        time.sleep(0.02 * (4 - item))
        done.append(item)
        if item in (1, 3):
            raise ValueError(f"item {item}")
        return item

    with pytest.raises(ValueError, match="item 1"):
        fan_out([0, 1, 2, 3], work, lambda: 4)
    assert sorted(done) == [0, 1, 2, 3]


def test_capacity_is_not_asked_for_a_single_item():
    def no_capacity() -> int:
        raise AssertionError("asked")

    assert fan_out([7], lambda item: item + 1, no_capacity) == [8]
    assert fan_out([], lambda item: item, no_capacity) == []


def _profile_with(tmp_path: Path, tool_id: str, value: object) -> Path:
    path = write_test_profile(tmp_path / "home")
    profile = yaml.safe_load(path.read_text())
    profile["tools"][tool_id]["max_concurrency"] = value
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.parametrize("value", [0, 65, "3", True, 1.5])
def test_a_bad_profile_concurrency_is_a_config_error_naming_it(tmp_path, value):
    path = _profile_with(tmp_path, "videos_wan", value)
    with pytest.raises(ConfigError) as caught:
        load_settings({"SPARKLE_PROFILE": str(path), "SPARKLE_HOME": str(tmp_path)})
    assert caught.value.field == "tools.videos_wan.max_concurrency"


def test_a_backend_override_does_not_inherit_the_profile_concurrency(tmp_path):
    path = _profile_with(tmp_path, "videos_wan", 3)
    env = {"SPARKLE_PROFILE": str(path), "SPARKLE_HOME": str(tmp_path)}
    assert load_settings(env).tool_profile("videos_wan").max_concurrency == 3
    overridden = load_settings({**env, "SPARKLE_VIDEOS_WAN_BACKEND": "wan2.1-flf2v"})
    assert overridden.tool_profile("videos_wan").max_concurrency is None  # a GPU model serves one call at a time


def test_the_profile_concurrency_is_what_metadata_reports_and_what_the_tool_serves(tmp_path):
    path = _profile_with(tmp_path, "videos_wan", 3)
    home = tmp_path / "home"
    settings = load_settings({"SPARKLE_PROFILE": str(path), "SPARKLE_HOME": str(home)})
    with running_tool("videos_wan", home=home, env={"SPARKLE_PROFILE": str(path), "SPARKLE_TOKEN": None}) as tool:
        metadata = tool.client.get("/metadata").json()
        assert metadata["limits"]["max_concurrency"] == 3
        with ToolClient("videos_wan", settings=settings, base_url=tool.url) as client:
            assert tool_capacity(client) == 3
    with ToolClient("videos_wan", settings=settings, base_url="http://127.0.0.1:9", timeout=0.5, retries=0) as client:
        assert tool_capacity(client) == 1  # unreachable: no fan-out rather than a failed stage
    assert MAX_FAN_OUT >= 3


def _metadata_client(settings, limits: dict) -> ToolClient:
    """A client whose tool answers /metadata with ``limits`` (the HTTP boundary, mocked)."""
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/metadata")
        return httpx.Response(200, json={"tool_id": "videos_wan", "limits": limits})
    return ToolClient("videos_wan", settings=settings, base_url="http://tool.test", transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(("limits", "cap", "expected"), [
    ({"max_concurrency": 1, "replicas": 2}, None, 2),      # two Serve replicas of a one-call GPU tool
    ({"max_concurrency": 3, "replicas": 2}, None, 6),
    ({"max_concurrency": 3, "replicas": 2}, 4, 4),          # the profile's max_fan_out caps it
    ({"max_concurrency": 2}, None, 2),                      # the local engine: no replicas key
    ({"max_concurrency": 4, "replicas": 8}, None, MAX_FAN_OUT),
])
def test_capacity_is_replicas_times_concurrency_capped_by_the_profile(tmp_path, limits, cap, expected):
    path = write_test_profile(tmp_path / "home")
    profile = yaml.safe_load(path.read_text())
    if cap is not None:
        profile["tools"]["videos_wan"]["max_fan_out"] = cap
    path.write_text(yaml.safe_dump(profile))
    settings = load_settings({"SPARKLE_PROFILE": str(path), "SPARKLE_HOME": str(tmp_path)})
    with _metadata_client(settings, limits) as client:
        assert tool_capacity(client) == expected
