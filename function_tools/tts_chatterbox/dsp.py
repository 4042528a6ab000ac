"""Audio DSP for speech output: resampling, silence trimming, activity and pitch analysis (numpy only)."""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

# Windowed-sinc design: 16 zero crossings each side and a Kaiser beta of 8.6
# give ~-80 dB stop-band; the pass band ends at 95% of the lower Nyquist.
_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6
_ROLLOFF = 0.95


@lru_cache(maxsize=16)
def _polyphase_table(up: int, down: int) -> tuple[np.ndarray, int]:
    """Filter taps arranged by phase: table[p, jj] = h[p + (j0 + jj) * up]; returns (table, j0)."""
    factor = max(up, down)
    half = _ZERO_CROSSINGS * factor
    k = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = _ROLLOFF * 0.5 / factor  # cycles per sample at the upsampled rate
    taps = 2.0 * cutoff * np.sinc(2.0 * cutoff * k) * np.kaiser(2 * half + 1, _KAISER_BETA) * up
    j0 = -(half // up) - 1
    width = 2 * (half // up) + 3
    p = np.arange(up)[:, None]
    jj = np.arange(width)[None, :]
    index = p + (j0 + jj) * up + half
    valid = (index >= 0) & (index <= 2 * half)
    table = np.where(valid, taps[np.clip(index, 0, 2 * half)], 0.0)
    return table, j0


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited rational resampling (polyphase windowed sinc); float32 in, float32 out."""
    x = np.asarray(samples, dtype=np.float64)
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("sample rates must be positive")
    if src_rate == dst_rate or x.size == 0:
        return x.astype(np.float32)
    g = gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    table, j0 = _polyphase_table(up, down)
    width = table.shape[1]
    n_out = -(-x.size * up // down)
    pad = width + 1
    padded = np.concatenate([np.zeros(pad), x, np.zeros(pad + down)])
    # y[n] = sum_jj table[p, jj] * x[base - j0 - jj] with t = n*down, p = t % up, base = t // up.
    # Outputs n0, n0 + up, n0 + 2*up, ... share one phase and their input windows
    # advance by `down` samples, so each phase is one strided view times one filter.
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    reversed_taps = table[:, ::-1]
    out = np.empty(n_out, dtype=np.float64)
    for n0 in range(min(up, n_out)):
        t0 = n0 * down
        phase, base = t0 % up, t0 // up
        count = len(range(n0, n_out, up))
        first = base - j0 - (width - 1) + pad
        out[n0::up] = windows[first: first + (count - 1) * down + 1: down] @ reversed_taps[phase]
    return out.astype(np.float32)


def frame_rms(samples: np.ndarray, frame: int) -> np.ndarray:
    """RMS of consecutive non-overlapping frames (the last partial frame included)."""
    x = np.asarray(samples, dtype=np.float64)
    n = -(-x.size // frame) if x.size else 0
    padded = np.zeros(n * frame)
    padded[: x.size] = x
    return np.sqrt(np.mean(padded.reshape(n, frame) ** 2, axis=1)) if n else np.zeros(0)


def activity_threshold(rms: np.ndarray, *, below_peak_db: float = 40.0, floor: float = 1e-4) -> float:
    """Frames above this are sound: a fixed distance below the loudest frame, never below ``floor``."""
    peak = float(rms.max()) if rms.size else 0.0
    return max(peak * 10.0 ** (-below_peak_db / 20.0), floor)


def trim_silence(samples: np.ndarray, sample_rate: int, *, keep_s: float = 0.02,
                 below_peak_db: float = 40.0) -> tuple[np.ndarray, int, int]:
    """Cut leading/trailing silence, keeping ``keep_s`` of margin so onsets are not clipped.

    Returns (trimmed, samples removed at the start, samples removed at the end).
    An all-silent input is returned unchanged.
    """
    frame = max(1, sample_rate // 100)
    rms = frame_rms(samples, frame)
    active = np.nonzero(rms > activity_threshold(rms, below_peak_db=below_peak_db))[0]
    if active.size == 0:
        return samples, 0, 0
    keep = int(round(keep_s * sample_rate))
    start = max(0, int(active[0]) * frame - keep)
    end = min(len(samples), (int(active[-1]) + 1) * frame + keep)
    return samples[start:end], start, len(samples) - end


def estimate_f0(samples: np.ndarray, sample_rate: int, *, fmin: float = 60.0, fmax: float = 500.0,
                frame_s: float = 0.04, hop_s: float = 0.01, voicing: float = 0.5) -> np.ndarray:
    """Per-frame F0 (Hz) of voiced frames by normalised autocorrelation; unvoiced frames are dropped.

    A frame is voiced when it is loud enough (within 35 dB of the loudest frame)
    and its normalised autocorrelation peak in [1/fmax, 1/fmin] exceeds
    ``voicing``.  To avoid octave-down errors the shortest lag whose
    correlation reaches 90% of the best is taken, then refined by parabolic
    interpolation.
    """
    x = np.asarray(samples, dtype=np.float64)
    length, hop = int(frame_s * sample_rate), int(hop_s * sample_rate)
    if x.size < length:
        return np.zeros(0)
    n_frames = 1 + (x.size - length) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, length)[::hop][:n_frames]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    loud = energy > energy.max() * 10.0 ** (-35.0 / 20.0)
    frames = frames * np.hanning(length)[None, :]
    nfft = 1 << (2 * length - 1).bit_length()
    spec = np.fft.rfft(frames, nfft, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, nfft, axis=1)[:, :length]
    # unbias for the window's own autocorrelation so long lags are not penalised
    win_ac = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(length), nfft)) ** 2, nfft)[:length]
    ac = ac / np.maximum(win_ac[None, :], 1e-12)
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = max(2, int(sample_rate / fmax)), min(length - 2, int(sample_rate / fmin))
    result = []
    for i in np.nonzero(loud)[0]:
        r = ac[i, lo:hi + 1]
        best = r.max()
        if best < voicing:
            continue
        lag = int(np.nonzero(r >= 0.9 * best)[0][0])
        # walk to the local maximum of that first strong peak
        while lag + 1 < r.size and r[lag + 1] > r[lag]:
            lag += 1
        k = lag + lo
        a, b, c = ac[i, k - 1], ac[i, k], ac[i, k + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        result.append(sample_rate / (k + shift))
    return np.asarray(result)
