"""assemble_ffmpeg over HTTP against the real process; outputs checked with PyAV and ffmpeg's ebur128.

Clips are tiny (160x96, 24 fps, 1-1.5 s) moving patterns; "dialogue" is synthetic
harmonic tone bursts (speech-like energy, not speech) at a known level.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from function_tools.assemble_ffmpeg.ffmpeg_backend import burn_subtitles_pillow, render_srt
from function_tools.assemble_ffmpeg.models import Subtitle
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.media import VideoWriter, decode_video_frames, run_ffmpeg, write_wav
from sparkle_motion.media.loudness import integrated_loudness
from sparkle_motion.testing import running_tool
from media_fixtures import harmonic_bursts

pytestmark = pytest.mark.xdist_group("assemble_ffmpeg")

W, H, FPS = 160, 96, 24
RUN = "assemble-test"
FRAME_S = 1 / FPS


def moving_clip(path: Path, frames: int, *, width: int = W, height: int = H, fps: int = FPS, seed: int = 0) -> Path:
    """A scrolling gradient plus a frame-numbered bright bar: every frame differs and is identifiable."""
    yy, xx = np.mgrid[0:height, 0:width]
    with VideoWriter(path, width, height, fps, crf=20, preset="ultrafast") as writer:
        for i in range(frames):
            r = ((xx + 3 * i + 40 * seed) % width) * (255 / width)
            g = ((yy + 2 * i) % height) * (255 / height)
            b = np.full_like(r, 60 + 80 * seed)
            frame = np.stack([r, g, b], axis=-1).astype(np.uint8)
            frame[:, (4 * i) % width: (4 * i) % width + 4] = 255
            writer.write(frame)
    return path


def tone_bursts(path: Path, duration_s: float, *, sr: int = 24000, amplitude: float = 0.05) -> Path:
    """0.3 s bursts every 0.5 s."""
    bursts = [(start, start + 0.3) for start in np.arange(0.1, duration_s - 0.3, 0.5)]
    return harmonic_bursts(path, duration_s, bursts, amplitude=amplitude, sr=sr)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("assemble-home")
    src = tmp_path_factory.mktemp("assemble-src")
    store = ArtifactStore(home)
    paths: dict[str, Path] = {}
    paths["a"] = moving_clip(src / "a.mp4", 24)
    paths["b"] = moving_clip(src / "b.mp4", 36, seed=1)
    paths["c"] = moving_clip(src / "c.mp4", 24, width=128, height=72, seed=2)  # other size → re-encode
    paths["dialogue"] = tone_bursts(src / "dialogue.wav", 2.0)
    # Peaky and quiet: sharp clicks near full scale over a faint tone. Linear gain to -16 LUFS
    # would push the peaks far past the true-peak ceiling.
    sr = 24000
    t = np.arange(2 * sr) / sr
    peaky = 0.03 * np.sin(2 * np.pi * 200 * t)
    peaky[::2400] = 0.9
    write_wav(src / "peaky.wav", peaky, sr)
    paths["peaky"] = src / "peaky.wav"
    # Clip A with its own (muxed) audio, video stream copied: same codec parameters as A.
    paths["a_audio"] = src / "a_audio.mp4"
    run_ffmpeg(["-loglevel", "error", "-i", str(paths["a"]), "-i", str(tone_bursts(src / "a.wav", 1.0)),
                "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(paths["a_audio"])])
    uris = {}
    for name, path in paths.items():
        media_type = "audio/wav" if path.suffix == ".wav" else "video/mp4"
        uris[name] = store.put(RUN, "inputs", "input", path, media_type, ext=path.suffix).uri
    uris["corrupt"] = store.put(RUN, "inputs", "input", b"\x00garbage, not media" * 50, "video/mp4", ext=".mp4").uri
    with running_tool("assemble_ffmpeg", home=home, env={"SPARKLE_TOKEN": None}) as tool:
        yield {"tool": tool, "store": store, "uris": uris, "paths": paths}
    store.close()


def invoke(env, clips, **extra):
    uris = env["uris"]
    body = {"run_id": RUN, "clips": [{**c, "uri": uris.get(c["uri"], c["uri"])} for c in clips], **extra}
    if "audio_uri" in body:
        body["audio_uri"] = uris.get(body["audio_uri"], body["audio_uri"])
    return env["tool"].client.post("/invoke", json=body, timeout=120)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_peaky_quiet_audio_is_limited_so_the_loudness_target_is_still_met(env):
    body = ok(invoke(env, [{"uri": "a"}, {"uri": "b"}], audio_uri="peaky"))
    out = env["store"].path_for(body["video_uri"])
    meta = env["store"].get(body["video_uri"]).metadata
    assert meta["loudness"]["peak_limiter_ceiling_dbfs"] is not None
    assert integrated_loudness(out) == pytest.approx(-16.0, abs=1.5)
    assert body["input_loudness_lufs"] < -24


def streams(path: Path) -> dict[str, av.stream.Stream]:
    with av.open(str(path)) as container:
        return {s.type: (s.codec_context.name, dict(s.metadata)) for s in container.streams}


def video_packets(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(video=0) if p.size]


def coded_slices(path: Path) -> list[str]:
    """Hashes of each packet's NAL units minus SPS/PPS (types 7, 8).

    The concat demuxer re-sends the parameter sets in-band at each file's first
    keyframe (identical copies of the avcC ones); everything else must be the
    input's bytes when the stream was copied.
    """
    hashes = []
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            data, pos, kept = bytes(packet), 0, []
            while pos + 4 <= len(data):
                size = int.from_bytes(data[pos:pos + 4], "big")
                nal = data[pos + 4:pos + 4 + size]
                if nal and nal[0] & 0x1F not in (7, 8):
                    kept.append(nal)
                pos += 4 + size
            if kept:
                hashes.append(hashlib.sha256(b"".join(kept)).hexdigest())
    return hashes


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """Interleaved-free mono mix of the first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            chunks.append(data.reshape(-1, frame.samples).mean(axis=0) if frame.format.is_planar
                          else data.reshape(frame.samples, -1).mean(axis=1))
        return np.concatenate(chunks), stream.codec_context.sample_rate


def top_level_boxes(path: Path) -> list[str]:
    boxes, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return boxes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


SUBS = [{"start_s": 0.5, "end_s": 1.2, "text": "Hello there"}, {"start_s": 1.5, "end_s": 2.4, "text": "General\nKenobi"}]


def test_stream_copy_path_with_audio_track_and_soft_subtitles(env):
    body = ok(invoke(env, [{"uri": "a"}, {"uri": "b"}], audio_uri="dialogue", subtitles=SUBS))
    assert body["concat_mode"] == "stream_copy" and body["audio_source"] == "audio_uri"
    store = env["store"]
    out = store.path_for(body["video_uri"])
    kinds = streams(out)
    assert kinds["video"][0] == "h264" and kinds["audio"][0] == "aac" and kinds["subtitle"][0] == "mov_text"
    assert kinds["subtitle"][1].get("language") == "eng"
    # Stream copy: the film's packets are clip A's then clip B's, unchanged.
    assert coded_slices(out) == coded_slices(env["paths"]["a"]) + coded_slices(env["paths"]["b"])
    assert len(video_packets(out)) == 60
    frames = list(decode_video_frames(out))
    assert len(frames) == 60
    with av.open(str(out)) as container:
        assert abs(container.duration / 1e6 - 2.5) <= FRAME_S
    samples, rate = decoded_audio(out)
    assert rate == 48000 and abs(samples.size - 2.5 * rate) <= 1024
    assert np.abs(samples[int(2.05 * rate):]).max() < 0.01  # dialogue was 2.0 s: padded with silence
    # Loudness checked independently (ebur128 scanner) against the -16 LUFS default target.
    assert integrated_loudness(out) == pytest.approx(-16.0, abs=1.5)
    assert body["input_loudness_lufs"] < -20  # the dialogue was quieter than the target
    assert top_level_boxes(out).index("moov") < top_level_boxes(out).index("mdat")  # +faststart

    srt = store.path_for(body["subtitles_uri"]).read_text()
    assert srt == ("1\n00:00:00,500 --> 00:00:01,200\nHello there\n\n"
                   "2\n00:00:01,500 --> 00:00:02,400\nGeneral\nKenobi\n")
    manifest = store.get(body["video_uri"])
    meta = manifest.metadata
    assert meta["concat_mode"] == "stream_copy" and len(meta["ffmpeg_commands"]) == 3
    assert meta["loudness"]["output_lufs"] == pytest.approx(-16.0, abs=1.5)
    assert manifest.duration_s == pytest.approx(2.5, abs=FRAME_S)


def test_reencode_path_honours_trims_and_adds_a_silent_track(env):
    body = ok(invoke(env, [{"uri": "a", "in_s": 0.25, "out_s": 0.75}, {"uri": "c"}]))
    assert body["concat_mode"] == "reencode" and body["audio_source"] == "silence"
    out = env["store"].path_for(body["video_uri"])
    frames = list(decode_video_frames(out))
    assert len(frames) == 12 + 24 and frames[0].shape == (H, W, 3)
    source_a = list(decode_video_frames(env["paths"]["a"]))
    # The trim starts at A's frame 6 and ends after frame 17: the output matches those frames.
    assert psnr(frames[0], source_a[6]) > 30 and psnr(frames[0], source_a[6]) > psnr(frames[0], source_a[5]) + 3
    assert psnr(frames[11], source_a[17]) > 30
    assert psnr(frames[11], source_a[17]) > psnr(frames[11], source_a[18]) + 3
    # C (128x72, 16:9) was scaled to 160x90 and letterboxed into 160x96: 3-pixel black bands.
    assert frames[20][:2].max() < 40 and frames[20][-2:].max() < 40 and frames[20][10:80].mean() > 60
    samples, rate = decoded_audio(out)
    assert abs(samples.size - 1.5 * rate) <= 1024 and np.abs(samples).max() < 1e-3
    assert body["output_loudness_lufs"] is None
    assert "subtitle" not in streams(out) and body["subtitles_uri"] is None


def test_clip_audio_is_concatenated_when_no_track_is_given(env):
    body = ok(invoke(env, [{"uri": "a_audio"}, {"uri": "b"}], options={"loudness_lufs": -23}))
    assert body["audio_source"] == "clips" and body["concat_mode"] == "stream_copy"
    out = env["store"].path_for(body["video_uri"])
    samples, rate = decoded_audio(out)
    assert abs(samples.size - 2.5 * rate) <= 1024
    assert np.abs(samples[int(0.1 * rate):int(0.4 * rate)]).max() > 0.05  # A's tone
    assert np.abs(samples[int(1.05 * rate):]).max() < 0.01  # B has no audio: silence
    assert integrated_loudness(out) == pytest.approx(-23.0, abs=1.5)


def test_burn_subtitles_changes_pixels_only_in_the_interval(env):
    clips = [{"uri": "a"}, {"uri": "b"}]
    subs = [{"start_s": 0.5, "end_s": 1.25, "text": "BURN"}]
    burnt = ok(invoke(env, clips, subtitles=subs, options={"burn_subtitles": True}))
    plain = ok(invoke(env, clips, subtitles=subs, options={"force_reencode": True}))
    assert burnt["concat_mode"] == plain["concat_mode"] == "reencode"
    assert env["store"].get(burnt["video_uri"]).metadata["subtitles_burnt"] in ("libass", "pillow")
    a = list(decode_video_frames(env["store"].path_for(burnt["video_uri"])))
    b = list(decode_video_frames(env["store"].path_for(plain["video_uri"])))
    assert len(a) == len(b) == 60
    assert_burnt_only_inside(a, b, first=12, last=29)


def assert_burnt_only_inside(burnt, plain, *, first, last):
    """Text strokes differ from the unburnt render by far more than x264's re-encoding noise (< 60 levels)."""
    split = int(H * 0.6)
    strokes = [(np.abs(x.astype(int) - y.astype(int)).max(axis=2) > 60) for x, y in zip(burnt, plain)]
    inside = [int(s[split:].sum()) for s in strokes[first:last + 1]]
    outside = [int(s.sum()) for s in strokes[:first] + strokes[last + 1:]]
    assert min(inside) >= 20, inside
    assert max(outside) == 0, outside
    assert all(int(s[:split].sum()) == 0 for s in strokes)  # captions sit at the bottom


def test_pillow_burn_fallback(tmp_path: Path, env):
    out = tmp_path / "burnt.mp4"
    burn_subtitles_pillow(env["paths"]["b"], out, [Subtitle(start_s=0.5, end_s=1.0, text="FALLBACK")], FPS,
                          crf=18, preset="ultrafast")
    burnt, plain = list(decode_video_frames(out)), list(decode_video_frames(env["paths"]["b"]))
    assert len(burnt) == len(plain) == 36
    assert_burnt_only_inside(burnt, plain, first=12, last=23)


def test_same_request_gives_the_same_film(env):
    clips = [{"uri": "a", "out_s": 0.5}, {"uri": "b"}]
    first = ok(invoke(env, clips, audio_uri="dialogue", subtitles=SUBS[:1]))
    second = ok(invoke(env, clips, audio_uri="dialogue", subtitles=SUBS[:1]))
    a, b = (env["store"].path_for(r["video_uri"]) for r in (first, second))
    assert all(np.array_equal(x, y) for x, y in zip(decode_video_frames(a), decode_video_frames(b)))
    assert np.array_equal(decoded_audio(a)[0], decoded_audio(b)[0])
    # ffmpeg here is bit-exact and no creation time is written, so the files are identical too.
    assert env["store"].get(first["video_uri"]).sha256 == env["store"].get(second["video_uri"]).sha256


def test_render_srt_orders_cues_and_drops_blank_lines():
    cues = [Subtitle(start_s=3725.5, end_s=3726.0, text="late"), Subtitle(start_s=0, end_s=0.25, text="a\n\n b")]
    assert render_srt(cues) == "1\n00:00:00,000 --> 00:00:00,250\na\nb\n\n2\n01:02:05,500 --> 01:02:06,000\nlate\n"


@pytest.mark.parametrize("clips, extra, field", [
    ([], {}, "clips"),
    (None, {}, "clips"),
    ([{"uri": "a"}, {"uri": "artifact+fs://../secrets/x"}], {}, "clips[1].uri"),
    ([{"uri": "a"}, {"uri": "/etc/passwd"}], {}, "clips[1].uri"),
    ([{"uri": "a"}, {"uri": "b"}, {"uri": "artifact+fs://assemble-test/inputs/art_nope"}], {}, "clips[2].uri"),
    ([{"uri": "a"}, {"uri": "corrupt"}], {}, "clips[1].uri"),
    ([{"uri": "a"}, {"uri": "dialogue"}], {}, "clips[1].uri"),  # no video stream
    ([{"uri": "a", "out_s": 5.0}], {}, "clips[0].out_s"),
    ([{"uri": "b"}, {"uri": "a", "in_s": 1.0}], {}, "clips[1].in_s"),
    ([{"uri": "a", "in_s": 0.6, "out_s": 0.2}], {}, "clips[0]"),
    ([{"uri": "a", "extra": 1}], {}, "clips[0].extra"),
    ([{"uri": "a"}], {"audio_uri": "b"}, "audio_uri"),  # a clip without audio as the track
    ([{"uri": "a"}], {"audio_uri": "corrupt"}, "audio_uri"),
    ([{"uri": "a"}], {"subtitles": [{"start_s": 0.5, "end_s": 0.2, "text": "x"}]}, "subtitles[0]"),
    ([{"uri": "a"}], {"subtitles": [{"start_s": 0.1, "end_s": 0.2, "text": "ok"},
                                    {"start_s": 0.5, "end_s": 1.5, "text": "x"}]}, "subtitles[1].end_s"),
    ([{"uri": "a"}], {"subtitles": [{"start_s": 0.1, "end_s": 0.2, "text": "x" * 501}]}, "subtitles[0].text"),
    ([{"uri": "a"}], {"options": {"loudness_lufs": -50}}, "options.loudness_lufs"),
    ([{"uri": "a"}], {"options": {"crf": 60}}, "options.crf"),
    ([{"uri": "a"}], {"options": {"preset": "turbo"}}, "options.preset"),
    ([{"uri": "a"}] * 501, {}, "clips"),
])
def test_bad_input_is_4xx_naming_the_field_and_stores_nothing(env, clips, extra, field):
    before = env["store"].list(RUN)
    if clips is None:
        response = env["tool"].client.post("/invoke", json={"run_id": RUN}, timeout=60)
    else:
        response = invoke(env, clips, **extra)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    fields = [error.get("field")] + [d.get("field") for d in error.get("details", [])]
    assert field in fields, error
    assert error["message"]
    assert env["store"].list(RUN) == before
    assert env["tool"].client.get("/ready").status_code == 200
