"""One device, several tool processes: a load that does not fit makes the other warm models leave.

Two real tool processes (images_sdxl and videos_wan with tiny models) share the
``cpu`` device under a simulated 80 GB card (``memory.simulate_total_gb``):
each load is expected to need 50 GB (``memory.estimate_gb``), so both cannot
be resident at once.  Free memory is the card minus the residency records
(the test hook that stands in for ``torch.cuda.mem_get_info``).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="the GPU extra (torch, diffusers) is not installed: pip install -e '.[gpu]'")

from PIL import Image  # noqa: E402
from tiny_models import write_gpu_profile  # noqa: E402
from tiny_models.sdxl import build_tiny_sdxl  # noqa: E402
from tiny_models.wan import build_tiny_wan_flf2v  # noqa: E402

from sparkle_motion.artifacts import ArtifactStore  # noqa: E402
from sparkle_motion.gpu.memory_plans import GB  # noqa: E402
from sparkle_motion.testing import RunningTool, running_tool  # noqa: E402

# One worker for the module: its two tool processes serve both tests (two copies would starve the CPU).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gpu_residency")]
CARD_GB, NEED_GB = 80, 50
LOCK_TIMEOUT_S = 90
MEMORY = {"plan": "auto", "simulate_total_gb": CARD_GB, "estimate_gb": NEED_GB}
SDXL = {"device": "cpu", "dtype": "float32", "steps": 2, "keep_warm_s": 600, "lock_timeout_s": LOCK_TIMEOUT_S,
        "memory": MEMORY, "native_buckets": False}   # the request's 64x64, not the 1024 bucket (minutes on CPU)
WAN = {"device": "cpu", "dtype": "float32", "steps": 2, "guidance": 5.0, "max_sequence_length": 16,
       "keep_warm_s": 600, "lock_timeout_s": LOCK_TIMEOUT_S, "max_model_frames": 9,
       "memory": {**MEMORY, "vae_tiling": True}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("residency-home")


@pytest.fixture(scope="module")
def tools(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningTool]]:
    models = tmp_path_factory.mktemp("residency-models")
    build_tiny_sdxl(models / "sdxl")
    wan = build_tiny_wan_flf2v(models / "wan")
    profile = write_gpu_profile(home / "profile.yaml", "images_sdxl", model=str(models / "sdxl"), options=SDXL)
    import yaml

    data = yaml.safe_load(profile.read_text())
    data["tools"]["videos_wan"]["model"] = str(wan)
    data["tools"]["videos_wan"]["options"] = {**data["tools"]["videos_wan"]["options"], **WAN}
    profile.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {"SPARKLE_PROFILE": str(profile), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None,
           "SPARKLE_IMAGES_SDXL_BACKEND": None, "SPARKLE_VIDEOS_WAN_BACKEND": None}
    with running_tool("images_sdxl", home=home, env=env, ready_timeout=180) as sdxl, \
            running_tool("videos_wan", home=home, env=env, ready_timeout=180) as wan_tool:
        yield {"sdxl": sdxl, "wan": wan_tool}


@pytest.fixture(scope="module")
def keyframes(home: Path) -> dict[str, str]:
    store = ArtifactStore(home)
    uris = {}
    for name, colour in (("start", (200, 40, 40)), ("end", (40, 40, 200))):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
        uris[name] = store.put("residency-inputs", "keyframes", "image", buf.getvalue(), "image/png", ext=".png").uri
    store.close()
    return uris


def sdxl_call(tool: RunningTool) -> Any:
    return tool.client.post("/invoke", json={"run_id": "residency", "prompt": "a lighthouse at dusk", "width": 64,
                                             "height": 64}, timeout=300)


def wan_call(tool: RunningTool, keyframes: dict[str, str]) -> Any:
    return tool.client.post("/invoke", json={
        "run_id": "residency", "prompt": "the light turns", "start_frame_uri": keyframes["start"],
        "end_frame_uri": keyframes["end"], "num_frames": 5, "fps": 8, "width": 64, "height": 64}, timeout=300)


def records(home: Path) -> list[dict[str, Any]]:
    import json

    path = home / "gpu" / "residency-cpu.json"
    return list(json.loads(path.read_text()).values()) if path.exists() else []


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def sdxl_gpu(reply: Any) -> dict[str, Any]:
    body = reply.json()
    return body["images"][0]["artifact"]["metadata"]["gpu"]


def test_a_load_that_does_not_fit_makes_the_warm_model_leave(tools: dict[str, RunningTool], home: Path,
                                                              keyframes: dict[str, str]) -> None:
    first = sdxl_call(tools["sdxl"])
    assert first.status_code == 200, first.text
    assert sdxl_gpu(first)["memory_plan"]["name"] == "resident"
    held = records(home)
    assert [(r["tool"], r["bytes"]) for r in held] == [("images_sdxl", NEED_GB * GB)]
    sdxl_pid = held[0]["pid"]

    clip = wan_call(tools["wan"], keyframes)   # 30 GB free, 50 GB needed: images_sdxl must leave
    assert clip.status_code == 200, clip.text
    metadata = clip.json()["video"]["metadata"]
    assert metadata["memory_plan"]["name"] == "resident" and metadata["memory_plan"]["simulated"] is True
    after = records(home)
    assert [r["tool"] for r in after] == ["videos_wan"], after   # images_sdxl evicted; never both resident
    assert sum(r["bytes"] for r in after) <= CARD_GB * GB

    again = sdxl_call(tools["sdxl"])           # and back: videos_wan leaves for images_sdxl
    assert again.status_code == 200, again.text
    gpu = sdxl_gpu(again)
    assert gpu["reused"] is False and gpu["load_count"] == 2   # it really was evicted, and reloaded
    asked = gpu["fit"]["asked"]
    assert [a["tool"] for a in asked] == ["videos_wan"] and gpu["fit"]["need_source"] == "profile"
    assert gpu["fit"]["free_bytes"] == (CARD_GB - NEED_GB) * GB
    assert gpu["fit"]["free_bytes_after"] == CARD_GB * GB
    assert [r["tool"] for r in records(home)] == ["images_sdxl"] and records(home)[0]["pid"] == sdxl_pid


def test_two_tools_wanting_the_device_at_once_never_deadlock(tools: dict[str, RunningTool], home: Path,
                                                             keyframes: dict[str, str]) -> None:
    replies: dict[str, Any] = {}

    took: dict[str, float] = {}

    def call(name: str) -> None:
        t0 = time.monotonic()
        replies[name] = sdxl_call(tools["sdxl"]) if name == "sdxl" else wan_call(tools["wan"], keyframes)
        took[name] = round(time.monotonic() - t0, 1)

    for _ in range(2):   # both orders of arrival
        started = time.monotonic()
        threads = [threading.Thread(target=call, args=(name,)) for name in ("wan", "sdxl")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=LOCK_TIMEOUT_S + 120)
        assert not any(t.is_alive() for t in threads), f"a tool is still waiting for the device: {took}, {records(home)}"
        elapsed = time.monotonic() - started
        statuses = {name: reply.status_code for name, reply in replies.items()}
        assert 200 in statuses.values(), {n: r.text[:300] for n, r in replies.items()}
        for name, reply in replies.items():   # the other renders after, or is told when to come back
            assert reply.status_code in (200, 503), reply.text
            if reply.status_code == 503:
                assert int(reply.headers["Retry-After"]) > 0 and reply.json()["error"]["code"] == "device_busy"
        assert elapsed < 2 * LOCK_TIMEOUT_S + 60, took
        held = records(home)
        assert len(held) == 1 and sum(r["bytes"] for r in held) <= CARD_GB * GB
        assert wait_for(lambda: all(r["evict_request"] is None for r in records(home)))
