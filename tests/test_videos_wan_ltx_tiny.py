"""videos_wan `ltx-video` on CPU with a tiny random-weight LTX-Video pipeline.

The tool runs as a real process with a profile (configs/profiles/gpu-24gb.yaml,
videos_wan pointed at a tiny model directory built from configs by
tests/tiny_models/ltx.py), so requests go through exactly the diffusers /
model_context / ffmpeg code a GPU user runs; the frames are noise.  Clips are
decoded with PyAV.  The conditioning test runs in process and watches the
pipeline's VAE and transformer through forward hooks.
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
from PIL import Image

pytest.importorskip("diffusers", reason="the GPU extra (torch, diffusers) is not installed: pip install -e '.[gpu]'")

import av
from tiny_models.ltx import build_tiny_ltx_video

from function_tools.videos_wan.diffusion import StepProgress
from function_tools.videos_wan.ltx import LtxOptions, LtxRenderSpec, make_loader, render_ltx
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.errors import ConfigError
from sparkle_motion.testing import RunningTool, free_port, project_path, running_tool

pytestmark = pytest.mark.xdist_group("videos_wan_tiny")

RUN = "ltx-test"
BASE_OPTIONS: dict[str, Any] = {
    "device": "cpu", "dtype": "float32", "steps": 2, "guidance": 3.0, "max_sequence_length": 16,
    "keep_warm_s": 600, "lock_timeout_s": 5, "max_model_frames": 17, "timesteps": None,
}


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_ltx_video(tmp_path_factory.mktemp("tiny-ltx") / "model")


def gradient(colour: tuple[int, int, int], side: int = 64) -> Image.Image:
    ramp = np.linspace(0.2, 1.0, side, dtype=np.float32)[None, :, None] * np.ones((side, 1, 1), np.float32)
    return Image.fromarray((ramp * np.array(colour, np.float32)).astype(np.uint8))


def put_png(store: ArtifactStore, image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return store.put("ltx-inputs", "keyframes", "image", buf.getvalue(), "image/png", ext=".png").uri


def write_profile(home: Path, model: Path, **options: Any) -> Path:
    profile = yaml.safe_load(project_path("configs/profiles/gpu-24gb.yaml").read_text())
    entry = profile["tools"]["videos_wan"]
    assert entry["backend"] == "ltx-video"
    profile["name"] = "gpu-24gb-tiny-ltx"
    entry.update(model=str(model), port=free_port(),
                 options={**entry["options"], "memory": {"vae_tiling": False}, **BASE_OPTIONS, **options})
    path = home / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ltx-home")


@pytest.fixture(scope="module")
def store(home: Path) -> Iterator[ArtifactStore]:
    s = ArtifactStore(home)
    yield s
    s.close()


@pytest.fixture(scope="module")
def frames(store: ArtifactStore) -> dict[str, str]:
    return {"start": put_png(store, gradient((255, 60, 0))), "end": put_png(store, gradient((0, 80, 255)))}


@pytest.fixture(scope="module")
def tool(home: Path, tiny_ltx: Path) -> Iterator[RunningTool]:
    env = {"SPARKLE_PROFILE": str(write_profile(home, tiny_ltx)), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None}
    with running_tool("videos_wan", home=home, env=env, ready_timeout=120) as running:
        yield running


def invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    reply = tool.client.post("/invoke", json=payload, timeout=180)
    assert reply.status_code == 200, reply.text
    return reply.json()


def decode(store: ArtifactStore, uri: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    with av.open(str(store.path_for(uri))) as container:
        stream = container.streams.video[0]
        info = {"rate": stream.average_rate, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "codec": stream.codec_context.name}
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], info


# --------------------------------------------------------------------------- options and profile

def test_the_24gb_profile_runs_a_distilled_ltx_checkpoint() -> None:
    profile = yaml.safe_load(project_path("configs/profiles/gpu-24gb.yaml").read_text())
    entry = profile["tools"]["videos_wan"]
    assert entry["backend"] == "ltx-video" and "distilled" in entry["model"]
    options = LtxOptions.from_profile(dict(entry["options"]))
    assert options.guidance == 1.0 and options.timesteps and len(options.timesteps) == 8   # distilled schedule
    assert options.memory.plan == "auto" and not options.memory.cpu_offload   # the card's size decides
    assert set(profile["tools"]) == set(yaml.safe_load(project_path("configs/profiles/gpu.yaml").read_text())["tools"])


@pytest.mark.parametrize(("options", "field"), [
    ({"timesteps": [1, 5]}, "options.timesteps"), ({"fp8_storage": "yes"}, "options.fp8_storage"),
    ({"keyframe_strength": 2}, "options.keyframe_strength"), ({"flow_shift": 3}, "options"),
])
def test_bad_options_name_their_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        LtxOptions.from_profile(options)
    assert raised.value.field == field


# --------------------------------------------------------------------------- HTTP

def test_clip_has_the_plans_frames_and_size_from_an_8k_plus_1_render(tool: RunningTool, store: ArtifactStore,
                                                                     frames: dict[str, str]) -> None:
    body = invoke(tool, start_frame_uri=frames["start"], end_frame_uri=frames["end"], num_frames=14, fps=12,
                  width=80, height=70, prompt="the sun sets", seed=4)
    decoded, info = decode(store, body["video"]["uri"])
    assert len(decoded) == 14 and (info["width"], info["height"]) == (80, 70)
    assert info["rate"] == Fraction(12) and info["codec"] == "h264"
    gen = body["generation"]
    # 14 frames → the nearest 8k+1 is 17; 80x70 → multiples of 32 (96x64), resized back to 80x70.
    assert gen["generated_frames"] == 17 and gen["temporal_resample"] == "nearest"
    assert (gen["generated_width"], gen["generated_height"]) == (96, 64)
    assert gen["conditioning_frames"] == [0, 16]
    assert gen["steps"] == gen["steps_completed"] == 2 and gen["passes"] == 1
    assert gen["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    meta = store.get(body["video"]["uri"]).metadata
    assert meta["backend"] == "ltx-video" and meta["model"] == meta["model_id"] and meta["seed"] == 4
    assert meta["sampler"]["keyframe_strength"] == 1.0 and meta["sampler"]["steps"] == 2
    steps = [r for r in tool.log_records() if r.get("event") == "ltx.step"]
    assert [r["step"] for r in steps[-2:]] == [1, 2] and steps[-1]["of"] == 2

    # Past the frame cap (17): rendered at 17 frames, blended up to the shot's 30.
    long = invoke(tool, start_frame_uri=frames["start"], end_frame_uri=frames["end"], num_frames=30, fps=24,
                  seed=4)
    decoded, info = decode(store, long["video"]["uri"])
    assert len(decoded) == 30 and (info["width"], info["height"]) == (64, 64)
    assert long["generation"]["generated_frames"] == 17 and long["generation"]["temporal_resample"] == "linear"


def test_a_seed_gives_the_same_clip(tool: RunningTool, store: ArtifactStore, frames: dict[str, str]) -> None:
    request = {"start_frame_uri": frames["start"], "end_frame_uri": frames["end"], "num_frames": 9, "seed": 11}
    first, second = invoke(tool, **request), invoke(tool, **request)
    other = invoke(tool, **{**request, "seed": 12})
    a, b, c = (decode(store, body["video"]["uri"])[0] for body in (first, second, other))
    assert len(a) == 9 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    assert second["generation"]["reused"] is True and second["generation"]["load_count"] == 1


# --------------------------------------------------------------------------- in process: conditioning

def test_both_keyframes_reach_the_pipeline_at_the_first_and_last_frame(tiny_ltx: Path, sparkle_home: Path) -> None:
    """The VAE encodes exactly the two keyframes; the end keyframe adds tokens placed at the last frame."""
    import torch

    from sparkle_motion.gpu_utils import LoadSpec, MemoryOptions

    options = LtxOptions.from_profile({**BASE_OPTIONS, "memory": {"vae_tiling": False}})
    pipe = make_loader(str(tiny_ltx), options)(LoadSpec(device="cpu", dtype="float32", memory=MemoryOptions()))
    encoded: list[torch.Tensor] = []
    tokens: list[tuple[int, torch.Tensor]] = []
    hooks = [
        pipe.vae.encoder.register_forward_pre_hook(lambda m, args: encoded.append(args[0].detach().clone())),
        pipe.transformer.register_forward_pre_hook(
            lambda m, args, kwargs: tokens.append((kwargs["hidden_states"].shape[1],
                                                   kwargs["video_coords"].detach().clone())), with_kwargs=True),
    ]
    spec = LtxRenderSpec(width=64, height=64, num_frames=17, frame_rate=24, prompt="x", negative_prompt="",
                         steps=1, guidance_scale=1.0, seed=0)
    start, end, other_end = gradient((255, 0, 0)), gradient((0, 0, 255)), gradient((0, 255, 0))
    try:
        clips = []
        for last in (end, other_end):
            encoded.clear()
            tokens.clear()
            clips.append(render_ltx(pipe, start, last, spec, options, StepProgress(None)))
            assert len(encoded) == 2 and all(x.shape[2] == 1 for x in encoded)   # one image each
            expected = [pipe.video_processor.preprocess(image, 64, 64) for image in (start, last)]
            for seen, want in zip(encoded, expected):
                assert torch.allclose(seen[:, :, 0], want, atol=1e-5)
    finally:
        for hook in hooks:
            hook.remove()
    latent_tokens = 3 * 2 * 2            # (17-1)/8+1 latent frames of 2x2 cells (64 px / 32)
    count, coords = tokens[0]
    assert count == latent_tokens + 2 * 2    # the end keyframe's latent frame joins as extra tokens (in front)
    # Their time coordinate is the last frame's (pixel frames / frame_rate); the video itself starts at 0.
    extra_t = coords[0, 0, :4]
    assert torch.allclose(extra_t, torch.full_like(extra_t, 16 / 24), atol=1e-4)
    assert float(coords[0, 0, 4]) == 0.0 and float(coords[0, 0, -1]) < 16 / 24
    assert clips[0].shape == (17, 64, 64, 3) and not np.allclose(clips[0], clips[1])   # the end keyframe matters


def test_fp8_storage_and_the_distilled_schedule_render_with_progress(tiny_ltx: Path, sparkle_home: Path) -> None:
    """fp8 layerwise casting is installed; the distilled 8-timestep list runs 8 steps, each reported."""
    from sparkle_motion.gpu_utils import LoadSpec, MemoryOptions

    distilled = yaml.safe_load(project_path("configs/profiles/gpu-24gb.yaml").read_text())[
        "tools"]["videos_wan"]["options"]["timesteps"]
    options = LtxOptions.from_profile({**BASE_OPTIONS, "fp8_storage": True, "memory": {"vae_tiling": False},
                                       "timesteps": distilled})
    spec = LoadSpec(device="cpu", dtype="float32", memory=MemoryOptions())
    pipe = make_loader(str(tiny_ltx), options)(spec)
    assert "layerwise_casting_fp8" in spec.applied_memory_options
    import torch

    stored = {p.dtype for p in pipe.transformer.transformer_blocks.parameters()}
    assert torch.float8_e4m3fn in stored
    reported: list[tuple[int, int, str]] = []
    progress = StepProgress(None, report=lambda step, total, phase: reported.append((step, total, phase)))
    progress.begin("full")
    clip = render_ltx(pipe, gradient((255, 0, 0)), gradient((0, 0, 255)),
                      LtxRenderSpec(width=64, height=64, num_frames=9, frame_rate=24, prompt="x", negative_prompt="",
                                    steps=1, guidance_scale=1.0, seed=0), options, progress)
    assert clip.shape == (9, 64, 64, 3) and np.isfinite(clip).all()
    assert reported == [(step, 8, "full") for step in range(1, 9)] and progress.steps_completed == 8
