"""images_sdxl `sdxl` over HTTP with a tiny random-weight SDXL (base + refiner) on CPU.

The tool process loads the tiny checkpoint through StableDiffusionXLPipeline.from_pretrained
and runs real diffusion (2 steps at 64x64): the pixels are noise, the plumbing is the
production path.  PNGs are decoded with Pillow from the stored files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers", reason="the sdxl backend needs the [gpu] extra (diffusers, torch)")

from sparkle_motion.artifacts import ArtifactStore  # noqa: E402
from sparkle_motion.testing import RunningTool, running_tool  # noqa: E402
from tiny_models import write_gpu_profile  # noqa: E402
from tiny_models.sdxl import build_tiny_sdxl  # noqa: E402

pytestmark = pytest.mark.xdist_group("images_sdxl_tiny")

RUN = "sdxl-tiny"
TINY_OPTIONS = {"device": "cpu", "dtype": "float32", "steps": 2, "keep_warm_s": 600, "lock_timeout_s": 0,
                # the tiny model runs at the requested size, not at a 1-megapixel SDXL bucket
                "native_buckets": False}


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-sdxl")
    build_tiny_sdxl(root / "base", root / "refiner")
    return root / "base", root / "refiner"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdxl-home")


def _start(home: Path, profile: Path) -> Any:
    return running_tool("images_sdxl", home=home, ready_timeout=120,
                        env={"SPARKLE_PROFILE": str(profile), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None,
                             "SPARKLE_IMAGES_SDXL_BACKEND": None})


@pytest.fixture(scope="module")
def tool(home: Path, tiny_sdxl: tuple[Path, Path]) -> Iterator[RunningTool]:
    base, refiner = tiny_sdxl
    profile = write_gpu_profile(home / "profile.yaml", "images_sdxl", model=str(base),
                                options={**TINY_OPTIONS, "refiner_model": str(refiner)})
    with _start(home, profile) as running:
        yield running


@pytest.fixture(scope="module")
def store(home: Path) -> Iterator[ArtifactStore]:
    s = ArtifactStore(home)
    yield s
    s.close()


def invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    payload.setdefault("width", 64)
    payload.setdefault("height", 64)
    reply = tool.client.post("/invoke", json=payload, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def decoded(store: ArtifactStore, image: dict[str, Any]) -> tuple[np.ndarray, dict[str, str]]:
    path = store.path_for(image["artifact"]["uri"])
    with Image.open(path) as png:
        assert png.format == "PNG"
        return np.asarray(png.convert("RGB")), dict(png.text)


def gpu_meta(store: ArtifactStore, image: dict[str, Any]) -> dict[str, Any]:
    return store.get(image["artifact"]["uri"]).metadata["gpu"]


def test_images_decode_with_requested_geometry_and_provenance(tool: RunningTool, store: ArtifactStore,
                                                              tiny_sdxl: tuple[Path, Path]) -> None:
    body = invoke(tool, prompt="a lighthouse at dusk", prompt_2="oil painting", negative_prompt="blurry",
                  seed=7, count=2, width=96, height=64, guidance_scale=4.0, scheduler="DPMSolverMultistep")
    assert body["backend"] == "sdxl" and body["model"] == str(tiny_sdxl[0])
    assert (body["width"], body["height"]) == (96, 64)
    assert [img["seed"] for img in body["images"]] == [7, 8]
    arrays = []
    for img in body["images"]:
        pixels, text = decoded(store, img)
        assert pixels.shape == (64, 96, 3) and pixels.dtype == np.uint8
        assert pixels.std() > 1.0  # decoded latents, not a constant fill
        params = json.loads(text["parameters"])
        assert text["seed"] == str(img["seed"]) and params["seed"] == img["seed"]
        assert params["steps"] == 2 and params["guidance_scale"] == 4.0 and params["scheduler"] == "DPMSolverMultistep"
        assert params["prompt_2"] == "oil painting" and params["original_size"] == [64, 96]
        arrays.append(pixels)
        meta = store.get(img["artifact"]["uri"]).metadata
        assert meta["backend"] == "sdxl" and meta["seed"] == img["seed"] and meta["steps"] == 2
        gpu = meta["gpu"]
        assert gpu["device"] == "cpu" and gpu["dtype"] == "float32" and gpu["inference_s"] > 0
        assert "vae_tiling" in gpu["applied_memory_options"]  # the gpu profile asks for it; the VAE supports it
        assert "peak_vram_mb" not in gpu and gpu["process_peak_rss_mb"] > 0
    assert not np.array_equal(arrays[0], arrays[1])  # consecutive seeds, different noise
    assert body["timings"]["inference_s"] > 0


def test_same_seed_same_pixels_and_warm_reuse(tool: RunningTool, store: ArtifactStore) -> None:
    first = invoke(tool, prompt="a red kite over dunes", seed=123)
    second = invoke(tool, prompt="a red kite over dunes", seed=123)
    third = invoke(tool, prompt="a red kite over dunes", seed=124)
    a, b, c = (decoded(store, body["images"][0])[0] for body in (first, second, third))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    g2 = gpu_meta(store, second["images"][0])
    assert g2["reused"] is True and g2["load_s"] == 0.0 and g2["load_count"] == 1
    assert g2["model_key"].startswith("sdxl:") and "+refiner" not in g2["model_key"]


def test_refiner_request_evicts_the_base_key_and_then_serves_plain_requests(tool: RunningTool,
                                                                            store: ArtifactStore) -> None:
    plain = invoke(tool, prompt="warm the base", seed=1)
    base_key = gpu_meta(store, plain["images"][0])["model_key"]
    refined = invoke(tool, prompt="a castle", seed=5, use_refiner=True, refiner_high_noise_frac=0.5, steps=4)
    gpu = gpu_meta(store, refined["images"][0])
    assert gpu["model_key"].startswith(base_key + "+refiner:") and gpu["reused"] is False
    assert gpu["evicted"] == base_key and gpu["load_count"] == 1
    pixels, text = decoded(store, refined["images"][0])
    assert pixels.shape == (64, 64, 3)
    assert json.loads(text["parameters"])["refiner_high_noise_frac"] == 0.5
    # The warm base+refiner serves a plain request without reloading anything.
    after = gpu_meta(store, invoke(tool, prompt="plain again", seed=2)["images"][0])
    assert after["model_key"] == gpu["model_key"] and after["reused"] is True and after["evicted"] is None


def test_unknown_scheduler_is_a_422_naming_the_field(tool: RunningTool) -> None:
    reply = tool.client.post("/invoke", json={"prompt": "x", "width": 64, "height": 64, "scheduler": "Nope"})
    assert reply.status_code == 422
    assert reply.json()["error"]["field"] == "scheduler"


def test_busy_device_is_503_with_retry_after(tool: RunningTool, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkle_motion.gpu_utils import device_lock

    monkeypatch.setenv("SPARKLE_HOME", str(home))
    with device_lock("cpu"):  # this test process holds the tool's device
        reply = tool.client.post("/invoke", json={"prompt": "x", "width": 64, "height": 64, "run_id": RUN})
    assert reply.status_code == 503 and int(reply.headers["Retry-After"]) >= 1
    assert reply.json()["error"]["code"] == "device_busy"
    invoke(tool, prompt="after the lock", seed=3)  # free again → served


def test_simulated_oom_at_load_is_typed_and_frees_the_lock(tmp_path: Path, tiny_sdxl: tuple[Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkle_motion.gpu_utils import device_lock_is_free

    profile = write_gpu_profile(tmp_path / "oom.yaml", "images_sdxl", model=str(tiny_sdxl[0]),
                                options={**TINY_OPTIONS, "simulate_oom": "load"})
    with _start(tmp_path, profile) as running:
        reply = running.client.post("/invoke", json={"prompt": "x", "width": 64, "height": 64}, timeout=60)
        assert reply.status_code == 507, reply.text
        error = reply.json()["error"]
        assert error["code"] == "model_oom" and error["context"]["stage"] == "load"
        assert "cpu_offload" in error["context"]["hint"] and "memory" in error["context"]
        monkeypatch.setenv("SPARKLE_HOME", str(tmp_path))
        assert device_lock_is_free("cpu")
        assert running.client.get("/ready").status_code == 200  # the process stays up and answers



def test_native_buckets_generate_at_the_bucket_and_crop_to_the_frame(home: Path, store: ArtifactStore,
                                                                     tiny_sdxl: tuple[Path, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The bucket path in-process, with the buckets shrunk so the tiny model runs them in seconds on CPU."""
    from function_tools.images_sdxl.sdxl import SdxlBackend
    from function_tools.images_sdxl.service import SPEC
    from sparkle_motion.config import load_settings
    from sparkle_motion.logs import get_logger
    from sparkle_motion.media import geometry
    from sparkle_motion.services.context import ToolContext

    monkeypatch.setattr(geometry, "SDXL_BUCKETS", ((64, 64), (48, 80), (80, 48)))
    profile_path = write_gpu_profile(home / "buckets.yaml", "images_sdxl", model=str(tiny_sdxl[0]),
                                     options={**TINY_OPTIONS, "native_buckets": True})
    settings = load_settings({"SPARKLE_PROFILE": str(profile_path), "SPARKLE_HOME": str(home)})
    profile = settings.tool_profile("images_sdxl")
    backend = SdxlBackend(profile, settings)
    backend.load()
    ctx = ToolContext(tool_id="images_sdxl", tool_version=SPEC.version, backend=profile.backend, model=profile.model,
                      options=profile.options, settings=settings, store=store, request_id="buckets",
                      log=get_logger("test"))
    response = backend.invoke(SPEC.request_model.model_validate(
        {"prompt": "a dancer", "width": 72, "height": 128, "seed": 3, "run_id": RUN}), ctx)
    assert (response.width, response.height) == (72, 128)
    pixels, text = decoded(store, {"artifact": {"uri": response.images[0].artifact.uri}})
    params = json.loads(text["parameters"])
    assert pixels.shape == (128, 72, 3)  # the film's 9:16-ish frame, not the bucket
    assert params["generated_size"] == [48, 80] and params["target_size"] == [80, 48]  # tall bucket, (h, w)
