"""images_sdxl `storyboard` over HTTP against the real process.

PNGs are decoded with Pillow from the stored files; nothing is read from the
tool's own claims without checking the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import RunningTool, free_port
from test_images_sdxl_storyboard import hamming, phash  # tests/ is on sys.path (rootdir conftest)
from tool_fixtures import module_tool_fixtures

pytestmark = pytest.mark.xdist_group("images_sdxl")

RUN = "images-test"
BAD_RUN = "images-bad"


home, tool, store = module_tool_fixtures("images_sdxl")


def invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    payload.setdefault("width", 160)
    payload.setdefault("height", 96)
    reply = tool.client.post("/invoke", json=payload, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_images_are_pngs_with_seed_and_parameters(tool: RunningTool, store: ArtifactStore) -> None:
    body = invoke(tool, prompt="Two friends on a neon rooftop before sunrise", seed=41, count=3,
                  characters=["Maya", "Leo"], style="vivid", steps=30, guidance_scale=6.5, scheduler="EulerDiscrete")
    assert body["tool_id"] == "images_sdxl" and body["backend"] == "storyboard"
    assert [img["seed"] for img in body["images"]] == [41, 42, 43]
    assert body["ignored_options"] == ["steps", "guidance_scale", "scheduler"]
    digests = set()
    for index, img in enumerate(body["images"]):
        manifest = store.get(img["artifact"]["uri"])
        assert manifest.media_type == "image/png" and (manifest.width, manifest.height) == (160, 96)
        path = store.path_for(manifest.uri)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert hashlib.sha256(data).hexdigest() == manifest.sha256
        digests.add(manifest.sha256)
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == (160, 96) and png.mode == "RGB"
            text = dict(png.text)
            pixels = np.asarray(png.convert("RGB"), dtype=np.float64)
        assert pixels.std() > 20  # a drawn scene, not a flat fill
        assert text["seed"] == str(41 + index)
        assert text["prompt"] == "Two friends on a neon rooftop before sunrise"
        params = json.loads(text["parameters"])
        assert params["seed"] == 41 + index and params["characters"] == ["Maya", "Leo"]
        assert params["steps"] == 30 and params["width"] == 160
        scene = json.loads(text["scene"])
        assert (scene["time_of_day"], scene["place"], scene["style"]) == ("sunrise", "rooftop", "vivid")
        meta = manifest.metadata
        assert meta["seed"] == 41 + index and meta["tool"] == "images_sdxl" and meta["backend"] == "storyboard"
        assert meta["request_id"] == body["request_id"] and meta["params"]["guidance_scale"] == 6.5
        assert meta["ignored_options"] == ["steps", "guidance_scale", "scheduler"]
        assert meta["timings"]["render_s"] > 0
    assert len(digests) == 3
    listed = {m.uri for m in store.list(RUN, artifact_type="image")}
    assert {img["artifact"]["uri"] for img in body["images"]} <= listed


def test_same_prompt_and_seed_are_byte_identical_across_requests(tool: RunningTool, store: ArtifactStore) -> None:
    first = invoke(tool, prompt="A lighthouse on the beach at sunset in the rain", seed=5)
    second = invoke(tool, prompt="A lighthouse on the beach at sunset in the rain", seed=5)
    a, b = (store.path_for(x["images"][0]["artifact"]["uri"]).read_bytes() for x in (first, second))
    assert first["request_id"] != second["request_id"]
    assert a == b


def test_default_seed_is_derived_from_the_prompt(tool: RunningTool, store: ArtifactStore) -> None:
    prompt = "A foggy forest at dawn"
    derived = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
    implicit = invoke(tool, prompt=prompt)
    explicit = invoke(tool, prompt=prompt, seed=derived)
    assert implicit["images"][0]["seed"] == derived
    assert implicit["images"][0]["artifact"]["sha256"] == explicit["images"][0]["artifact"]["sha256"]


def test_default_size_is_the_profile_render_size(tool: RunningTool, store: ArtifactStore) -> None:
    reply = tool.client.post("/invoke", json={"run_id": RUN, "prompt": "An office at noon"}, timeout=60)
    assert reply.status_code == 200, reply.text
    with Image.open(store.path_for(reply.json()["images"][0]["artifact"]["uri"])) as png:
        assert png.size == (640, 360)


def test_different_prompts_differ_perceptually_over_http(tool: RunningTool, store: ArtifactStore) -> None:
    def image(prompt: str) -> Image.Image:
        body = invoke(tool, prompt=prompt, seed=3, width=320, height=184)
        with Image.open(store.path_for(body["images"][0]["artifact"]["uri"])) as png:
            return png.convert("RGB")

    night_city = phash(image("A neon city street at night in the rain"))
    beach = phash(image("A sunny beach at noon"))
    mountain = phash(image("Snowy mountain pass under the moon"))
    assert min(hamming(night_city, beach), hamming(beach, mountain), hamming(night_city, mountain)) >= 12


def test_metadata_describes_the_tool(tool: RunningTool) -> None:
    meta = tool.client.get("/metadata").json()
    assert meta["tool_id"] == "images_sdxl"
    assert "storyboard" in json.dumps(meta)
    assert "prompt" in json.dumps(meta)


BAD_REQUESTS = [
    ({"width": 160, "height": 96}, "prompt"),
    ({"prompt": "", "width": 160, "height": 96}, "prompt"),
    ({"prompt": "   ", "width": 160, "height": 96}, "prompt"),
    ({"prompt": "x" * 2001, "width": 160, "height": 96}, "prompt"),
    ({"prompt": "ok", "width": 100, "height": 96}, "width"),
    ({"prompt": "ok", "width": 4096, "height": 96}, "width"),
    ({"prompt": "ok", "width": 160, "height": 32}, "height"),
    ({"prompt": "ok", "width": 160, "height": 96, "count": 9}, "count"),
    ({"prompt": "ok", "width": 160, "height": 96, "count": 0}, "count"),
    ({"prompt": "ok", "width": 160, "height": 96, "seed": -1}, "seed"),
    ({"prompt": "ok", "width": 160, "height": 96, "seed": "abc"}, "seed"),
    ({"prompt": "ok", "width": 160, "height": 96, "characters": [f"c{i}" for i in range(9)]}, "characters"),
    ({"prompt": "ok", "width": 160, "height": 96, "characters": ["Maya", "Maya"]}, "characters"),
    ({"prompt": "ok", "width": 160, "height": 96, "refiner_high_noise_frac": 0.8}, "refiner_high_noise_frac"),
    ({"prompt": "ok", "width": 160, "height": 96, "scheduler": "../etc"}, "scheduler"),
    ({"prompt": "ok", "width": 160, "height": 96, "colour": "red"}, "colour"),
    ({"prompt": "ok", "width": 160, "height": 96, "run_id": "../escape"}, "run_id"),
]


@pytest.mark.parametrize(("payload", "field"), BAD_REQUESTS, ids=[f for _, f in BAD_REQUESTS])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(tool: RunningTool, store: ArtifactStore,
                                                              payload: dict[str, Any], field: str) -> None:
    payload = {"run_id": BAD_RUN, **payload}
    before = store.list(BAD_RUN)
    reply = tool.client.post("/invoke", json=payload, timeout=60)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["field"] == field, error
    assert error["message"]
    assert store.list(BAD_RUN) == before == []
    assert tool.client.get("/health").status_code == 200


def test_malformed_json_body_is_422_and_service_keeps_serving(tool: RunningTool) -> None:
    reply = tool.client.post("/invoke", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "body"
    assert tool.client.get("/health").status_code == 200
    assert invoke(tool, prompt="still alive at noon")["images"]


def assert_entry_point_serves(tool_id: str, home: Path) -> None:
    """`python -m function_tools.<tool_id> --port P` starts the tool and answers /ready and /metadata."""
    port = free_port()
    env = {**os.environ, "SPARKLE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("SPARKLE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", f"function_tools.{tool_id}", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready in 60 s"
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=5).json()["tool_id"] == tool_id
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_python_dash_m_entry_point_serves(tmp_path: Path) -> None:
    assert_entry_point_serves("images_sdxl", tmp_path)
