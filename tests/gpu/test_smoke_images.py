"""Real-weight smoke test of images_sdxl `sdxl` on a CUDA GPU.

    SMOKE_IMAGES=1 pytest tests/gpu/test_smoke_images.py -v

Uses the ``gpu`` profile's model (stabilityai/stable-diffusion-xl-base-1.0 from
the local HF cache, or a local directory) with fewer steps.  Checks what only
real weights can show: a 1024x1024 image that is not noise (real SDXL output
is smooth: neighbouring pixels correlate strongly, random-weight output does
not), the same seed reproduces, fp16 on CUDA, peak VRAM recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from gpu.conftest import require_smoke
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import REPO_ROOT
from sparkle_motion.testing import RunningTool, running_tool

pytestmark = require_smoke("SMOKE_IMAGES")


def _neighbour_correlation(pixels: np.ndarray) -> float:
    luma = pixels.astype(np.float64).mean(axis=2)
    return float(np.corrcoef(luma[:, :-1].ravel(), luma[:, 1:].ravel())[0, 1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smoke-images")


@pytest.fixture(scope="module")
def tool(home: Path) -> Iterator[RunningTool]:
    profile = yaml.safe_load((REPO_ROOT / "configs" / "profiles" / "gpu.yaml").read_text(encoding="utf-8"))
    profile["tools"]["images_sdxl"]["options"]["steps"] = 20
    path = home / "profile.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    # Weights load on the first request (lazily, under the device lock), so /ready is quick.
    with running_tool("images_sdxl", home=home, ready_timeout=300,
                      env={"SPARKLE_PROFILE": str(path), "SPARKLE_TOKEN": None,
                           "SPARKLE_IMAGES_SDXL_BACKEND": None}) as running:
        yield running


def _invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    reply = tool.client.post("/invoke", json={"run_id": "smoke-images", **payload}, timeout=900)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_sdxl_renders_a_real_image_reproducibly(tool: RunningTool, home: Path) -> None:
    store = ArtifactStore(home)
    try:
        payload = dict(prompt="a red lighthouse on a rocky coast at sunset, photograph", seed=1234,
                       width=1024, height=1024)
        first = _invoke(tool, **payload)
        second = _invoke(tool, **payload)
        arrays = []
        for body in (first, second):
            path = store.path_for(body["images"][0]["artifact"]["uri"])
            with Image.open(path) as png:
                assert png.size == (1024, 1024)
                arrays.append(np.asarray(png.convert("RGB")))
        assert _neighbour_correlation(arrays[0]) > 0.9  # an image, not noise
        assert np.abs(arrays[0].astype(int) - arrays[1].astype(int)).mean() < 1.0  # same seed (GPU kernels may jitter)
        gpu = store.get(second["images"][0]["artifact"]["uri"]).metadata["gpu"]
        assert gpu["device"].startswith("cuda") and gpu["dtype"] == "float16"
        assert gpu["reused"] is True and gpu["peak_vram_mb"] > 1000
    finally:
        store.close()
