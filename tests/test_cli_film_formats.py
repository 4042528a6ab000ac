"""`make --aspect/--fps/--music` and `plan --aspect/--fps` through the real CLI against a running mesh."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest

from sparkle_motion.media import run_ffmpeg
from test_cli import cli, small_mesh_env

TONE_HZ = 6000


@pytest.mark.parametrize("args, option", [
    (["--aspect", "4:3"], "--aspect"),
    (["--aspect", "vertical"], "--aspect"),
    (["--fps", "0"], "--fps"),
    (["--fps", "500"], "--fps"),
    (["--music", "missing.mp3"], "--music"),
    (["--music", "notes.txt"], "--music"),
    (["--cast", "kit"], "--cast"),
    (["--cast", "kit=notes.txt"], "--cast"),
    (["--cast", "kit=missing.png"], "--cast"),
])
def test_bad_format_options_exit_2_naming_the_option(tmp_path, args, option):
    (tmp_path / "notes.txt").write_text("not audio")
    env = {**os.environ, "SPARKLE_HOME": str(tmp_path / "home")}
    result = cli("make", "an idea", *args, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert option in result.stderr
    assert not (tmp_path / "home" / "mesh.json").exists()  # refused before any service started


def test_a_file_without_audio_is_refused_as_music(tmp_path):
    video_only = tmp_path / "silent.mp3"
    run_ffmpeg(["-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=64x64:d=1", "-f", "mp4", str(video_only)])
    env = {**os.environ, "SPARKLE_HOME": str(tmp_path / "home")}
    result = cli("make", "an idea", "--music", str(video_only), env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "--music" in result.stderr and "no audio stream" in result.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("mesh")
def test_vertical_film_with_a_music_bed_and_a_square_plan(tmp_path):
    env = small_mesh_env(tmp_path)
    music = tmp_path / "bed.mp3"
    run_ffmpeg(["-loglevel", "error", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=44100:duration=2",
                "-af", "volume=0.3", "-c:a", "libmp3lame", str(music)])
    out = tmp_path / "vertical.mp4"
    try:
        result = cli("make", "A lighthouse keeper befriends a storm at night", "-o", str(out), "--shots", "2",
                     "--duration", "6", "--seed", "5", "--aspect", "9:16", "--fps", "10", "--music", str(music),
                     env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "QA verdict" in result.stdout and "fail" not in result.stdout.split("QA verdict", 1)[1].split("\n")[0]
        square = tmp_path / "square.json"
        planned = cli("plan", "A robot learns to paint in a quiet forest", "-o", str(square), "--aspect", "1:1",
                      env=env, cwd=tmp_path)
        assert planned.returncode == 0, planned.stderr
    finally:
        cli("down", env=env, cwd=tmp_path)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    # 256x144 keeps its area at 9:16: 144x256, decoded, not just declared.
    assert frames[0].shape == (256, 144, 3)
    assert abs(len(frames) - 6 * 10) <= 1
    assert float(np.std(frames[len(frames) // 2])) > 5  # a picture, not a blank frame
    # The plan carried the bed; the film's audio holds the tone (the dialogue's TTS has no 6 kHz line of its own).
    with av.open(str(out)) as container:
        audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].codec_context.sample_rate
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    tone = spectrum[(freqs > TONE_HZ - 20) & (freqs < TONE_HZ + 20)].max()
    around = np.median(spectrum[(freqs > TONE_HZ - 600) & (freqs < TONE_HZ + 600)])
    assert tone > 30 * around  # a clear spectral line at the bed's tone
    plan = json.loads(square.read_text())
    video = plan["render_profile"]["video"]
    assert video["width"] == video["height"] == 192  # 256x144's area, square, multiple of 8
    assert "square" in plan["base_images"][0]["prompt"]
