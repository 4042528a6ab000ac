"""The music bed of assemble_ffmpeg, through the real process: looped, faded, ducked under dialogue.

The music is a steady 6 kHz tone (an MP3 made by ffmpeg, shorter than the film so it
must loop); the dialogue is 170 Hz harmonic bursts (nothing above 600 Hz). So the
energy in a narrow band around 6 kHz of the decoded film is the music alone, and its
level while a line is spoken against between lines measures the ducking.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from media_fixtures import harmonic_bursts
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.media import run_ffmpeg
from sparkle_motion.media.loudness import integrated_loudness
from sparkle_motion.testing import running_tool
from test_assemble import decoded_audio, moving_clip

pytestmark = pytest.mark.xdist_group("assemble_ffmpeg")

RUN = "assemble-music"
TONE_HZ = 6000.0
FILM_S = 8.0  # two 4 s clips at 24 fps
LINES = [(1.5, 3.0), (5.0, 6.5)]
FADE_S = 0.5


def syllables(lines: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Each line as 0.2 s voiced bursts every 0.25 s: gaps between syllables, as in speech."""
    return [(t, t + 0.2) for start, end in lines for t in np.arange(start, end - 0.2 + 1e-9, 0.25)]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("music-home")
    src = tmp_path_factory.mktemp("music-src")
    store = ArtifactStore(home)
    music = src / "music.mp3"
    run_ffmpeg(["-loglevel", "error", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ:g}:sample_rate=44100:duration=3",
                "-af", "volume=0.3", "-c:a", "libmp3lame", "-b:a", "128k", str(music)])
    paths = {"a": moving_clip(src / "a.mp4", 96), "b": moving_clip(src / "b.mp4", 96, seed=1),
             "dialogue": harmonic_bursts(src / "dialogue.wav", FILM_S, syllables(LINES), amplitude=0.1, sr=24000),
             "music": music}
    types = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".mp4": "video/mp4"}
    uris = {name: store.put(RUN, "inputs", "input", path, types[path.suffix], ext=path.suffix).uri
            for name, path in paths.items()}
    with running_tool("assemble_ffmpeg", home=home, env={"SPARKLE_TOKEN": None}) as tool:
        yield {"tool": tool, "store": store, "uris": uris}
    store.close()


def assemble(env, **music) -> dict:
    uris = env["uris"]
    body = {"run_id": RUN, "clips": [{"uri": uris["a"]}, {"uri": uris["b"]}], "audio_uri": uris["dialogue"],
            "music": {"uri": uris["music"], "fade_s": FADE_S, **music}}
    response = env["tool"].client.post("/invoke", json=body, timeout=180)
    assert response.status_code == 200, response.text
    return response.json()


def band_levels_db(samples: np.ndarray, sr: int, *, window_s: float = 0.05) -> np.ndarray:
    """Level (dBFS) of the band TONE_HZ ± 150 Hz in consecutive windows."""
    n = int(window_s * sr)
    frames = samples[: len(samples) // n * n].reshape(-1, n) * np.hanning(n)
    spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / sr)
    band = (freqs > TONE_HZ - 150) & (freqs < TONE_HZ + 150)
    power = spectrum[:, band].sum(axis=1) * 2 / (n * (np.hanning(n) ** 2).sum())
    return 10 * np.log10(power + 1e-20)


def level_in(levels: np.ndarray, start: float, end: float, *, window_s: float = 0.05) -> float:
    return float(np.median(levels[int(start / window_s):int(end / window_s)]))


def test_music_is_ducked_at_least_10_db_under_each_line_and_the_film_meets_its_loudness(env):
    body = assemble(env)
    store = env["store"]
    film = store.path_for(body["video_uri"])
    samples, sr = decoded_audio(film)
    levels = band_levels_db(samples, sr)
    # Between lines (after the fade-in, and the 3 s file looped past its end), and inside each line
    # (after the compressor's attack, before its release).
    between = [level_in(levels, FADE_S + 0.2, LINES[0][0] - 0.05), level_in(levels, LINES[0][1] + 0.6, LINES[1][0] - 0.05)]
    during = [level_in(levels, start + 0.25, end - 0.05) for start, end in LINES]
    print(f"music band level between lines {between} dB, during lines {during} dB")
    assert min(between) > -45, f"the music is missing between lines: {between}"
    for quiet in during:
        assert max(between) - quiet >= 10.0, f"ducked only {max(between) - quiet:.1f} dB (between {between}, during {during})"
        assert min(between) - quiet >= 10.0
    assert abs(between[0] - between[1]) < 3.0  # the loop keeps the bed steady past the file's 3 s
    # Faded in and out: the first and last 50 ms are far below the steady bed.
    assert levels[0] < min(between) - 12 and levels[-1] < min(between) - 12
    assert integrated_loudness(film) == pytest.approx(-16.0, abs=1.5)
    meta = store.get(body["video_uri"]).metadata["music"]
    assert meta["looped"] is True and meta["uri"] == env["uris"]["music"] and body["music"]["duck_db"] == 15.0


def test_a_deeper_duck_asked_for_gives_a_deeper_duck(env):
    shallow = band_levels_db(*decoded_audio(env["store"].path_for(assemble(env, duck_db=10.0)["video_uri"])))
    deep = band_levels_db(*decoded_audio(env["store"].path_for(assemble(env, duck_db=25.0)["video_uri"])))

    def depth(levels: np.ndarray) -> float:
        return level_in(levels, LINES[0][1] + 0.6, LINES[1][0] - 0.05) - level_in(levels, LINES[1][0] + 0.25,
                                                                                  LINES[1][1] - 0.05)
    assert depth(deep) > depth(shallow) + 5.0


@pytest.mark.parametrize("music, field", [
    ({"uri": "dialogue_video"}, "music.uri"),
    ({"uri": "artifact+fs://assemble-music/inputs/missing"}, "music.uri"),
    ({"uri": "music", "duck_db": 2.0}, "music.duck_db"),
])
def test_bad_music_is_422_naming_the_field(env, music, field):
    uris = {**env["uris"], "dialogue_video": env["uris"]["a"]}
    body = {"run_id": RUN, "clips": [{"uri": uris["a"]}], "audio_uri": uris["dialogue"],
            "music": {**music, "uri": uris.get(music["uri"], music["uri"])}}
    response = env["tool"].client.post("/invoke", json=body, timeout=120)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
