"""Synthetic test audio shared by the media tool tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparkle_motion.media import write_wav


def harmonic_bursts(path: Path, duration_s: float, bursts: Sequence[tuple[float, float]], *,
                    amplitude: float, sr: int) -> Path:
    """170 Hz harmonic bursts (fundamental + 2 overtones) at known times in silence.

    Speech-like energy for timing and loudness maths, not speech.
    """
    t = np.arange(int(round(duration_s * sr))) / sr
    x = np.zeros_like(t)
    for start, end in bursts:
        m = (t >= start) & (t < end)
        x[m] = amplitude * sum(np.sin(2 * np.pi * 170 * k * t[m]) / k for k in (1, 2, 3))
    write_wav(path, x, sr)
    return path
