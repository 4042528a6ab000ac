"""The `mux` backend opens a storyboard speaker's mouth on the words, over HTTP against the real processes.

The chain is the CPU tier's own: storyboard keyframes (images_sdxl's renderer, with
their layout chunk) → a clip from the real ``videos_wan`` process (keyframe_motion
records where each face's mouth is per frame) → the real ``lipsync_wav2lip``
process.  The output is decoded with PyAV and judged from its pixels: inside the
speaker's recorded mouth box, an open mouth is a patch of dark pixels, and the
drawn closed mouth has none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from function_tools.images_sdxl.figures import LAYOUT_KEY
from function_tools.images_sdxl.output import encode_png
from function_tools.images_sdxl.scene import describe_scene
from function_tools.images_sdxl.storyboard import render_storyboard
from media_fixtures import harmonic_bursts
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import running_tool
from test_videos_wan_service import decode, psnr  # tests/ is on sys.path (rootdir conftest)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lipsync_mouths")]

RUN = "mouths-test"
W, H, FPS, FRAMES = 320, 184, 24, 60   # 2.5 s
SR = 24000
# Three words with a pause after the second one: the mouth must be shut in it.
WORDS = [("hello", 0.30, 0.70), ("there", 0.74, 1.10), ("friend", 1.65, 2.10)]
SILENCE = (1.20, 1.55)
DARK_LUMA = 90
DEBUG_DIR = os.environ.get("SPARKLE_TEST_DEBUG_DIR")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("mouths-home")
    src = tmp_path_factory.mktemp("mouths-src")
    store = ArtifactStore(home)
    audio = harmonic_bursts(src / "line.wav", FRAMES / FPS, [(s, e) for _, s, e in WORDS], amplitude=0.1, sr=SR)
    audio_uri = store.put(RUN, "inputs", "input", audio, "audio/wav", ext=".wav").uri
    with running_tool("videos_wan", home=home, env={"SPARKLE_TOKEN": None}) as videos, \
            running_tool("lipsync_wav2lip", home=home, env={"SPARKLE_TOKEN": None}) as lipsync:
        yield {"store": store, "videos": videos, "lipsync": lipsync, "audio_uri": audio_uri}
    store.close()


def keyframe_uri(store: ArtifactStore, prompt: str, characters: list[str], seed: int) -> str:
    image, layout = render_storyboard(prompt, seed, W, H, scene=describe_scene(prompt), characters=characters)
    png = encode_png(image, {LAYOUT_KEY: json.dumps(layout, sort_keys=True)})
    return store.put(RUN, "keyframes", "image", png, "image/png", media={"width": W, "height": H}, ext=".png").uri


def make_clip(env: dict[str, Any], start_uri: str, end_uri: str, motion: str) -> tuple[str, dict[str, Any]]:
    reply = env["videos"].client.post("/invoke", json={
        "run_id": RUN, "start_frame_uri": start_uri, "end_frame_uri": end_uri, "motion_prompt": motion,
        "num_frames": FRAMES, "fps": FPS, "width": W, "height": H, "seed": 5}, timeout=300)
    assert reply.status_code == 200, reply.text
    uri = reply.json()["video"]["uri"]
    return uri, env["store"].get(uri).metadata


def lipsync(env: dict[str, Any], video_uri: str, words: list[dict[str, Any]] | None) -> dict[str, Any]:
    reply = env["lipsync"].client.post("/invoke", json={
        "run_id": RUN, "video_uri": video_uri, "audio_uri": env["audio_uri"],
        "options": {"fit": "pad_or_trim", "word_timings": words}}, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()


def timed_words(speaker: str | None = None) -> list[dict[str, Any]]:
    extra = {"speaker": speaker} if speaker else {}
    return [{"word": w, "start_s": s, "end_s": e, **extra} for w, s, e in WORDS]


def dark_pixels(frame: np.ndarray, box: list[int]) -> int:
    x0, y0, x1, y1 = box
    patch = frame[y0:y1, x0:x1].astype(np.float64)
    luma = patch @ np.array([0.299, 0.587, 0.114])
    return int((luma < DARK_LUMA).sum())


def frames_in(start_s: float, end_s: float) -> list[int]:
    """Frames whose midpoint lies in [start_s, end_s)."""
    return [i for i in range(FRAMES) if start_s <= (i + 0.5) / FPS < end_s]


def stream_facts(path: Path) -> tuple:
    """What assembly's stream copy needs to match across clips (function_tools/assemble_ffmpeg)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        return (ctx.name, ctx.profile, ctx.width, ctx.height, ctx.pix_fmt, stream.average_rate,
                stream.time_base, hashlib.sha256(bytes(ctx.extradata or b"")).hexdigest())


CLOSE_UP = "Close-up portrait of Tess, facing camera, at a rooftop garden at dusk"


@pytest.mark.parametrize("end_prompt, end_cast, transition", [
    (CLOSE_UP, ["Tess"], "figures"),                                               # one set: the figure moves
    ("Medium shot of Tess and Omar at a rooftop garden at dusk", ["Tess", "Omar"], "cut"),  # next shot's framing
])
def test_the_speakers_mouth_opens_on_words_and_is_shut_in_silence(env, end_prompt, end_cast, transition):
    store = env["store"]
    start_uri = keyframe_uri(store, CLOSE_UP, ["Tess"], seed=11)
    end_uri = keyframe_uri(store, end_prompt, end_cast, seed=12)
    clip_uri, clip_meta = make_clip(env, start_uri, end_uri, "slow push-in on Tess")
    assert clip_meta["transition"] == transition
    track = clip_meta["mouths"]["Tess"]
    assert len(track) == FRAMES and all(box is not None for box in track[:-1])

    body = lipsync(env, clip_uri, timed_words())
    assert body["lip_motion"] is True and body["backend"] == "mux"
    out_path = store.path_for(body["video_uri"])
    alignment = json.loads(store.path_for(body["alignment_uri"]).read_text())
    assert alignment["lip_motion"] is True
    meta = store.get(body["video_uri"]).metadata
    assert meta["video_stream"] == "redrawn_mouths" and meta["mouth_motion"]["frames_redrawn"] > 0

    clip_frames, _ = decode(store.path_for(clip_uri))
    out_frames, _ = decode(out_path)
    assert len(out_frames) == len(clip_frames) == FRAMES

    if DEBUG_DIR:
        Image.fromarray(np.hstack([clip_frames[12], out_frames[12]])).save(Path(DEBUG_DIR) / f"{transition}.png")
    # During words the mouth is open: a patch of dark pixels where the clip shows a closed line.
    open_counts = []
    for _, start, end in WORDS:
        middle = (start + end) / 2
        for i in frames_in(middle - 0.06, middle + 0.06):
            assert dark_pixels(clip_frames[i], track[i]) == 0
            open_counts.append(dark_pixels(out_frames[i], track[i]))
    x0, y0, x1, y1 = track[frames_in(*WORDS[0][1:])[0]]
    assert min(open_counts) >= 0.08 * (x1 - x0) * (y1 - y0), open_counts   # a mid-word syllable change
    assert max(open_counts) >= 0.2 * (x1 - x0) * (y1 - y0), open_counts    # wide open on a syllable

    # In the pause (and before the first word) it is the clip's closed mouth, up to coding noise.
    for i in frames_in(*SILENCE) + frames_in(0.0, WORDS[0][1]):
        x0, y0, x1, y1 = track[i]
        assert dark_pixels(out_frames[i], track[i]) == 0
        diff = np.abs(out_frames[i][y0:y1, x0:x1].astype(int) - clip_frames[i][y0:y1, x0:x1].astype(int))
        assert diff.mean() < 4, (i, diff.mean())

    # The shot's ends are its keyframes, untouched; the encoding still concatenates by stream copy.
    assert psnr(out_frames[0], clip_frames[0]) > 40 and psnr(out_frames[-1], clip_frames[-1]) > 40
    assert stream_facts(out_path) == stream_facts(store.path_for(clip_uri))

    # Deterministic: the same request gives the same pixels.
    again = lipsync(env, clip_uri, timed_words())
    again_frames, _ = decode(store.path_for(again["video_uri"]))
    assert all(np.array_equal(a, b) for a, b in zip(again_frames, out_frames))


def test_a_speaker_not_in_the_clip_leaves_the_video_as_it_is(env):
    store = env["store"]
    start_uri = keyframe_uri(store, CLOSE_UP, ["Tess"], seed=21)
    clip_uri, _ = make_clip(env, start_uri, start_uri, "static")
    named = lipsync(env, clip_uri, timed_words("Tess"))
    assert named["lip_motion"] is True
    other = lipsync(env, clip_uri, timed_words("Omar"))
    assert other["lip_motion"] is False
    meta = store.get(other["video_uri"]).metadata
    assert meta["video_stream"] == "copy" and "Omar" in meta["mouth_motion"]["note"]
    none = lipsync(env, clip_uri, None)   # no word timings: today's behaviour
    assert none["lip_motion"] is False
