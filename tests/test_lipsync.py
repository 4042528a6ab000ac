"""lipsync_wav2lip `mux` backend over HTTP against the real process, checked with PyAV.

Test audio is synthetic on purpose: harmonic tone bursts at known times stand in
for words, so segment timing can be checked against ground truth.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.media import VideoWriter, decode_video_frames
from sparkle_motion.testing import running_tool
from media_fixtures import harmonic_bursts

pytestmark = pytest.mark.xdist_group("lipsync_wav2lip")

W, H, FPS, FRAMES = 160, 96, 24, 36  # 1.5 s
SR = 24000
BURSTS = [(0.20, 0.55), (0.80, 1.30)]
RUN = "lipsync-test"


def moving_clip(path: Path, frames: int = FRAMES, seed: int = 0) -> Path:
    """A diagonal gradient that scrolls one step per frame, so every frame differs."""
    yy, xx = np.mgrid[0:H, 0:W]
    with VideoWriter(path, W, H, FPS, crf=23, preset="ultrafast") as writer:
        for i in range(frames):
            r = ((xx + 3 * i + seed * 17) % 160) * 1.5
            g = ((yy + 2 * i) % 96) * 2.5
            b = np.full_like(r, (i * 7) % 255)
            writer.write(np.stack([r, g, b], axis=-1).astype(np.uint8))
    return path


def tone_bursts(path: Path, duration_s: float, bursts=BURSTS) -> Path:
    return harmonic_bursts(path, duration_s, bursts, amplitude=0.1, sr=SR)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("lipsync-home")
    src = tmp_path_factory.mktemp("lipsync-src")
    store = ArtifactStore(home)
    uris = {}

    def put(name, path, media_type, ext):
        uris[name] = store.put(RUN, "inputs", "input", path, media_type, ext=ext).uri

    put("video", moving_clip(src / "clip.mp4"), "video/mp4", ".mp4")
    put("audio", tone_bursts(src / "match.wav", FRAMES / FPS), "audio/wav", ".wav")
    put("audio_short", tone_bursts(src / "short.wav", 1.0, [(0.2, 0.55)]), "audio/wav", ".wav")
    put("audio_long", tone_bursts(src / "long.wav", 2.5, BURSTS + [(1.8, 2.3)]), "audio/wav", ".wav")
    put("corrupt", b"\x00\x01not a video at all" * 64, "video/mp4", ".mp4")
    with running_tool("lipsync_wav2lip", home=home, env={"SPARKLE_TOKEN": None}) as tool:
        yield {"tool": tool, "store": store, "uris": uris, "home": home}
    store.close()


def invoke(env, **payload):
    body = {"run_id": RUN, "video_uri": env["uris"]["video"], "audio_uri": env["uris"]["audio"], **payload}
    return env["tool"].client.post("/invoke", json=body, timeout=60)


def video_packets(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(video=0) if p.size]


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray().reshape(-1, f.samples).mean(axis=0) if f.format.is_planar
                  else f.to_ndarray().reshape(f.samples, -1).mean(axis=1) for f in container.decode(stream)]
        return np.concatenate(chunks), stream.codec_context.sample_rate


def output_paths(env, body) -> tuple[Path, dict]:
    store = env["store"]
    alignment = json.loads(store.path_for(body["alignment_uri"]).read_text())
    return store.path_for(body["video_uri"]), alignment


def test_mux_copies_video_adds_aac_and_maps_speech_to_frames(env):
    response = invoke(env)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lip_motion"] is False and body["backend"] == "mux" and body["fit_applied"] == "none"
    out, alignment = output_paths(env, body)

    src = env["store"].path_for(env["uris"]["video"])
    with av.open(str(out)) as container, av.open(str(src)) as original:
        kinds = sorted((s.type, s.codec_context.name) for s in container.streams)
        assert kinds == [("audio", "aac"), ("video", "h264")]
        v, ov = container.streams.video[0], original.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (W, H)
        assert v.frames == FRAMES and float(v.average_rate) == FPS
        assert bytes(v.codec_context.extradata) == bytes(ov.codec_context.extradata)
        assert v.codec_context.bit_rate == ov.codec_context.bit_rate
    # Stream copy: the compressed video packets are the input's, byte for byte.
    assert video_packets(out) == video_packets(src)

    samples, rate = decoded_audio(out)
    assert rate == SR
    assert abs(samples.size - FRAMES / FPS * SR) <= 1024  # one AAC frame

    assert alignment["source"] == "vad" and alignment["lip_motion"] is False
    assert alignment["fps"] == FPS and alignment["frame_count"] == FRAMES
    segments = alignment["segments"]
    assert len(segments) == len(BURSTS)
    for (start, end), seg in zip(BURSTS, segments):
        assert abs(seg["start_s"] - start) <= 1 / FPS and abs(seg["end_s"] - end) <= 1 / FPS
        assert abs(seg["start_frame"] - start * FPS) <= 1 and abs(seg["end_frame"] + 1 - end * FPS) <= 1
    # The muxed audio itself carries the bursts where the map says (AAC round trip, measured on decode).
    envelope = np.abs(samples[: int(0.15 * SR)]).max(), np.abs(samples[int(0.3 * SR): int(0.45 * SR)]).max()
    assert envelope[0] < 0.01 < envelope[1]

    manifest = env["store"].get(body["video_uri"])
    assert manifest.metadata["lip_motion"] is False and manifest.metadata["tool"] == "lipsync_wav2lip"
    assert manifest.metadata["params"]["unused_options"]["resize_factor"] == 1


def test_word_timings_replace_vad(env):
    words = [{"word": "hello", "start_s": 0.21, "end_s": 0.5}, {"word": "there", "start_s": 0.8, "end_s": 1.2}]
    response = invoke(env, options={"word_timings": words})
    assert response.status_code == 200, response.text
    _, alignment = output_paths(env, response.json())
    assert alignment["source"] == "word_timings"
    assert [(s["text"], s["start_frame"], s["end_frame"]) for s in alignment["segments"]] == \
        [("hello", 5, 11), ("there", 19, 28)]


def test_duration_mismatch_is_422_naming_audio_uri_with_both_durations(env):
    before = env["store"].list(RUN)
    response = invoke(env, audio_uri=env["uris"]["audio_long"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "audio_uri"
    assert "2.500" in error["message"] and "1.500" in error["message"]
    # fit="pad" cannot shorten long audio either
    response = invoke(env, audio_uri=env["uris"]["audio_long"], options={"fit": "pad"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "audio_uri"
    assert env["store"].list(RUN) == before


def test_pad_and_trim_fit_audio_to_the_untouched_video(env):
    src_packets = video_packets(env["store"].path_for(env["uris"]["video"]))
    padded = invoke(env, audio_uri=env["uris"]["audio_short"], options={"fit": "pad"})
    assert padded.status_code == 200, padded.text
    assert padded.json()["fit_applied"] == "pad"
    out, alignment = output_paths(env, padded.json())
    samples, rate = decoded_audio(out)
    assert abs(samples.size - FRAMES / FPS * rate) <= 1024
    assert np.abs(samples[int(1.05 * rate):]).max() < 0.005  # the padding is silence
    assert alignment["audio_duration_s"] == pytest.approx(1.0) and len(alignment["segments"]) == 1
    assert video_packets(out) == src_packets

    trimmed = invoke(env, audio_uri=env["uris"]["audio_long"], options={"fit": "pad_or_trim"})
    assert trimmed.status_code == 200, trimmed.text
    assert trimmed.json()["fit_applied"] == "trim"
    out, alignment = output_paths(env, trimmed.json())
    samples, rate = decoded_audio(out)
    assert abs(samples.size - FRAMES / FPS * rate) <= 1024
    assert len(alignment["segments"]) == 2  # the burst at 1.8 s was cut with the audio
    assert video_packets(out) == src_packets


def test_outputs_are_deterministic(env):
    first, second = invoke(env).json(), invoke(env).json()
    assert first["video_uri"] != second["video_uri"]
    a, _ = output_paths(env, first)
    b, _ = output_paths(env, second)
    assert video_packets(a) == video_packets(b)
    assert np.array_equal(decoded_audio(a)[0], decoded_audio(b)[0])
    assert all(np.array_equal(x, y) for x, y in zip(decode_video_frames(a), decode_video_frames(b)))


@pytest.mark.parametrize("change, field", [
    ({"video_uri": None}, "video_uri"),
    ({"video_uri": "not-a-uri"}, "video_uri"),
    ({"video_uri": "artifact+fs://../../etc/passwd"}, "video_uri"),
    ({"audio_uri": "artifact+fs://lipsync-test/inputs/art_doesnotexist"}, "audio_uri"),
    ({"video_uri": "corrupt"}, "video_uri"),
    ({"video_uri": "audio"}, "video_uri"),  # a WAV has no video stream
    ({"audio_uri": "video"}, "audio_uri"),  # the clip has no audio stream
    ({"options": {"fit": "stretch"}}, "options.fit"),
    ({"options": {"resize_factor": 0}}, "options.resize_factor"),
    ({"options": {"word_timings": [{"word": "x", "start_s": 0.5, "end_s": 0.4}]}}, "options.word_timings[0]"),
    ({"options": {"word_timings": [{"word": "late", "start_s": 1.0, "end_s": 3.0}]}},
     "options.word_timings[0].end_s"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_input_is_4xx_naming_the_field_and_stores_nothing(env, change, field):
    before = env["store"].list(RUN)
    body = {"run_id": RUN, "video_uri": env["uris"]["video"], "audio_uri": env["uris"]["audio"]}
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = env["uris"].get(value, value) if isinstance(value, str) else value
    response = env["tool"].client.post("/invoke", json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    fields = [error.get("field")] + [d.get("field") for d in error.get("details", [])]
    assert field in fields, error
    assert error["message"]
    assert env["store"].list(RUN) == before
    assert env["tool"].client.get("/health").status_code == 200
