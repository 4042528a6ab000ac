"""lipsync_wav2lip `wav2lip` backend over HTTP against the real tool process.

Wav2Lip itself is a user-provided checkout we do not own, so the process
boundary is the one place with a stand-in: tests/fixtures/wav2lip_standin/
inference.py has upstream's command line and habits, finds a skin-coloured
"face", repaints its lower half as lips that open with the audio energy, and
writes a real video through the `ffmpeg` this backend puts on its PATH. Its
failure modes (crash, hang, OOM) are driven by the face clip's title tag; "face
not detected" by a clip with no face in it. Everything on our side of the
boundary — flags, working directory, audio preparation, device lock, timeout,
re-encode, fallback to `mux`, typed errors — is the production code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import REPO_ROOT
from sparkle_motion.gpu_utils import device_lock, device_lock_is_free
from sparkle_motion.media import VideoWriter, decode_video_frames
from sparkle_motion.testing import running_tool
from media_fixtures import harmonic_bursts

pytestmark = pytest.mark.xdist_group("lipsync_wav2lip_tiny")

STANDIN = Path(__file__).parent / "fixtures" / "wav2lip_standin" / "inference.py"
W, H, FPS, FRAMES = 128, 96, 24, 24  # 1 s
SR = 24000
BURSTS = [(0.30, 0.55), (0.70, 0.95)]
SKIN = (224, 172, 105)
FACE_CENTER, FACE_RADII = (64, 44), (22, 30)  # x, y
RUN = "wav2lip-test"


# ------------------------------------------------------------------ inputs

def face_clip(path: Path, *, face: bool = True, title: str | None = None, frames: int = FRAMES) -> Path:
    """A bluish background that scrolls every frame, with a still skin-coloured ellipse as the face."""
    yy, xx = np.mgrid[0:H, 0:W]
    inside = ((xx - FACE_CENTER[0]) / FACE_RADII[0]) ** 2 + ((yy - FACE_CENTER[1]) / FACE_RADII[1]) ** 2 <= 1
    extra = ["-metadata", f"title={title}"] if title else []
    with VideoWriter(path, W, H, FPS, crf=18, preset="ultrafast", extra_args=extra) as writer:
        for i in range(frames):
            frame = np.stack([(xx + 2 * i) % 60, 40 + (yy + i) % 50, 140 + (xx // 2) % 90], axis=-1)
            if face:
                frame[inside] = SKIN
            writer.write(frame.astype(np.uint8))
    return path


def tone_bursts(path: Path, duration_s: float, bursts=BURSTS) -> Path:
    return harmonic_bursts(path, duration_s, bursts, amplitude=0.3, sr=SR)


def make_checkout(root: Path, *, drop_flag: str | None = None) -> tuple[Path, Path]:
    """A directory laid out like a Wav2Lip checkout around the stand-in script.

    The weight files are bytes at the paths upstream reads: the stand-in checks
    that the checkpoint path it is given exists; nothing loads them.
    """
    checkout = root / "Wav2Lip"
    detector = checkout / "face_detection" / "detection" / "sfd" / "s3fd.pth"
    detector.parent.mkdir(parents=True)
    detector.write_bytes(os.urandom(256))
    script = STANDIN.read_text(encoding="utf-8")
    if drop_flag:  # an older upstream without this flag (the add_argument call spans two lines)
        lines = script.splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if f"add_argument('{drop_flag}'" in line)
        script = "".join(lines[:at] + lines[at + 2:]).replace("if not args.nosmooth:", "if True:")
    (checkout / "inference.py").write_text(script, encoding="utf-8")
    checkpoint = checkout / "checkpoints" / "wav2lip_gan.pth"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(os.urandom(4096))
    return checkout, checkpoint


def write_profile(path: Path, **options) -> Path:
    """configs/profiles/gpu.yaml with the lipsync_wav2lip options replaced."""
    profile = yaml.safe_load((REPO_ROOT / "configs" / "profiles" / "gpu.yaml").read_text())
    entry = profile["tools"]["lipsync_wav2lip"]
    assert entry["backend"] == "wav2lip"
    entry["options"] = {"python": sys.executable, "device": "cpu", "lock_timeout_s": 0, "timeout_s": 60,
                        "preset": "ultrafast", **options}
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def tool_env(profile: Path, argv_log: Path) -> dict:
    return {"SPARKLE_PROFILE": str(profile), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None,
            "WAV2LIP_STANDIN_LOG": str(argv_log)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("wav2lip-home")
    src = tmp_path_factory.mktemp("wav2lip-src")
    store = ArtifactStore(home)
    uris, paths = {}, {}

    def put(name, path, media_type, ext):
        uris[name] = store.put(RUN, "inputs", "input", path, media_type, ext=ext).uri
        paths[name] = store.path_for(uris[name])

    put("face", face_clip(src / "face.mp4"), "video/mp4", ".mp4")
    put("no_face", face_clip(src / "no_face.mp4", face=False), "video/mp4", ".mp4")
    for mode in ("crash", "hang", "oom"):
        put(mode, face_clip(src / f"{mode}.mp4", title=f"standin:{mode}", frames=6), "video/mp4", ".mp4")
    put("audio", tone_bursts(src / "match.wav", FRAMES / FPS), "audio/wav", ".wav")
    put("audio_short", tone_bursts(src / "short.wav", 0.6, [(0.30, 0.55)]), "audio/wav", ".wav")
    put("audio_6f", tone_bursts(src / "six.wav", 6 / FPS, []), "audio/wav", ".wav")
    yield {"home": home, "store": store, "uris": uris, "paths": paths}
    store.close()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> tuple[Path, Path]:
    return make_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def tool(inputs, checkout, tmp_path_factory) -> Iterator[dict]:
    """The tool with the default policy: fall back to `mux` when no face is found."""
    root = tmp_path_factory.mktemp("wav2lip-tool")
    wav2lip_dir, checkpoint = checkout
    profile = write_profile(root / "profile.yaml", wav2lip_dir=str(wav2lip_dir), checkpoint_path=str(checkpoint))
    argv_log = root / "argv.jsonl"
    with running_tool("lipsync_wav2lip", home=inputs["home"], env=tool_env(profile, argv_log)) as running:
        yield {"tool": running, "argv_log": argv_log, "checkpoint": checkpoint, "wav2lip_dir": wav2lip_dir}


@pytest.fixture(scope="module")
def strict_tool(inputs, checkout, tmp_path_factory) -> Iterator[dict]:
    """A second deployment: a 2 s timeout and `on_face_not_detected: error`."""
    root = tmp_path_factory.mktemp("wav2lip-strict")
    wav2lip_dir, checkpoint = checkout
    profile = write_profile(root / "profile.yaml", wav2lip_dir=str(wav2lip_dir), checkpoint_path=str(checkpoint),
                            timeout_s=2, on_face_not_detected="error")
    argv_log = root / "argv.jsonl"
    with running_tool("lipsync_wav2lip", home=inputs["home"], env=tool_env(profile, argv_log)) as running:
        yield {"tool": running, "argv_log": argv_log}


@pytest.fixture
def cpu_lock_home(inputs, monkeypatch) -> Path:
    """Point this process's settings at the tool's home, so device_lock() names the tool's lock file."""
    monkeypatch.setenv("SPARKLE_HOME", str(inputs["home"]))
    return inputs["home"]


def invoke(tool, inputs, video="face", audio="audio", **payload):
    body = {"run_id": RUN, "video_uri": inputs["uris"][video], "audio_uri": inputs["uris"][audio], **payload}
    return tool["tool"].client.post("/invoke", json=body, timeout=120)


def runs(argv_log: Path) -> list[dict]:
    if not argv_log.exists():
        return []
    return [json.loads(line) for line in argv_log.read_text().splitlines() if line.strip()]


def flag(argv: list[str], name: str, count: int = 1) -> list[str]:
    i = argv.index(name)
    return argv[i + 1: i + 1 + count]


def alive(pid: int, grace_s: float = 2.0) -> bool:
    """Whether ``pid`` still runs after ``grace_s``; a killed orphan may linger as a zombie until init reaps it."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.05)


def skin_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    skin = (np.abs(frame.astype(np.int16) - np.array(SKIN)) < 40).all(axis=-1)
    ys, xs = np.nonzero(skin)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def decoded_audio_streams(path: Path) -> list[tuple[str, int, float]]:
    with av.open(str(path)) as container:
        out = []
        for stream in container.streams.audio:
            samples = sum(frame.samples for frame in container.decode(stream))
            out.append((stream.codec_context.name, stream.codec_context.sample_rate,
                        samples / stream.codec_context.sample_rate))
        return out


# ------------------------------------------------------------------ success

def test_lipsync_output_moves_the_mouth_with_the_speech(tool, inputs):
    before = len(runs(tool["argv_log"]))
    response = invoke(tool, inputs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "wav2lip" and body["lip_motion"] is True and body["fallback"] is None
    store = inputs["store"]
    out = store.path_for(body["video_uri"])

    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.codec_context.width, video.codec_context.height) == ("h264", W, H)
        assert float(video.average_rate) == FPS
    frames = list(decode_video_frames(out))
    originals = list(decode_video_frames(inputs["paths"]["face"]))
    assert len(frames) == FRAMES
    [(codec, rate, seconds)] = decoded_audio_streams(out)
    assert codec == "aac" and rate == SR and abs(seconds - FRAMES / FPS) <= 1024 / SR

    # Upstream's default pads (0, 10, 0, 0) extend the face box 10 px down; its lower half is the mouth.
    top, bottom, left, right = skin_box(originals[0])
    bottom = min(H, bottom + 10)
    mouth_top = top + (bottom - top) // 2
    lit = [np.abs(f[mouth_top:bottom, left:right].astype(int) - o[mouth_top:bottom, left:right]).mean()
           for f, o in zip(frames, originals)]
    assert min(lit) > 40, lit  # every frame's mouth region was repainted
    untouched = [np.abs(f[: top - 2].astype(int) - o[: top - 2]).mean() for f, o in zip(frames, originals)]
    assert max(untouched) < 4, untouched  # the rest of the picture is the input's (re-encoded)

    # The mouth opens (dark pixels) only where the audio it was given is loud: the mel window of frame i
    # spans [i/fps, i/fps + 0.2 s), so frames 0-2 see silence and frame 10 (0.42 s) sits in a burst.
    def opening(frame):
        region = frame[mouth_top:bottom, left:right].astype(int)
        return int((region.sum(axis=-1) < 90).sum())
    assert all(opening(frames[i]) == 0 for i in range(3)), [opening(f) for f in frames]
    assert opening(frames[10]) > 20, [opening(f) for f in frames]

    alignment = json.loads(store.path_for(body["alignment_uri"]).read_text())
    assert alignment["lip_motion"] is True and alignment["frame_count"] == FRAMES
    assert len(alignment["segments"]) == len(BURSTS)
    manifest = store.get(body["video_uri"])
    meta = manifest.metadata
    assert meta["lip_motion"] is True and meta["backend"] == "wav2lip" and "fallback" not in meta
    assert meta["checkpoint_sha256"] == hashlib.sha256(tool["checkpoint"].read_bytes()).hexdigest()
    assert meta["telemetry"]["device"] == "cpu" and meta["telemetry"]["inference_s"] > 0
    assert meta["wav2lip_output"]["frames"] >= FRAMES  # the silent tail made upstream render the last frames

    # What the stand-in was actually given.
    [run] = runs(tool["argv_log"])[before:]
    argv = run["argv"]
    assert flag(argv, "--checkpoint_path") == [str(tool["checkpoint"])]
    assert flag(argv, "--audio") == ["audio.wav"] and flag(argv, "--outfile") == ["result.mp4"]
    assert flag(argv, "--face")[0].endswith(".mp4") and "/" not in flag(argv, "--face")[0]
    assert flag(argv, "--pads", 4) == ["0", "10", "0", "0"] and flag(argv, "--resize_factor") == ["1"]
    assert float(flag(argv, "--fps")[0]) == FPS and "--nosmooth" not in argv
    assert flag(argv, "--face_det_batch_size") == ["16"] and flag(argv, "--wav2lip_batch_size") == ["128"]
    assert Path(run["ffmpeg"]).parent == Path(run["cwd"]) / "bin"  # no system ffmpeg needed
    assert run["cuda_visible_devices"] == ""  # device cpu hides every GPU from upstream
    assert not Path(run["cwd"]).exists()  # the working directory was cleaned up


def test_face_options_reach_upstream_and_geometry_survives_resize(tool, inputs):
    before = len(runs(tool["argv_log"]))
    response = invoke(tool, inputs, audio="audio_short",
                      options={"pads": [2, 4, 6, 8], "resize_factor": 2, "nosmooth": True, "fit": "pad"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lip_motion"] is True and body["fit_applied"] == "pad"
    [run] = runs(tool["argv_log"])[before:]
    argv = run["argv"]
    assert flag(argv, "--pads", 4) == ["2", "4", "6", "8"]
    assert flag(argv, "--resize_factor") == ["2"] and "--nosmooth" in argv

    out = inputs["store"].path_for(body["video_uri"])
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (W, H)  # scaled back up
    assert len(list(decode_video_frames(out))) == FRAMES
    [(_, _, seconds)] = decoded_audio_streams(out)
    assert abs(seconds - FRAMES / FPS) <= 1024 / SR  # padded to the clip
    produced = inputs["store"].get(body["video_uri"]).metadata["wav2lip_output"]
    assert (produced["width"], produced["height"]) == (W // 2, H // 2)


def test_duration_mismatch_is_422_before_wav2lip_runs(tool, inputs):
    before = len(runs(tool["argv_log"]))
    response = invoke(tool, inputs, audio="audio_short")  # fit: error by default
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "audio_uri"
    assert len(runs(tool["argv_log"])) == before


# ------------------------------------------------------------------ fallback and failures

def test_face_not_detected_falls_back_to_mux_and_says_so(tool, inputs):
    response = invoke(tool, inputs, video="no_face")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lip_motion"] is False
    fallback = body["fallback"]
    assert (fallback["from"], fallback["to"], fallback["reason"]) == ("wav2lip", "mux", "face_not_detected")
    assert "Face not detected!" in fallback["detail"]
    store = inputs["store"]
    for uri in (body["video_uri"], body["alignment_uri"]):
        meta = store.get(uri).metadata
        assert meta["fallback"] == fallback and meta["backend"] == "mux" and meta["requested_backend"] == "wav2lip"
        assert meta["lip_motion"] is False
    assert json.loads(store.path_for(body["alignment_uri"]).read_text())["lip_motion"] is False

    # It is the mux backend's output: the input's video packets, untouched, plus the audio.
    def packets(path):
        with av.open(str(path)) as container:
            return [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(video=0) if p.size]
    assert packets(store.path_for(body["video_uri"])) == packets(inputs["paths"]["no_face"])
    assert decoded_audio_streams(store.path_for(body["video_uri"]))[0][0] == "aac"


def test_crash_is_500_with_the_stderr_tail_and_stores_nothing(tool, inputs, cpu_lock_home):
    before = inputs["store"].list(RUN)
    response = invoke(tool, inputs, video="crash", audio="audio_6f")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "wav2lip_failed" and error["context"]["returncode"] == 1
    assert "illegal memory access" in error["context"]["stderr_tail"]
    assert "Traceback" in error["context"]["stderr_tail"]
    assert inputs["store"].list(RUN) == before
    assert device_lock_is_free("cpu")


def test_cuda_oom_in_the_child_is_a_typed_model_oom(tool, inputs, cpu_lock_home):
    response = invoke(tool, inputs, video="oom", audio="audio_6f")
    assert response.status_code == 507
    error = response.json()["error"]
    assert error["code"] == "model_oom" and error["context"]["stage"] == "inference"
    assert "wav2lip_batch_size" in error["context"]["hint"]
    assert device_lock_is_free("cpu")


def test_busy_device_is_503_with_retry_after(tool, inputs, cpu_lock_home):
    before = len(runs(tool["argv_log"]))
    with device_lock("cpu"):
        response = invoke(tool, inputs)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "device_busy" and int(response.headers["Retry-After"]) >= 1
    assert len(runs(tool["argv_log"])) == before  # nothing ran on the busy device


def test_hang_is_killed_at_timeout_with_its_children(strict_tool, inputs, cpu_lock_home):
    started = time.monotonic()
    response = invoke(strict_tool, inputs, video="hang", audio="audio_6f")
    assert response.status_code == 504
    assert time.monotonic() - started < 30
    error = response.json()["error"]
    assert error["code"] == "wav2lip_timeout" and error["context"]["timeout_s"] == 2
    hung = next(r for r in runs(strict_tool["argv_log"]) if "hang_child_pid" in r)
    assert not alive(hung["hang_pid"]) and not alive(hung["hang_child_pid"])
    assert device_lock_is_free("cpu")


def test_face_not_detected_is_a_422_when_fallback_is_off(strict_tool, inputs):
    response = invoke(strict_tool, inputs, video="no_face", audio="audio")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "face_not_detected" and error["field"] == "video_uri"
    assert "Face not detected!" in error["message"]


# ------------------------------------------------------------------ load-time validation

def _load_failure(home: Path, profile: Path) -> dict:
    with running_tool("lipsync_wav2lip", home=home, env=tool_env(profile, home / "unused.jsonl"),
                      wait=False) as running:
        running.wait_listening()
        deadline = time.monotonic() + 60
        while True:
            ready = running.client.get("/ready")
            assert ready.status_code == 503
            error = ready.json()["error"]
            if error["code"] == "load_failed":
                return error
            assert time.monotonic() < deadline, error
            time.sleep(0.1)


@pytest.mark.parametrize("case", ["missing_checkpoint", "old_checkout", "missing_detector", "broken_interpreter"])
def test_bad_checkout_fails_ready_naming_the_option(case, tmp_path):
    wav2lip_dir, checkpoint = make_checkout(tmp_path, drop_flag="--nosmooth" if case == "old_checkout" else None)
    if case == "missing_checkpoint":
        checkpoint = tmp_path / "nowhere" / "wav2lip_gan.pth"
    if case == "missing_detector":
        shutil.rmtree(wav2lip_dir / "face_detection")
    if case == "broken_interpreter":  # the checkout's stack does not import in the configured interpreter
        script = wav2lip_dir / "inference.py"
        script.write_text("import wav2lip_face_alignment_missing\n" + script.read_text())
    profile = write_profile(tmp_path / "profile.yaml", wav2lip_dir=str(wav2lip_dir), checkpoint_path=str(checkpoint))
    error = _load_failure(tmp_path / "home", profile)
    message = error["message"]
    if case == "missing_checkpoint":
        assert "options.checkpoint_path" in message and str(checkpoint) in message
    elif case == "old_checkout":
        assert "options.wav2lip_dir" in message and "--nosmooth" in message
    elif case == "missing_detector":
        assert "options.wav2lip_dir" in message and "s3fd.pth" in message
    else:
        assert "options.python" in message and "No module named 'wav2lip_face_alignment_missing'" in message
