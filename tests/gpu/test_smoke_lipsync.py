"""Real-weight smoke test of the lipsync_wav2lip `wav2lip` backend: a real Wav2Lip checkout on a CUDA GPU.

Runs only with ``SMOKE_LIPSYNC=1``, a CUDA device, and a checkout, checkpoint
and face detector on disk. Paths come from the ``gpu`` profile
(configs/profiles/gpu.yaml) unless these test-only variables override them:
``WAV2LIP_DIR``, ``WAV2LIP_CHECKPOINT``, ``WAV2LIP_PYTHON``. The success path
also needs a short clip of a real face, ``WAV2LIP_SMOKE_FACE`` (a few seconds
of a talking head; synthetic images do not fool S3FD).

    SMOKE_LIPSYNC=1 WAV2LIP_SMOKE_FACE=~/clips/face.mp4 pytest tests/gpu/test_smoke_lipsync.py -v

Nothing here is faked: the tool process runs upstream's inference.py with
the real weights, and outputs are decoded with PyAV.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import REPO_ROOT
from sparkle_motion.media import (
    VideoWriter,
    decode_video_frames,
    probe,
    run_ffmpeg,
    write_wav,
)
from sparkle_motion.testing import running_tool

RUN = "smoke-lipsync"
SR = 16000


def _profile_options() -> dict:
    profile = yaml.safe_load((REPO_ROOT / "configs" / "profiles" / "gpu.yaml").read_text())
    return dict(profile["tools"]["lipsync_wav2lip"].get("options") or {})


def _paths() -> dict[str, Path]:
    options = _profile_options()
    return {
        "wav2lip_dir": Path(os.environ.get("WAV2LIP_DIR") or options["wav2lip_dir"]).expanduser(),
        "checkpoint_path": Path(os.environ.get("WAV2LIP_CHECKPOINT") or options["checkpoint_path"]).expanduser(),
        "python": Path(os.environ.get("WAV2LIP_PYTHON") or options.get("python") or sys.executable).expanduser(),
    }


def _skip_reason() -> str | None:
    if os.environ.get("SMOKE_LIPSYNC") != "1":
        return "real-weight Wav2Lip smoke test: set SMOKE_LIPSYNC=1 to run it"
    try:
        import torch
    except ImportError:
        return "SMOKE_LIPSYNC=1 but torch is not installed here (pip install -e '.[gpu]')"
    if not torch.cuda.is_available():
        return "SMOKE_LIPSYNC=1 but no CUDA GPU is available"
    paths = _paths()
    missing = [f"{name}={path}" for name, path in paths.items() if not path.exists()]
    detector = paths["wav2lip_dir"] / "face_detection" / "detection" / "sfd" / "s3fd.pth"
    if not detector.exists():
        missing.append(f"face detector={detector}")
    if missing:
        return ("SMOKE_LIPSYNC=1 but the Wav2Lip files are missing: " + ", ".join(missing)
                + " (set WAV2LIP_DIR / WAV2LIP_CHECKPOINT / WAV2LIP_PYTHON or edit configs/profiles/gpu.yaml)")
    return None


pytestmark = [pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
              pytest.mark.xdist_group("smoke_lipsync")]


def speech_like(path: Path, seconds: float) -> Path:
    """Syllable-rate bursts of a harmonic tone: enough energy change for the mouth to follow."""
    t = np.arange(int(seconds * SR)) / SR
    envelope = (np.sin(2 * np.pi * 3.0 * t) > 0).astype(np.float64)
    write_wav(path, 0.3 * envelope * sum(np.sin(2 * np.pi * 140 * k * t) / k for k in (1, 2, 3, 4)), SR)
    return path


@pytest.fixture(scope="module")
def tool(tmp_path_factory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("smoke-lipsync")
    home = root / "home"
    profile = yaml.safe_load((REPO_ROOT / "configs" / "profiles" / "gpu.yaml").read_text())
    options = profile["tools"]["lipsync_wav2lip"]["options"]
    options.update({name: str(path) for name, path in _paths().items()})
    profile_path = root / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    store = ArtifactStore(home)
    env = {"SPARKLE_PROFILE": str(profile_path), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None}
    with running_tool("lipsync_wav2lip", home=home, env=env, ready_timeout=300) as running:
        yield {"tool": running, "store": store, "root": root}
    store.close()


def _put(tool, path: Path, media_type: str) -> str:
    return tool["store"].put(RUN, "inputs", "input", path, media_type, ext=path.suffix).uri


def test_real_upstream_reports_no_face_and_the_backend_falls_back_to_mux(tool):
    """Our marker must match what the real inference.py prints; a plain gradient has no face."""
    root = tool["root"]
    clip = root / "no_face.mp4"
    yy, xx = np.mgrid[0:256, 0:256]
    with VideoWriter(clip, 256, 256, 25) as writer:
        for i in range(25):
            writer.write(np.stack([(xx + i) % 256, yy, 255 - xx], axis=-1).astype(np.uint8))
    body = {"run_id": RUN, "video_uri": _put(tool, clip, "video/mp4"),
            "audio_uri": _put(tool, speech_like(root / "one_s.wav", 1.0), "audio/wav")}
    response = tool["tool"].client.post("/invoke", json=body, timeout=900)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["lip_motion"] is False
    assert result["fallback"]["reason"] == "face_not_detected" and result["fallback"]["to"] == "mux"


def test_real_wav2lip_lipsyncs_a_face_clip(tool):
    face = os.environ.get("WAV2LIP_SMOKE_FACE")
    if not face or not Path(face).expanduser().is_file():
        pytest.skip("set WAV2LIP_SMOKE_FACE to a short clip of a real face for the success path")
    root = tool["root"]
    # At most 3 s of the clip, at even dimensions, so the run stays short.
    clip = root / "face.mp4"
    run_ffmpeg(["-loglevel", "error", "-i", str(Path(face).expanduser()), "-t", "3", "-an",
                "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)])
    info = probe(clip).first("video")
    assert info is not None and info.frames
    seconds = info.frames / info.fps
    body = {"run_id": RUN, "video_uri": _put(tool, clip, "video/mp4"),
            "audio_uri": _put(tool, speech_like(root / "speech.wav", seconds), "audio/wav"),
            "options": {"fit": "pad_or_trim"}}
    response = tool["tool"].client.post("/invoke", json=body, timeout=900)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["lip_motion"] is True and result["fallback"] is None, result
    out = tool["store"].path_for(result["video_uri"])
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (info.width, info.height)
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
    frames, originals = list(decode_video_frames(out)), list(decode_video_frames(clip))
    assert len(frames) == len(originals)
    # Wav2Lip rewrites the lower face only: some pixels change a lot, most of the frame barely.
    diff = np.abs(np.stack(frames).astype(int) - np.stack(originals)).mean(axis=(0, -1))
    assert (diff > 20).mean() > 0.002 and np.median(diff) < 6
    meta = tool["store"].get(result["video_uri"]).metadata
    assert meta["telemetry"]["device"].startswith("cuda") and meta["checkpoint_sha256"]
