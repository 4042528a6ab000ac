"""Real-weight smoke test of videos_wan `wan2.1-flf2v` on a CUDA GPU.

    SMOKE_VIDEOS=1 pytest tests/gpu/test_smoke_videos.py -v

Uses the ``gpu`` profile's model (Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers from the
local HF cache, or a local directory) with fewer steps and a small clip: 480x272
(16-px aligned), 17 frames asked as 18 so the 4k+1 rounding and the time
resampling run too.  Checks what only real weights can show: the clip is a
picture, not noise (neighbouring pixels correlate), it opens near the start
keyframe and closes near the end keyframe, and the frames in between are new
(not a cross-fade copy of either end); the same seed reproduces; bf16 on CUDA;
peak VRAM recorded.  Plan for >= 48 GB of VRAM without CPU offload.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from gpu.conftest import require_smoke

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import REPO_ROOT
from sparkle_motion.testing import RunningTool, running_tool

pytestmark = require_smoke("SMOKE_VIDEOS")

W, H, FRAMES, FPS = 480, 272, 18, 16


def _neighbour_correlation(pixels: np.ndarray) -> float:
    luma = pixels.astype(np.float64).mean(axis=2)
    return float(np.corrcoef(luma[:, :-1].ravel(), luma[:, 1:].ravel())[0, 1])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smoke-videos")


@pytest.fixture(scope="module")
def tool(home: Path) -> Iterator[RunningTool]:
    profile = yaml.safe_load((REPO_ROOT / "configs" / "profiles" / "gpu.yaml").read_text(encoding="utf-8"))
    profile["tools"]["videos_wan"]["options"]["steps"] = 20
    path = home / "profile.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    with running_tool("videos_wan", home=home, ready_timeout=300,
                      env={"SPARKLE_PROFILE": str(path), "SPARKLE_TOKEN": None,
                           "SPARKLE_VIDEOS_WAN_BACKEND": None}) as running:
        yield running


def _keyframes(store: ArtifactStore) -> tuple[str, str, np.ndarray, np.ndarray]:
    from PIL import Image

    from function_tools.images_sdxl.scene import describe_scene
    from function_tools.images_sdxl.storyboard import render_frame

    uris, arrays = [], []
    for prompt in ("A lighthouse on a rocky coast at dusk", "The same lighthouse at night, its lamp shining"):
        image = render_frame(prompt, 1, W, H, scene=describe_scene(prompt), characters=[]).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        uris.append(store.put("smoke-videos-inputs", "keyframes", "image", buf.getvalue(), "image/png",
                              ext=".png").uri)
        arrays.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return uris[0], uris[1], arrays[0], arrays[1]


def _invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    reply = tool.client.post("/invoke", json={"run_id": "smoke-videos", **payload}, timeout=1800)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_wan_flf2v_renders_a_real_clip_between_the_keyframes(tool: RunningTool, home: Path) -> None:
    import av

    store = ArtifactStore(home)
    try:
        start_uri, end_uri, start, end = _keyframes(store)
        payload = {"start_frame_uri": start_uri, "end_frame_uri": end_uri, "num_frames": FRAMES, "fps": FPS,
                   "width": W, "height": H, "seed": 7, "prompt": "night falls over the lighthouse, waves roll in",
                   "motion_prompt": "slow push in"}
        first = _invoke(tool, **payload)
        second = _invoke(tool, **payload)
        clips = []
        for body in (first, second):
            with av.open(str(store.path_for(body["video"]["uri"]))) as container:
                stream = container.streams.video[0]
                assert (stream.codec_context.width, stream.codec_context.height) == (W, H)
                assert stream.average_rate == Fraction(FPS)
                clips.append([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        assert len(clips[0]) == len(clips[1]) == FRAMES
        frames = clips[0]
        assert all(_neighbour_correlation(f) > 0.9 for f in frames[:: FRAMES // 3])   # pictures, not noise
        assert _psnr(frames[0], start) > 18 and _psnr(frames[-1], end) > 18           # anchored at both ends
        middle = frames[FRAMES // 2]
        assert _psnr(middle, start) < 40 and _psnr(middle, end) < 40
        assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(clips[0], clips[1])]) < 2.0
        gen = second["generation"]
        assert gen["device"].startswith("cuda") and gen["dtype"] == "bfloat16" and gen["reused"] is True
        assert gen["generated_frames"] == 17 and gen["temporal_resample"] == "nearest"
        assert (gen["generated_width"], gen["generated_height"]) == (W, H)
        assert gen["steps_completed"] == 20 and gen["peak_vram_mb"] > 10_000
        assert "vae_tiling" in gen["applied_memory_options"]
        meta = store.get(second["video"]["uri"]).metadata
        assert meta["peak_vram_mb"] == gen["peak_vram_mb"] and meta["backend"] == "wan2.1-flf2v"
    finally:
        store.close()
