"""Checks that a decoded WAV holds speech, shared by the tts_chatterbox backend tests (a plain module)."""

from __future__ import annotations

import hashlib
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.dsp import estimate_f0
from sparkle_motion.artifacts import ArtifactStore


def decode_wav(path: Path) -> tuple[np.ndarray, int, int, int]:
    """(float samples, sample rate, channels, sample width in bytes) via the stdlib decoder."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float64) / 32768.0, rate, channels, width


def speech_evidence(x: np.ndarray, sr: int) -> dict[str, float]:
    """Signal properties that separate speech from tones, noise and silence."""
    frame = sr // 100  # 10 ms
    n = len(x) // frame
    frames = x[: n * frame].reshape(n, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    db = 20 * np.log10(rms / rms.max())
    active = db > -35
    # energy dips: 10 dB valleys between louder neighbours within 150 ms (gaps between syllables/words)
    smooth = np.convolve(db, np.ones(3) / 3, mode="same")
    dips = 0
    for i in range(15, n - 15):
        if smooth[i] == smooth[i - 15:i + 16].min() and \
                min(smooth[i - 15:i].max(), smooth[i + 1:i + 16].max()) - smooth[i] > 10:
            dips += 1
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1)[active]
    spectrum = np.abs(np.fft.rfft(frames[active] * np.hanning(frame), axis=1)) + 1e-12
    flatness = np.exp(np.mean(np.log(spectrum), axis=1)) / np.mean(spectrum, axis=1)
    voiced = estimate_f0(x, sr)
    return {
        "dips": dips,
        "active_fraction": float(active.mean()),
        "voiced_frames": float(len(voiced)),
        "zcr_cv": float(np.std(zcr) / (np.mean(zcr) + 1e-9)),
        "flatness_std": float(np.std(flatness)),
        "median_f0": float(np.median(voiced)) if len(voiced) else 0.0,
    }


def looks_like_speech(ev: dict[str, float], duration_s: float, words: int) -> bool:
    return (ev["dips"] >= words // 3 and ev["voiced_frames"] >= 0.3 * duration_s * 100
            and 0.4 < ev["active_fraction"] < 0.99 and ev["zcr_cv"] > 0.5 and ev["flatness_std"] > 0.03
            and 60 < ev["median_f0"] < 400)


REPEATED_REQUEST = {"text": "Do you remember the night we met?", "voice": {"character_id": "zoe", "style": "calm"},
                    "seed": 11}


def assert_same_request_same_bytes(invoke: Callable[..., dict[str, Any]], store: ArtifactStore
                                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send one request twice: two artifacts with byte-identical WAVs; returns both replies."""
    first, second = invoke(**REPEATED_REQUEST), invoke(**REPEATED_REQUEST)
    assert first["audio_uri"] != second["audio_uri"]
    digest = [hashlib.sha256(store.path_for(b["audio_uri"]).read_bytes()).hexdigest() for b in (first, second)]
    assert digest[0] == digest[1]
    assert store.get(first["audio_uri"]).sha256 == store.get(second["audio_uri"]).sha256
    return first, second
