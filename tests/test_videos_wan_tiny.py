"""videos_wan `wan2.1-flf2v` on CPU with a tiny random-weight Wan2.1 FLF2V model.

The tool runs as a real process with a profile pointing the GPU backend at a
tiny model directory built from configs (tests/tiny_models/wan.py), so requests
flow through exactly the diffusers/model_context/ffmpeg code a GPU user runs;
the frames are noise.  Clips are checked by decoding them with PyAV.  The OOM
cases use the backend's documented test hook (``options.simulate_oom``), which
raises torch's own OutOfMemoryError at the pipeline-call boundary.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

pytest.importorskip("diffusers", reason="the GPU extra (torch, diffusers) is not installed: pip install -e '.[gpu]'")

import av
from filelock import FileLock, Timeout
from tiny_models.wan import build_tiny_wan_flf2v

from function_tools.images_sdxl.scene import describe_scene
from function_tools.images_sdxl.storyboard import render_frame
from function_tools.videos_wan.models import VideosWanRequest
from function_tools.videos_wan.diffusion import (
    StepProgress,
    aligned_generation_size,
    model_frame_count,
    resample_frames,
    resolve_resample_mode,
    shrunk_size,
    temporal_positions,
    text_prompt,
)
from function_tools.videos_wan.wan import (
    RenderSpec,
    SimulatedOom,
    WanOptions,
    chunk_anchor_frames,
    make_loader,
    next_chunk_count,
    render_flf2v,
)
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.errors import ConfigError
from sparkle_motion.testing import RunningTool, free_port, project_path, running_tool

pytestmark = pytest.mark.xdist_group("videos_wan_tiny")

SIDE = 64
INPUTS = "wan-inputs"
RUN = "wan-test"
BASE_OPTIONS: dict[str, Any] = {
    "device": "cpu", "dtype": "float32", "steps": 2, "guidance": 5.0, "max_sequence_length": 16,
    "keep_warm_s": 600, "lock_timeout_s": 5, "max_model_frames": 9,
}


# --------------------------------------------------------------------------- pure functions

@pytest.mark.parametrize(("shot", "expected"), [
    (2, 5), (5, 5), (6, 5), (7, 9), (8, 9), (9, 9), (11, 13), (16, 17), (24, 25), (81, 81), (82, 81), (200, 81),
])
def test_wan_frame_count_is_the_nearest_4k_plus_1_capped(shot: int, expected: int) -> None:
    count = model_frame_count(shot, temporal_factor=4, max_frames=81)
    assert count == expected and count % 4 == 1
    assert model_frame_count(40, temporal_factor=4, max_frames=None) == 41
    assert model_frame_count(30, temporal_factor=4, max_frames=23) == 21        # the cap itself rounds down to 4k+1
    with pytest.raises(ValueError):
        model_frame_count(0, temporal_factor=4, max_frames=81)


def test_generation_size_is_aligned_and_capped() -> None:
    assert aligned_generation_size(1280, 720, 16) == (1280, 720)
    assert aligned_generation_size(100, 66, 16) == (96, 64)
    assert aligned_generation_size(1920, 1080, 16, max_area=1280 * 720) == (1280, 720)
    w, h = aligned_generation_size(2048, 2048, 16, max_area=1280 * 720)
    assert w % 16 == h % 16 == 0 and w * h <= 1280 * 720 and w == h
    assert aligned_generation_size(8, 8, 16) == (16, 16)
    assert shrunk_size(128, 128, 16) == (80, 80)
    assert shrunk_size(16, 16, 16) is None


def test_temporal_resampling_keeps_both_ends_and_blends_linearly() -> None:
    source = np.arange(9, dtype=np.float32).reshape(9, 1, 1, 1) * np.ones((1, 2, 2, 3), np.float32)
    assert temporal_positions(9, 17)[[0, -1]].tolist() == [0.0, 8.0]
    linear = resample_frames(source, 17, "linear")
    assert linear.shape == (17, 2, 2, 3)
    assert np.allclose(linear[:, 0, 0, 0], np.arange(17) * 0.5)     # exact midpoints between frames
    nearest = resample_frames(source, 11, "nearest")
    assert nearest[0, 0, 0, 0] == 0 and nearest[-1, 0, 0, 0] == 8
    assert set(nearest[:, 0, 0, 0].tolist()) <= set(range(9)) and len(set(nearest[:, 0, 0, 0].tolist())) == 9
    dropped = resample_frames(source, 7, "nearest")[:, 0, 0, 0].tolist()
    assert dropped[0] == 0 and dropped[-1] == 8 and dropped == sorted(dropped)
    as_uint8 = resample_frames((source * 10).astype(np.uint8), 17, "linear")
    assert as_uint8.dtype == np.uint8 and as_uint8[1, 0, 0, 0] == 5
    assert resample_frames(source, 9, "none") is source
    assert resolve_resample_mode("auto", 9, 11, 4) == "nearest"       # the 4k+1 rounding: drop/repeat a frame
    assert resolve_resample_mode("auto", 81, 160, 4) == "linear"      # stretched past the model cap: blend
    assert resolve_resample_mode("nearest", 81, 160, 4) == "nearest"
    assert resolve_resample_mode("auto", 9, 9, 4) == "none"


def test_chunk_plan_and_options() -> None:
    assert [chunk_anchor_frames(c) for c in (2, 4, 8)] == [5, 5, 9]
    assert [next_chunk_count(c) for c in (1, 2, 4, 8)] == [2, 4, 8, None]
    assert SimulatedOom.parse("inference").fires(16, 16, 5)
    assert not SimulatedOom.parse({"stage": "inference", "min_area": 4096}).fires(32, 32, 9)
    with pytest.raises(ConfigError) as bad_policy:
        WanOptions.from_profile({"oom_policy": "retry"})
    assert bad_policy.value.field == "options.oom_policy"
    with pytest.raises(ConfigError) as unknown:
        WanOptions.from_profile({"stepz": 3})
    assert unknown.value.field == "options"
    assert WanOptions.from_profile({}).memory.vae_tiling is True
    with pytest.raises(ConfigError) as bad_dtype:
        WanOptions.from_profile({"vae_dtype": "fp8"})
    assert bad_dtype.value.field == "options.vae_dtype"
    with pytest.raises(ConfigError) as attention:
        WanOptions.from_profile({"memory": {"attention": "sdpa"}})
    assert attention.value.field == "options.memory.attention"
    request = VideosWanRequest(start_frame_uri="a", end_frame_uri="b", num_frames=9, prompt="rain stops.",
                               motion_prompt="slow push in")
    assert text_prompt(request) == "rain stops. Camera: slow push in"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-wan")
    return {"a": build_tiny_wan_flf2v(root / "seed0", seed=0), "b": build_tiny_wan_flf2v(root / "seed1", seed=1)}


def write_profile(home: Path, model: Path, **options: Any) -> Path:
    profile = yaml.safe_load(project_path("configs/profiles/gpu.yaml").read_text())
    profile["name"] = "gpu-tiny-wan"
    profile["tools"]["videos_wan"] = {"backend": "wan2.1-flf2v", "model": str(model), "port": free_port(),
                                      "options": {**BASE_OPTIONS, **options}}
    path = home / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def start(home: Path, model: Path, **options: Any):  # -> context manager yielding RunningTool
    env = {"SPARKLE_PROFILE": str(write_profile(home, model, **options)), "HF_HUB_OFFLINE": "1",
           "SPARKLE_TOKEN": None}
    return running_tool("videos_wan", home=home, env=env, ready_timeout=120)


def keyframe(prompt: str, size: int = SIDE) -> Image.Image:
    return render_frame(prompt, 3, size, size, scene=describe_scene(prompt), characters=["Maya"]).convert("RGB")


def put_png(store: ArtifactStore, image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return store.put(INPUTS, "keyframes", "image", buf.getvalue(), "image/png", ext=".png").uri


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wan-home")


@pytest.fixture(scope="module")
def store(home: Path) -> Iterator[ArtifactStore]:
    s = ArtifactStore(home)
    yield s
    s.close()


@pytest.fixture(scope="module")
def frames(store: ArtifactStore) -> dict[str, str]:
    return {"start": put_png(store, keyframe("A neon city street at night in the rain")),
            "end": put_png(store, keyframe("A quiet beach at sunset with palm trees"))}


@pytest.fixture(scope="module")
def active_model(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The profile's model path: a symlink the eviction test points at another checkpoint."""
    link = tmp_path_factory.mktemp("wan-active") / "model"
    link.symlink_to(tiny_models["a"], target_is_directory=True)
    return link


@pytest.fixture(scope="module")
def tool(home: Path, active_model: Path) -> Iterator[RunningTool]:
    # shrink policy; the hook runs out of memory for any generation of 128x128 or more.
    with start(home, active_model, oom_policy="shrink",
               simulate_oom={"stage": "inference", "min_area": 128 * 128}) as running:
        yield running


def invoke(tool: RunningTool, expect: int = 200, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    reply = tool.client.post("/invoke", json=payload, timeout=120)
    assert reply.status_code == expect, reply.text
    return reply.json()


def decode(store: ArtifactStore, uri: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    with av.open(str(store.path_for(uri))) as container:
        stream = container.streams.video[0]
        info = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "rate": stream.average_rate, "width": stream.codec_context.width,
                "height": stream.codec_context.height}
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return decoded, info


# --------------------------------------------------------------------------- HTTP

def test_clip_has_the_exact_geometry_frames_and_rate(tool: RunningTool, store: ArtifactStore,
                                                    frames: dict[str, str]) -> None:
    body = invoke(tool, start_frame_uri=frames["start"], end_frame_uri=frames["end"], num_frames=11, fps=12,
                  prompt="the rain stops", motion_prompt="slow push in", seed=3)
    decoded, info = decode(store, body["video"]["uri"])
    assert len(decoded) == 11 and (info["width"], info["height"]) == (SIDE, SIDE)
    assert info["rate"] == Fraction(12) and info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    gen = body["generation"]
    assert gen["generated_frames"] == 9 and gen["temporal_resample"] == "nearest"
    assert (gen["generated_width"], gen["generated_height"]) == (SIDE, SIDE)
    assert gen["steps"] == 2 and gen["steps_completed"] == 2 and gen["passes"] == 1
    assert gen["device"] == "cpu" and gen["dtype"] == "float32" and gen["inference_s"] > 0
    assert "vae_tiling" in gen["applied_memory_options"] and gen["oom_events"] == []
    assert gen["text_prompt"] == "the rain stops. Camera: slow push in"
    assert body["warnings"] == [] and body["ignored_options"] == []
    meta = store.get(body["video"]["uri"]).metadata
    assert meta["backend"] == "wan2.1-flf2v" and meta["seed"] == 3 and meta["steps"] == 2
    assert meta["model_id"].endswith("model") and meta["device"] == "cpu" and meta["inference_s"] > 0
    assert meta["generation"]["model_key"] == gen["model_key"]
    # Upstream FLF2V sampling (the backend's defaults): UniPC at shift 16, read off the pipeline that ran.
    assert gen["scheduler"] == "UniPCMultistepScheduler" and gen["flow_shift"] == 16.0
    assert meta["sampler"] == {"scheduler": "UniPCMultistepScheduler", "flow_shift": 16.0, "steps": 2,
                               "guidance_scale": 5.0, "negative_prompt": gen["negative_prompt"]}
    assert gen["negative_prompt"].startswith("shot cut, scene change")
    step_logs = [r for r in tool.log_records() if r.get("event") == "wan.step"]
    assert [r["step"] for r in step_logs[-2:]] == [1, 2]

    # Past the model's frame cap (9 here): rendered at 9 frames, blended up to the shot's 20.
    long = invoke(tool, start_frame_uri=frames["start"], end_frame_uri=frames["end"], duration_s=2.5, fps=8,
                  seed=3)
    decoded, info = decode(store, long["video"]["uri"])
    assert len(decoded) == 20 and info["rate"] == Fraction(8)
    assert long["generation"]["generated_frames"] == 9 and long["generation"]["temporal_resample"] == "linear"


def test_same_seed_same_frames_and_the_warm_model_is_reused(tool: RunningTool, store: ArtifactStore,
                                                            frames: dict[str, str]) -> None:
    request = {"start_frame_uri": frames["start"], "end_frame_uri": frames["end"], "num_frames": 9, "seed": 41,
               "prompt": "waves"}
    first = invoke(tool, **request)
    second = invoke(tool, **request)
    other = invoke(tool, **{**request, "seed": 42})
    a, _ = decode(store, first["video"]["uri"])
    b, _ = decode(store, second["video"]["uri"])
    c, _ = decode(store, other["video"]["uri"])
    assert len(a) == len(b) == 9 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))       # the seed drives the noise
    assert second["generation"]["reused"] is True and second["generation"]["load_s"] == 0
    assert second["generation"]["load_count"] == first["generation"]["load_count"] == 1


def test_identical_keyframes_are_warned_about(tool: RunningTool, store: ArtifactStore,
                                              frames: dict[str, str]) -> None:
    body = invoke(tool, start_frame_uri=frames["start"], end_frame_uri=frames["start"], num_frames=5, seed=1)
    assert len(body["warnings"]) == 1 and "identical" in body["warnings"][0]
    meta = store.get(body["video"]["uri"]).metadata
    assert meta["warnings"] == body["warnings"] and meta["keyframe_psnr_db"] is None   # infinite: the same pixels
    assert any(r.get("event") == "videos_wan.identical_keyframes" for r in tool.log_records())
    decoded, _ = decode(store, body["video"]["uri"])
    assert len(decoded) == 5


def test_oom_with_shrink_policy_is_recorded_and_succeeds(tool: RunningTool, store: ArtifactStore,
                                                         frames: dict[str, str]) -> None:
    body = invoke(tool, start_frame_uri=frames["start"], end_frame_uri=frames["end"], num_frames=9,
                  width=128, height=128, seed=5)
    gen = body["generation"]
    assert gen["oom_policy"] == "shrink"
    assert [(e["action"], e["size"], e["retry_size"]) for e in gen["oom_events"]] == [("shrink", [128, 128], [80, 80])]
    assert (gen["generated_width"], gen["generated_height"]) == (80, 80)
    decoded, info = decode(store, body["video"]["uri"])
    assert (info["width"], info["height"]) == (128, 128) and len(decoded) == 9   # resized back to the request
    assert store.get(body["video"]["uri"]).metadata["generation"]["oom_events"][0]["action"] == "shrink"


def test_a_different_model_key_evicts_the_warm_model(tool: RunningTool, store: ArtifactStore, frames: dict[str, str],
                                                     active_model: Path, tiny_models: dict[str, Path]) -> None:
    request = {"start_frame_uri": frames["start"], "end_frame_uri": frames["end"], "num_frames": 5, "seed": 9}
    on_a = invoke(tool, **request)
    try:
        active_model.unlink()
        active_model.symlink_to(tiny_models["b"], target_is_directory=True)   # a new checkpoint on disk
        on_b = invoke(tool, **request)
    finally:
        active_model.unlink()
        active_model.symlink_to(tiny_models["a"], target_is_directory=True)
    back_on_a = invoke(tool, **request)
    assert on_b["generation"]["model_key"] != on_a["generation"]["model_key"]
    assert on_b["generation"]["reused"] is False and on_b["generation"]["load_count"] == 1
    # A was evicted when B loaded, so returning to A loads it again.
    assert back_on_a["generation"]["model_key"] == on_a["generation"]["model_key"]
    assert back_on_a["generation"]["reused"] is False
    assert back_on_a["generation"]["load_count"] == on_a["generation"]["load_count"] + 1
    a, _ = decode(store, on_a["video"]["uri"])
    b, _ = decode(store, on_b["video"]["uri"])
    again, _ = decode(store, back_on_a["video"]["uri"])
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))            # other weights, other pixels
    assert all(np.array_equal(x, y) for x, y in zip(a, again))


def test_oom_with_chunk_policy_renders_anchored_chunks_or_fails_typed(tmp_path: Path,
                                                                     tiny_models: dict[str, Path]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    s = ArtifactStore(home)
    try:
        start_uri, end_uri = put_png(s, keyframe("a red door")), put_png(s, keyframe("a blue door"))
        # Any pipeline call of 13+ frames runs out of memory; one retry allowed.
        with start(home, tiny_models["a"], oom_policy="chunk", max_model_frames=81, guidance=1.0, oom_max_retries=1,
                   simulate_oom={"stage": "inference", "min_frames": 13}) as chunking:
            body = invoke(chunking, start_frame_uri=start_uri, end_frame_uri=end_uri, num_frames=17, seed=2)
            decoded, _ = decode(s, body["video"]["uri"])
            # 33 frames: 2 chunks of 17 frames still run out of memory → the typed error, twice (not a 503).
            for _ in range(2):
                failed = invoke(chunking, expect=507, start_frame_uri=start_uri, end_frame_uri=end_uri,
                                num_frames=33)
                error = failed["error"]
                assert error["code"] == "model_oom" and error["context"]["stage"] == "inference"
                assert error["context"]["oom_policy"] == "chunk" and "hint" in error["context"]
                assert [e["action"] for e in error["context"]["oom_events"]] == ["chunk", "fail"]
            assert_lock_free(home)
    finally:
        s.close()
    gen = body["generation"]
    assert [(e["action"], e["num_frames"], e["retry_chunks"]) for e in gen["oom_events"]] == [("chunk", 17, 2)]
    # anchors (5 frames) + 2 chunks of 9 frames joined on their shared frame = 17 frames
    assert gen["chunks"] == 2 and gen["passes"] == 3 and gen["steps_completed"] == 3 * 2
    assert gen["generated_frames"] == 17 and gen["temporal_resample"] == "none" and len(decoded) == 17


def assert_lock_free(home: Path) -> None:
    probe = FileLock(str(home / "locks" / "cpu.lock"))
    try:
        probe.acquire(timeout=0)
    except Timeout:
        pytest.fail("the device lock is still held after the OOM")
    probe.release()


# --------------------------------------------------------------------------- in process: conditioning

def test_both_keyframes_condition_the_pipeline(tiny_models: dict[str, Path], sparkle_home: Path) -> None:
    """Observed inside the transformer: the start keyframe fills the first latent frame, the end keyframe the last."""
    import torch

    from sparkle_motion.gpu_utils import LoadSpec, MemoryOptions

    options = WanOptions.from_profile(BASE_OPTIONS)
    pipe = make_loader(str(tiny_models["a"]), options)(LoadSpec(device="cpu", dtype="float32",
                                                               memory=MemoryOptions()))
    seen: dict[str, Any] = {}

    def grab_transformer_input(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen.setdefault("hidden", kwargs["hidden_states"].detach().clone())

    def grab_clip_input(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen["clip_images"] = kwargs["pixel_values"].shape[0]

    hooks = [pipe.transformer.register_forward_pre_hook(grab_transformer_input, with_kwargs=True),
             pipe.image_encoder.register_forward_pre_hook(grab_clip_input, with_kwargs=True)]
    start, end, other_end = keyframe("a red door"), keyframe("a blue sea"), keyframe("green hills at noon")
    spec = RenderSpec(width=SIDE, height=SIDE, num_frames=9, prompt="x", negative_prompt="", steps=1,
                      guidance_scale=1.0, seed=0, max_sequence_length=16)
    try:
        conditions = []
        for last in (end, other_end, end):
            seen.clear()
            clip = render_flf2v(pipe, start, last, spec, StepProgress(None))
            assert clip.shape == (9, SIDE, SIDE, 3) and seen["clip_images"] == 2
            conditions.append(seen["hidden"])
    finally:
        for hook in hooks:
            hook.remove()
    # channels: 16 noise latents | 4 mask | 16 VAE latents of [start, zeros..., end]
    mask, latent = conditions[0][:, 16:20], conditions[0][:, 20:]
    assert torch.all(mask[:, :, 0] == 1) and torch.all(mask[:, :, 1:-1] == 0)
    assert torch.all(mask[:, -1, -1] == 1)                              # the last pixel frame is given
    assert torch.equal(conditions[0], conditions[2])
    assert torch.equal(conditions[0][:, 20:, 0], conditions[1][:, 20:, 0])        # same start keyframe
    assert not torch.allclose(conditions[0][:, 20:, -1], conditions[1][:, 20:, -1])  # the end keyframe changed it
    assert math.isfinite(float(latent.abs().mean()))


def test_load_oom_hook_becomes_a_typed_load_error(tiny_models: dict[str, Path], sparkle_home: Path) -> None:
    from sparkle_motion.gpu_utils import ModelOOMError, model_context

    options = WanOptions.from_profile({**BASE_OPTIONS, "simulate_oom": "load"})
    with pytest.raises(ModelOOMError) as raised, \
            model_context("wan-load-oom-test", make_loader(str(tiny_models["a"]), options), device="cpu",
                          keep_warm_s=0):
        pytest.fail("the loader should have run out of memory")
    assert raised.value.stage == "load" and raised.value.http_status == 507


def test_fail_policy_raises_the_typed_oom_at_once(tiny_models: dict[str, Path], sparkle_home: Path) -> None:
    from function_tools.videos_wan.models import OomEvent
    from function_tools.videos_wan.wan import WanFlf2vBackend
    from sparkle_motion.config import ToolProfile, load_settings
    from sparkle_motion.gpu_utils import ModelOOMError, model_context
    from sparkle_motion.logs import get_logger

    profile = ToolProfile(backend="wan2.1-flf2v", model=str(tiny_models["a"]),
                          options={**BASE_OPTIONS, "oom_policy": "fail", "simulate_oom": "inference"})
    backend = WanFlf2vBackend(profile, load_settings())
    spec = RenderSpec(width=SIDE, height=SIDE, num_frames=5, prompt="x", negative_prompt="", steps=1,
                      guidance_scale=1.0, seed=0, max_sequence_length=16)
    events: list[OomEvent] = []
    progress = StepProgress(None)
    with pytest.raises(ModelOOMError) as raised, \
            model_context("wan-fail-policy-test", make_loader(profile.model, backend.options), device="cpu",
                          keep_warm_s=0) as handle:
        backend._render_with_policy(handle.model, handle, keyframe("a"), keyframe("b"), spec, 4, 16, progress,
                                    events, get_logger("test.videos_wan_tiny"))
    assert raised.value.stage == "inference" and raised.value.context["oom_policy"] == "fail"
    assert [e.action for e in events] == ["fail"] and progress.passes == 0
    assert_lock_free(sparkle_home)


# --------------------------------------------------------------------------- upstream FLF2V sampling

def test_gpu_profile_samples_like_upstream_flf2v() -> None:
    """configs/profiles/gpu.yaml: UniPC, flow shift 16, 50 steps, guidance 5.0, shot cuts in the negative prompt."""
    options = WanOptions.from_profile(
        dict(yaml.safe_load(project_path("configs/profiles/gpu.yaml").read_text())["tools"]["videos_wan"]["options"]))
    assert (options.scheduler, options.flow_shift, options.steps, options.guidance) == ("unipc", 16.0, 50, 5.0)
    assert "shot cut" in options.negative_prompt and "scene change" in options.negative_prompt
    with pytest.raises(ConfigError) as bad:
        WanOptions.from_profile({"scheduler": "ddim"})
    assert bad.value.field == "options.scheduler"


@pytest.mark.parametrize(("scheduler", "shift"), [("unipc", 16.0), ("unipc", 7.0), ("checkpoint", None)])
def test_the_pipeline_runs_the_configured_scheduler(tiny_models: dict[str, Path], sparkle_home: Path,
                                                    scheduler: str, shift: float | None) -> None:
    """After a tiny render, the scheduler the pipeline holds (and the timesteps it used) match the options."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    from function_tools.videos_wan.wan import sampler_record
    from sparkle_motion.gpu_utils import LoadSpec, MemoryOptions

    options = WanOptions.from_profile({**BASE_OPTIONS, "scheduler": scheduler, "flow_shift": shift or 16.0})
    pipe = make_loader(str(tiny_models["a"]), options)(LoadSpec(device="cpu", dtype="float32",
                                                               memory=MemoryOptions()))
    seen: list[float] = []
    pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(float(kwargs["timestep"].flatten()[0])), with_kwargs=True)
    spec = RenderSpec(width=32, height=32, num_frames=5, prompt="x", negative_prompt="", steps=3,
                      guidance_scale=1.0, seed=0, max_sequence_length=16)
    render_flf2v(pipe, keyframe("a red door", 32), keyframe("a blue sea", 32), spec, StepProgress(None))
    config = pipe.scheduler.config
    if scheduler == "checkpoint":
        assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and config.shift == 3.0
        assert sampler_record(pipe) == {"scheduler": "FlowMatchEulerDiscreteScheduler", "flow_shift": 3.0}
        return
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert config.flow_shift == shift and config.use_flow_sigmas and config.prediction_type == "flow_prediction"
    assert sampler_record(pipe) == {"scheduler": "UniPCMultistepScheduler", "flow_shift": shift}
    # The timesteps the transformer saw are UniPC's at this shift, not the checkpoint's.
    reference = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)
    reference.set_timesteps(3)
    assert seen == pytest.approx([float(t) for t in reference.timesteps])
    unshifted = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=1.0)
    unshifted.set_timesteps(3)
    assert seen[1] > float(unshifted.timesteps[1])    # a larger shift keeps the schedule noisier for longer
