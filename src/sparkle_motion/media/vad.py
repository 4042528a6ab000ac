"""Energy-based voice activity detection, shared by lipsync alignment and QA.

This is deliberately simple signal processing, not a speech model: short frames
are classed as active when their RMS level clears an adaptive threshold, then
short gaps are bridged and blips dropped. It finds *where there is sound worth
aligning to*; it cannot tell speech from music or noise of the same level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparkle_motion.errors import BackendError, InvalidInputError
from sparkle_motion.media.ffmpeg import run_ffmpeg

# Anything quieter than this is silence whatever the adaptive threshold says;
# 16-bit dither sits near -90 dBFS, room tone in a quiet recording near -60.
ABSOLUTE_FLOOR_DBFS = -50.0
# Continuous speech dips 20-30 dB between syllables, so a threshold further than
# this below the loud frames would swallow background noise into the speech.
BELOW_PEAK_DB = 25.0
# A frame must clear the noise floor by this much to count as active.
ABOVE_FLOOR_DB = 10.0
_SILENCE_DB = -120.0


def frame_levels_db(samples: np.ndarray, sample_rate: int, *, frame_s: float = 0.01) -> np.ndarray:
    """RMS level in dBFS of consecutive non-overlapping frames of ``frame_s`` seconds."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    hop = max(1, int(round(frame_s * sample_rate)))
    n_frames = int(np.ceil(x.size / hop)) if x.size else 0
    if n_frames == 0:
        return np.zeros(0)
    padded = np.zeros(n_frames * hop)
    padded[: x.size] = x
    rms = np.sqrt(np.mean(padded.reshape(n_frames, hop) ** 2, axis=1))
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(rms)
    return np.maximum(db, _SILENCE_DB)


def adaptive_threshold_db(levels_db: np.ndarray) -> float:
    """Threshold between the noise floor (10th percentile) and the loud frames (95th)."""
    if levels_db.size == 0:
        return ABSOLUTE_FLOOR_DBFS
    floor = float(np.percentile(levels_db, 10))
    peak = float(np.percentile(levels_db, 95))
    return max(ABSOLUTE_FLOOR_DBFS, min(peak - BELOW_PEAK_DB, floor + ABOVE_FLOOR_DB))


def speech_segments(
    samples: np.ndarray,
    sample_rate: int,
    *,
    frame_s: float = 0.01,
    threshold_db: float | None = None,
    min_speech_s: float = 0.06,
    min_silence_s: float = 0.15,
) -> list[tuple[float, float]]:
    """Return ``[(start_s, end_s), ...]`` of active (voiced or loud) regions, in order.

    Gaps shorter than ``min_silence_s`` are bridged (pauses between words are
    part of one phrase); segments shorter than ``min_speech_s`` are dropped
    (clicks). Boundaries are accurate to ``frame_s``.
    """
    if sample_rate <= 0:
        raise InvalidInputError(f"sample rate must be positive, got {sample_rate}", field="sample_rate")
    levels = frame_levels_db(samples, sample_rate, frame_s=frame_s)
    if levels.size == 0:
        return []
    threshold = adaptive_threshold_db(levels) if threshold_db is None else threshold_db
    active = levels > threshold
    hop_s = max(1, int(round(frame_s * sample_rate))) / sample_rate
    total_s = np.asarray(samples).size / sample_rate

    # Run boundaries: +1 where activity starts, -1 where it stops.
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    runs: list[list[float]] = []
    for a, b in zip(starts, stops):
        start, end = a * hop_s, min(b * hop_s, total_s)
        if runs and start - runs[-1][1] < min_silence_s:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    return [(round(float(s), 6), round(float(e), 6)) for s, e in runs if e - s >= min_speech_s]


def decode_audio_mono(path: Path, *, sample_rate: int | None = None, field_name: str = "audio_uri") -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any media file to mono float32 with ffmpeg.

    Unlike ``read_wav`` this accepts every container/codec ffmpeg reads (AAC in
    MP4, MP3, FLAC...). ``sample_rate`` None keeps the stream's own rate.
    """
    from sparkle_motion.media.ffmpeg import probe

    info = probe(path, field_name=field_name)
    stream = info.first("audio")
    if stream is None:
        raise InvalidInputError("media has no audio stream", field=field_name)
    rate = int(sample_rate or stream.sample_rate or 48000)
    channels = max(1, int(stream.channels or 1))
    try:
        # All channels come out interleaved and are averaged here: ffmpeg's own `-ac 1`
        # downmix sums stereo at -3 dB per channel, i.e. +3 dB on correlated audio, which
        # would turn a -1.3 dBFS peak into "clipping".
        proc = run_ffmpeg(["-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", str(channels),
                           "-ar", str(rate), "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"])
    except BackendError as exc:  # the container parsed but its audio does not decode: the input is bad
        raise InvalidInputError("audio could not be decoded", field=field_name,
                                context={"stderr": str(exc.context.get("stderr", ""))[-500:]}) from exc
    samples = np.frombuffer(proc.stdout, dtype="<f4")
    samples = samples[: samples.size - samples.size % channels].reshape(-1, channels).mean(axis=1)
    return samples.astype(np.float32), rate
