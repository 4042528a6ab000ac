"""Energy VAD and ffmpeg loudness helpers, on synthetic signals whose truth is known.

The "speech" here is synthetic on purpose: harmonic tone bursts and band-limited
noise bursts at known times over a low noise floor. They test the segment-timing
and loudness maths, not speech recognition.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparkle_motion.errors import InvalidInputError
from sparkle_motion.media import run_ffmpeg, write_wav
from sparkle_motion.media.loudness import integrated_loudness, loudnorm_filter, measure_loudnorm
from sparkle_motion.media.vad import decode_audio_mono, frame_levels_db, speech_segments

SR = 24000
FRAME_24FPS = 1.0 / 24


def harmonic_bursts(bursts, *, total_s, sr=SR, noise_dbfs=-60.0, seed=0):
    """Voiced-like bursts (170 Hz fundamental + harmonics) over white noise at ``noise_dbfs``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(total_s * sr))) / sr
    x = rng.normal(0.0, 10 ** (noise_dbfs / 20), t.size)
    for start, end in bursts:
        m = (t >= start) & (t < end)
        x[m] += 0.08 * sum(np.sin(2 * np.pi * 170 * k * t[m]) / k for k in (1, 2, 3, 4))
    return x.astype(np.float32)


def noise_bursts(bursts, *, total_s, sr=SR, seed=1):
    """Band-limited noise (300-3400 Hz, FFT-masked) bursts in digital silence: fricative-like sound."""
    rng = np.random.default_rng(seed)
    n = int(round(total_s * sr))
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    band = np.fft.irfft(spectrum, n)
    band *= 0.1 / band.std()
    x = np.zeros(n)
    t = np.arange(n) / sr
    for start, end in bursts:
        m = (t >= start) & (t < end)
        x[m] = band[m]
    return x.astype(np.float32)


@pytest.mark.parametrize("make", [harmonic_bursts, noise_bursts])
def test_segments_match_known_burst_times_within_one_frame(make):
    bursts = [(0.25, 0.70), (1.10, 1.45), (1.90, 2.60)]
    segments = speech_segments(make(bursts, total_s=3.0), SR)
    assert len(segments) == len(bursts)
    for (start, end), (s, e) in zip(bursts, segments):
        assert abs(s - start) <= FRAME_24FPS and abs(e - end) <= FRAME_24FPS
        assert isinstance(s, float) and isinstance(e, float)


def test_short_gaps_are_bridged_and_clicks_dropped():
    # 80 ms gap (a pause between words) is bridged; a 20 ms click is not speech.
    x = harmonic_bursts([(0.2, 0.6), (0.68, 1.0), (1.5, 1.52)], total_s=2.0)
    segments = speech_segments(x, SR)
    assert len(segments) == 1
    assert abs(segments[0][0] - 0.2) <= FRAME_24FPS and abs(segments[0][1] - 1.0) <= FRAME_24FPS
    # With bridging disabled the two words come apart.
    assert len(speech_segments(x, SR, min_silence_s=0.0)) == 2


def test_silence_and_continuous_sound():
    assert speech_segments(np.zeros(SR, dtype=np.float32), SR) == []
    assert speech_segments(np.zeros(0, dtype=np.float32), SR) == []
    # Noise floor only (no bursts) stays below the absolute floor.
    assert speech_segments(harmonic_bursts([], total_s=1.0), SR) == []
    whole = speech_segments(harmonic_bursts([(0.0, 1.5)], total_s=1.5), SR)
    assert len(whole) == 1 and whole[0][0] == 0.0 and abs(whole[0][1] - 1.5) < 0.011


def test_frame_levels_and_bad_rate():
    levels = frame_levels_db(np.full(2400, 0.5, dtype=np.float32), SR)
    assert levels.shape == (10,) and np.allclose(levels, 20 * np.log10(0.5), atol=1e-4)
    with pytest.raises(InvalidInputError) as err:
        speech_segments(np.zeros(10), 0)
    assert err.value.field == "sample_rate"


def test_decode_audio_mono_reads_aac_and_names_the_field_on_garbage(tmp_path: Path):
    x = harmonic_bursts([(0.2, 0.5)], total_s=1.0)
    wav = tmp_path / "a.wav"
    write_wav(wav, x, SR)
    m4a = tmp_path / "a.m4a"
    run_ffmpeg(["-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "96k", str(m4a)])
    samples, rate = decode_audio_mono(m4a)
    assert rate == SR and abs(samples.size - SR) < 2048
    (s, e), = speech_segments(samples, rate)
    assert abs(s - 0.2) <= FRAME_24FPS and abs(e - 0.5) <= FRAME_24FPS
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 100)
    with pytest.raises(InvalidInputError) as err:
        decode_audio_mono(junk, field_name="audio_uri")
    assert err.value.field == "audio_uri"


def test_loudness_of_a_known_sine_and_normalisation(tmp_path: Path):
    # A mono 1 kHz sine at -20 dBFS peak reads -23.0 LUFS (EBU Tech 3341 calibration: 0 dBFS sine = -3.01).
    t = np.arange(3 * 48000) / 48000
    wav = tmp_path / "sine.wav"
    write_wav(wav, 0.1 * np.sin(2 * np.pi * 1000 * t), 48000)
    measured = measure_loudnorm(wav)
    assert measured.integrated_lufs == pytest.approx(-23.0, abs=0.3)
    assert integrated_loudness(wav) == pytest.approx(-23.0, abs=0.3)
    out = tmp_path / "norm.wav"
    run_ffmpeg(["-loglevel", "error", "-i", str(wav), "-af",
                f"{loudnorm_filter(measured, target_lufs=-16.0)},aresample=48000", str(out)])
    assert integrated_loudness(out) == pytest.approx(-16.0, abs=0.5)

    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(48000), 48000)
    assert measure_loudnorm(silent).is_silent
    assert integrated_loudness(silent) is None


def test_decoding_stereo_averages_channels_without_a_downmix_gain(tmp_path):
    """Two identical channels at 0.8 decode to 0.8 mono, not ffmpeg's -3 dB-per-channel sum (1.13)."""
    from sparkle_motion.media import run_ffmpeg, write_wav
    from sparkle_motion.media.vad import decode_audio_mono

    sr = 24000
    t = np.arange(sr) / sr
    mono = tmp_path / "mono.wav"
    write_wav(mono, 0.8 * np.sin(2 * np.pi * 220 * t), sr)
    stereo = tmp_path / "stereo.wav"
    run_ffmpeg(["-i", str(mono), "-af", "pan=stereo|c0=c0|c1=c0", "-c:a", "pcm_s16le", str(stereo)])
    samples, rate = decode_audio_mono(stereo)
    assert rate == sr
    assert 0.78 < float(np.abs(samples).max()) < 0.82
