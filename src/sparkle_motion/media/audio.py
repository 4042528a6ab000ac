"""Mono 16-bit PCM WAV I/O with numpy (float32 samples in [-1, 1])."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from sparkle_motion.errors import InvalidInputError


def read_wav(path: Path, *, field_name: str = "audio_uri") -> tuple[np.ndarray, int]:
    """Read a PCM WAV file; multi-channel audio is averaged to mono. Returns (samples, sample_rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as exc:
        raise InvalidInputError(f"not a readable PCM WAV file: {exc}", field=field_name) from exc
    if width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise InvalidInputError(f"unsupported WAV sample width {width} bytes", field=field_name)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data, rate


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono float samples as 16-bit PCM (clipped to [-1, 1])."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
