"""QA checks as pure functions over decoded media (numpy arrays, times, VAD segments).

Decoding lives in the backend (``signal.py``); everything here is deterministic
arithmetic that unit tests drive directly.  Every threshold comes from
``configs/qa_policy.yaml`` through :class:`QAPolicy`.

Score direction (also in docs/tools/qa_qwen2vl.md): for black_frames,
frozen_frames, unexpected_speech, clipping, duration_mismatch, loudness and
text_policy a score *above* the threshold fails; for missing_speech,
continuity and degenerate_image a score *below* the threshold fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from function_tools.qa_qwen2vl.report import QACheckResult, TimeInterval
from sparkle_motion.config import project_path
from sparkle_motion.errors import ConfigError

Interval = tuple[float, float]

# ---------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlackFramesPolicy(_Section):
    luma_max: float = Field(ge=0, le=255)
    max_frames: int = Field(ge=0)


class FrozenFramesPolicy(_Section):
    diff_max: float = Field(ge=0, le=255)
    max_seconds: float = Field(gt=0)


class SpeechPolicy(_Section):
    min_coverage: float = Field(ge=0, le=1)
    max_unexpected_s: float = Field(ge=0)
    boundary_margin_s: float = Field(ge=0)


class ClippingPolicy(_Section):
    level: float = Field(gt=0, le=1)
    max_fraction: float = Field(ge=0, le=1)


class DurationPolicy(_Section):
    audio_tolerance_s: float = Field(gt=0)


class LoudnessPolicy(_Section):
    target_lufs: float = Field(ge=-70, le=0)
    tolerance_lu: float = Field(gt=0)


class ContinuityPolicy(_Section):
    size: int = Field(ge=16, le=1024)
    min_ssim: float = Field(ge=-1, le=1)
    max_phash_distance: int = Field(ge=0, le=64)


class DegenerateImagePolicy(_Section):
    min_luma_std: float = Field(ge=0)
    max_dominant_colour_fraction: float = Field(gt=0, le=1)
    min_entropy_bits: float = Field(ge=0, le=8)


class CharacterConsistencyPolicy(_Section):
    max_distance: float = Field(0.35, gt=0, le=1)
    bins: int = Field(8, ge=2, le=32)


class LimitsPolicy(_Section):
    max_media_bytes: int = Field(ge=1)
    analysis_width: int = Field(ge=16, le=1920)
    max_video_seconds: float = Field(gt=0)
    max_analysed_frames: int = Field(ge=2)
    max_audio_seconds: float = Field(gt=0)
    analysis_sample_rate: int = Field(ge=8000, le=48000)
    max_image_pixels: int = Field(ge=1)


class TextPolicy(_Section):
    blocked_terms: dict[str, list[str]] = Field(default_factory=dict)


class PlanScreeningPolicy(_Section):
    """What plan intake (``sparkle_motion.plan.policy``) may let through that the text policy blocks elsewhere."""

    negative_prompt_allowed: list[str] = Field(default_factory=list)   # blocked_terms categories


class QAPolicy(_Section):
    version: str
    black_frames: BlackFramesPolicy
    frozen_frames: FrozenFramesPolicy
    speech: SpeechPolicy
    clipping: ClippingPolicy
    duration: DurationPolicy
    loudness: LoudnessPolicy
    continuity: ContinuityPolicy
    degenerate_image: DegenerateImagePolicy
    character_consistency: CharacterConsistencyPolicy = CharacterConsistencyPolicy()
    limits: LimitsPolicy
    text_policy: TextPolicy
    plan_screening: PlanScreeningPolicy = PlanScreeningPolicy()


def load_policy(path: Path | None = None) -> QAPolicy:
    """Read and validate the QA policy (default: ``configs/qa_policy.yaml``)."""
    path = Path(path) if path is not None else project_path("configs/qa_policy.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"QA policy file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"QA policy {path} is not valid YAML: {exc}") from exc
    try:
        return QAPolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"QA policy {path}: {where}: {first['msg']}", field=where,
                          context={"path": str(path), "errors": len(exc.errors())}) from exc


# ---------------------------------------------------------------------------
# Interval arithmetic
# ---------------------------------------------------------------------------


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) index pairs of each run of True in a 1-D bool array."""
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return []
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def merge_intervals(intervals: Sequence[Interval]) -> list[Interval]:
    merged: list[list[float]] = []
    for start, end in sorted((float(s), float(e)) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def subtract_intervals(base: Sequence[Interval], remove: Sequence[Interval]) -> list[Interval]:
    """Parts of ``base`` not covered by ``remove``."""
    result: list[Interval] = []
    cuts = merge_intervals(remove)
    for start, end in merge_intervals(base):
        cursor = start
        for cut_start, cut_end in cuts:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                result.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
            if cursor >= end:
                break
        if cursor < end:
            result.append((cursor, end))
    return result


def overlap_seconds(intervals: Sequence[Interval], window: Interval) -> float:
    lo, hi = window
    return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in merge_intervals(intervals))


def _fmt_spans(spans: Sequence[Interval], limit: int = 5) -> str:
    text = ", ".join(f"{s:.2f}-{e:.2f} s" for s, e in spans[:limit])
    return text + (f" (+{len(spans) - limit} more)" if len(spans) > limit else "")


def _spans(spans: Sequence[Interval]) -> list[TimeInterval]:
    return [TimeInterval(start_s=round(s, 4), end_s=round(e, 4)) for s, e in spans if e > s]


# ---------------------------------------------------------------------------
# Video checks: inputs are per analysed frame (time in seconds, source frame index)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSeries:
    """Per-frame measurements of one video, decoded with a stride.

    ``step_s`` is the media time one analysed frame stands for (stride / fps),
    ``stride`` the number of source frames it stands for.
    """

    times_s: np.ndarray        # presentation time of each analysed frame
    indices: np.ndarray        # source frame index of each analysed frame
    mean_luma: np.ndarray      # mean luma (0-255) of each analysed frame
    diffs: np.ndarray          # mean |luma delta| to the first frame of the current still (len n-1)
    step_s: float
    stride: int


def check_black_frames(series: FrameSeries, policy: BlackFramesPolicy, *,
                       media_uri: str | None = None) -> QACheckResult:
    """Runs of frames with mean luma <= luma_max; score = longest run in source frames (fails above max_frames)."""
    runs = true_runs(series.mean_luma <= policy.luma_max)
    run_frames = [(b - a + 1) * series.stride for a, b in runs]
    longest = max(run_frames, default=0)
    bad = [(a, b) for (a, b), n in zip(runs, run_frames) if n > policy.max_frames]
    spans = [(float(series.times_s[a]), float(series.times_s[b]) + series.step_s) for a, b in bad]
    metrics = {"black_runs": len(runs), "analysed_frames": int(series.mean_luma.size), "stride": series.stride,
               "min_mean_luma": round(float(series.mean_luma.min()), 3) if series.mean_luma.size else None}
    if bad:
        a = bad[0][0]
        detail = (f"{len(bad)} black segment(s) longer than {policy.max_frames} frames "
                  f"(mean luma <= {policy.luma_max:g}): {_fmt_spans(spans)}")
        return QACheckResult(name="black_frames", status="failed", score=longest, threshold=policy.max_frames,
                             detail=detail, time_s=round(float(series.times_s[a]), 4), frame=int(series.indices[a]),
                             media_uri=media_uri, segments=_spans(spans), metrics=metrics)
    detail = f"longest black run {longest} frame(s), limit {policy.max_frames}"
    return QACheckResult(name="black_frames", status="passed", score=longest, threshold=policy.max_frames,
                         detail=detail, media_uri=media_uri, metrics=metrics)


def check_frozen_frames(series: FrameSeries, policy: FrozenFramesPolicy, allow_holds: Sequence[Interval] = (),
                        *, media_uri: str | None = None) -> QACheckResult:
    """Still stretches outside ``allow_holds``; score = longest such stretch in seconds (fails above max_seconds)."""
    # diffs[i] compares analysed frames i and i+1, so a run of small diffs a..b
    # means frames a..b+1 show the same picture.
    runs = true_runs(series.diffs < policy.diff_max)
    stills = [(float(series.times_s[a]), float(series.times_s[b + 1]) + series.step_s) for a, b in runs]
    # Each still is excused separately: two stills that touch are separated by a visible
    # change, so merging them would report one long freeze that never happened.
    unintended = [piece for still in stills for piece in subtract_intervals([still], allow_holds)]
    longest = max((e - s for s, e in unintended), default=0.0)
    too_long = [(s, e) for s, e in unintended if e - s > policy.max_seconds + 1e-9]
    metrics = {"still_segments": len(stills), "held_seconds_excused": round(
        sum(e - s for s, e in stills) - sum(e - s for s, e in unintended), 4),
        "analysed_frames": int(series.times_s.size), "stride": series.stride,
        "median_diff": round(float(np.median(series.diffs)), 4) if series.diffs.size else None}
    score = round(longest, 4)
    if too_long:
        start = too_long[0][0]
        idx = int(np.searchsorted(series.times_s, start - 1e-6))
        detail = (f"{len(too_long)} frozen segment(s) longer than {policy.max_seconds:g} s outside allowed holds: "
                  f"{_fmt_spans(too_long)}")
        return QACheckResult(name="frozen_frames", status="failed", score=score, threshold=policy.max_seconds,
                             detail=detail, time_s=round(start, 4),
                             frame=int(series.indices[min(idx, series.indices.size - 1)]),
                             media_uri=media_uri, segments=_spans(too_long), metrics=metrics)
    detail = f"longest unintended still {score:.2f} s, limit {policy.max_seconds:g} s"
    return QACheckResult(name="frozen_frames", status="passed", score=score, threshold=policy.max_seconds,
                         detail=detail, media_uri=media_uri, metrics=metrics)


# ---------------------------------------------------------------------------
# Audio checks
# ---------------------------------------------------------------------------


def check_missing_speech(speech: Sequence[Interval], expected: Sequence[Interval], audio_duration_s: float,
                         policy: SpeechPolicy, *, media_uri: str | None = None) -> QACheckResult:
    """Silence where speech is expected; score = lowest speech coverage of an expected interval (fails below)."""
    coverages = [(overlap_seconds(speech, (s, e)) / (e - s), (s, e)) for s, e in expected]
    metrics = {"speech_segments": len(speech), "audio_duration_s": round(audio_duration_s, 4),
               "coverage": [round(c, 4) for c, _ in coverages]}
    if not coverages:
        return QACheckResult(name="missing_speech", status="passed", score=1.0, threshold=policy.min_coverage,
                             detail="no speech expected", media_uri=media_uri, metrics=metrics)
    worst = min(c for c, _ in coverages)
    short = [(iv, c) for c, iv in coverages if c < policy.min_coverage]
    if short:
        spans = [iv for iv, _ in short]
        listed = ", ".join(f"{s:.2f}-{e:.2f} s ({c:.0%} speech)" for (s, e), c in short[:5])
        detail = f"{len(short)} expected speech interval(s) mostly silent: {listed}"
        return QACheckResult(name="missing_speech", status="failed", score=round(worst, 4),
                             threshold=policy.min_coverage, detail=detail, time_s=round(spans[0][0], 4),
                             media_uri=media_uri, segments=_spans(spans), metrics=metrics)
    return QACheckResult(name="missing_speech", status="passed", score=round(worst, 4), threshold=policy.min_coverage,
                         detail=f"speech found in every expected interval (lowest coverage {worst:.0%})",
                         media_uri=media_uri, metrics=metrics)


def check_unexpected_speech(speech: Sequence[Interval], expected: Sequence[Interval], policy: SpeechPolicy,
                            *, media_uri: str | None = None) -> QACheckResult:
    """Speech outside the expected intervals (padded by the margin); score = its total seconds (fails above)."""
    m = policy.boundary_margin_s
    allowed = [(max(0.0, s - m), e + m) for s, e in expected]
    outside = subtract_intervals(speech, allowed)
    total = round(sum(e - s for s, e in outside), 4)
    metrics = {"speech_segments": len(speech), "unexpected_segments": len(outside)}
    if total > policy.max_unexpected_s:
        detail = f"{total:.2f} s of speech where silence is expected: {_fmt_spans(outside)}"
        return QACheckResult(name="unexpected_speech", status="failed", score=total,
                             threshold=policy.max_unexpected_s, detail=detail, time_s=round(outside[0][0], 4),
                             media_uri=media_uri, segments=_spans(outside), metrics=metrics)
    return QACheckResult(name="unexpected_speech", status="passed", score=total, threshold=policy.max_unexpected_s,
                         detail=f"{total:.2f} s of speech outside expected intervals", media_uri=media_uri,
                         metrics=metrics)


def count_clipped(samples: np.ndarray, level: float) -> int:
    """Samples (any channel) at or beyond ``level`` of full scale."""
    return int(np.count_nonzero(np.abs(samples) >= level))


def check_clipping(clipped: int, total: int, policy: ClippingPolicy, *, first_clip_s: float | None = None,
                   media_uri: str | None = None) -> QACheckResult:
    """Fraction of samples at full scale; score = that fraction (fails above max_fraction)."""
    if total <= 0:
        return QACheckResult(name="clipping", status="inconclusive", threshold=policy.max_fraction,
                             detail="no audio samples to measure", media_uri=media_uri)
    fraction = clipped / total
    metrics = {"clipped_samples": clipped, "samples": total, "level": policy.level}
    if fraction > policy.max_fraction:
        detail = f"{fraction:.2%} of samples at full scale (limit {policy.max_fraction:.2%})"
        return QACheckResult(name="clipping", status="failed", score=round(fraction, 6), threshold=policy.max_fraction,
                             detail=detail, time_s=None if first_clip_s is None else round(first_clip_s, 4),
                             media_uri=media_uri, metrics=metrics)
    return QACheckResult(name="clipping", status="passed", score=round(fraction, 6), threshold=policy.max_fraction,
                         detail=f"{fraction:.3%} of samples at full scale", media_uri=media_uri, metrics=metrics)


def check_loudness(measured_lufs: float, target_lufs: float, tolerance_lu: float, *,
                   media_uri: str | None = None) -> QACheckResult:
    """Integrated loudness vs target; score = |deviation| in LU (fails above the tolerance)."""
    deviation = abs(measured_lufs - target_lufs)
    metrics = {"measured_lufs": round(measured_lufs, 2), "target_lufs": target_lufs}
    ok = deviation <= tolerance_lu
    detail = (f"integrated loudness {measured_lufs:.1f} LUFS, target {target_lufs:g} ± {tolerance_lu:g} LU")
    return QACheckResult(name="loudness", status="passed" if ok else "failed", score=round(deviation, 3),
                         threshold=tolerance_lu, detail=detail if ok else detail + " — out of range",
                         media_uri=media_uri, metrics=metrics)


# ---------------------------------------------------------------------------
# Duration
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DurationComparison:
    label: str            # what was compared, e.g. "video vs expected"
    measured_s: float
    reference_s: float
    tolerance_s: float

    @property
    def error_s(self) -> float:
        return abs(self.measured_s - self.reference_s)


def check_duration(comparisons: Sequence[DurationComparison], *, media_uri: str | None = None) -> QACheckResult:
    """Every comparison within its tolerance; score = the worst error in seconds, threshold its tolerance."""
    if not comparisons:
        return QACheckResult(name="duration_mismatch", status="inconclusive",
                             detail="nothing to compare: no expectations.duration_s and no audio+video pair",
                             media_uri=media_uri)
    worst = max(comparisons, key=lambda c: c.error_s / c.tolerance_s)
    metrics = {c.label: {"measured_s": round(c.measured_s, 4), "reference_s": round(c.reference_s, 4),
                         "tolerance_s": round(c.tolerance_s, 4)} for c in comparisons}
    bad = [c for c in comparisons if c.error_s > c.tolerance_s + 1e-9]
    if bad:
        detail = "; ".join(f"{c.label}: {c.measured_s:.3f} s vs {c.reference_s:.3f} s "
                           f"(off by {c.error_s:.3f} s, tolerance {c.tolerance_s:.3f} s)" for c in bad)
        return QACheckResult(name="duration_mismatch", status="failed", score=round(worst.error_s, 4),
                             threshold=round(worst.tolerance_s, 4), detail=detail, media_uri=media_uri,
                             metrics=metrics)
    detail = "; ".join(f"{c.label}: off by {c.error_s:.3f} s" for c in comparisons)
    return QACheckResult(name="duration_mismatch", status="passed", score=round(worst.error_s, 4),
                         threshold=round(worst.tolerance_s, 4), detail=detail, media_uri=media_uri, metrics=metrics)


# ---------------------------------------------------------------------------
# Frames and images
# ---------------------------------------------------------------------------


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (float32, 0-255) of an RGB uint8 image."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def resize_luma(luma: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average resize of a luma plane to (width, height)."""
    img = Image.fromarray(np.clip(luma, 0, 255).astype(np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BOX), dtype=np.float64)


@lru_cache(maxsize=16)
def _gaussian_filter_matrix(n: int, radius: int = 5, sigma: float = 1.5) -> np.ndarray:
    """(n - 2r) x n matrix applying a 'valid' 1-D Gaussian window of width 2r+1."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    g /= g.sum()
    out = n - 2 * radius
    m = np.zeros((out, n))
    for i in range(out):
        m[i, i:i + 2 * radius + 1] = g
    return m


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03) of two luma planes."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two equal 2-D planes, got {a.shape} and {b.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"ssim needs planes of at least 11x11, got {a.shape}")
    gh, gw = _gaussian_filter_matrix(a.shape[0]), _gaussian_filter_matrix(a.shape[1])

    def blur(x: np.ndarray) -> np.ndarray:
        return gh @ x @ gw.T

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


@lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


def phash(luma: np.ndarray) -> int:
    """64-bit perceptual hash: DCT of the 32x32 luma, low 8x8 frequencies above their median."""
    small = resize_luma(luma, (32, 32))
    d = _dct_matrix()
    coeffs = (d @ small @ d.T)[:8, :8]
    bits = (coeffs > np.median(coeffs)).flatten()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def continuity_planes(reference_luma: np.ndarray, other_luma: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Both planes resized to the reference's aspect with ``size`` as the longer side."""
    h, w = reference_luma.shape
    scale = size / max(h, w)
    target = (max(16, round(w * scale)), max(16, round(h * scale)))
    return resize_luma(reference_luma, target), resize_luma(other_luma, target)


def check_continuity(reference_luma: np.ndarray, other_luma: np.ndarray, policy: ContinuityPolicy, *,
                     media_uri: str | None = None, time_s: float | None = None,
                     frame: int | None = None) -> QACheckResult:
    """SSIM of downscaled luma (score, fails below min_ssim) unless the perceptual hashes are near-equal.

    Small camera moves lower SSIM while keeping the hash; either signal of
    sameness is enough for continuity, both must disagree to fail.
    """
    a, b = continuity_planes(reference_luma, other_luma, policy.size)
    score = ssim(a, b)
    distance = hamming(phash(reference_luma), phash(other_luma))
    metrics = {"ssim": round(score, 4), "phash_distance": distance, "max_phash_distance": policy.max_phash_distance,
               "compared_size": [a.shape[1], a.shape[0]]}
    ok = score >= policy.min_ssim or distance <= policy.max_phash_distance
    detail = f"SSIM {score:.3f} (min {policy.min_ssim:g}), perceptual-hash distance {distance}/64 " \
             f"(max {policy.max_phash_distance})"
    return QACheckResult(name="continuity", status="passed" if ok else "failed", score=round(score, 4),
                         threshold=policy.min_ssim, detail=detail if ok else "frames do not match: " + detail,
                         time_s=time_s, frame=frame, media_uri=media_uri, metrics=metrics)


def check_degenerate_image(rgb: np.ndarray, policy: DegenerateImagePolicy, *,
                           media_uri: str | None = None) -> QACheckResult:
    """Uniform, one-colour or near-empty images; score = luma histogram entropy in bits (fails below)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"expected an RGB image, got shape {rgb.shape}")
    luma = rgb_to_luma(rgb)
    std = float(luma.std())
    hist = np.bincount(np.clip(luma.round(), 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    q = (rgb.astype(np.uint32) >> 3).reshape(-1, 3)
    codes = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
    dominant = float(np.bincount(codes).max() / codes.size)
    metrics = {"luma_std": round(std, 3), "dominant_colour_fraction": round(dominant, 4),
               "entropy_bits": round(entropy, 3)}
    problems = []
    if std < policy.min_luma_std:
        problems.append(f"uniform (luma std {std:.2f} < {policy.min_luma_std:g})")
    if dominant > policy.max_dominant_colour_fraction:
        problems.append(f"one colour covers {dominant:.1%} (> {policy.max_dominant_colour_fraction:.0%})")
    if entropy < policy.min_entropy_bits:
        problems.append(f"luma entropy {entropy:.2f} bits (< {policy.min_entropy_bits:g})")
    if problems:
        return QACheckResult(name="degenerate_image", status="failed", score=round(entropy, 3),
                             threshold=policy.min_entropy_bits, detail="degenerate image: " + "; ".join(problems),
                             media_uri=media_uri, metrics=metrics)
    return QACheckResult(name="degenerate_image", status="passed", score=round(entropy, 3),
                         threshold=policy.min_entropy_bits,
                         detail=f"entropy {entropy:.2f} bits, luma std {std:.1f}, dominant colour {dominant:.1%}",
                         media_uri=media_uri, metrics=metrics)


# ---------------------------------------------------------------------------
# Text policy
# ---------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _term_patterns(terms: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    compiled = []
    for category, term in terms:
        # Lookarounds instead of \b so terms that start or end with punctuation still
        # match as whole words; inner whitespace matches any run of whitespace.
        body = r"\s+".join(re.escape(part) for part in term.split())
        compiled.append((category, term, re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)))
    return tuple(compiled)


def _policy_terms(policy: TextPolicy) -> tuple[tuple[str, str], ...]:
    return tuple((cat, term) for cat, items in sorted(policy.blocked_terms.items()) for term in items if term.strip())


def find_blocked_terms(text: str, policy: TextPolicy) -> list[dict[str, Any]]:
    """Every blocked term in ``text`` (whole words, any case) as ``{term, category, offset}``, by offset.

    The one matcher of the text policy: the ``text_policy`` check and plan intake's
    screening (``sparkle_motion.plan.policy``) both use it.
    """
    hits = []
    for category, term, pattern in _term_patterns(_policy_terms(policy)):
        match = pattern.search(text)
        if match:
            hits.append({"term": term, "category": category, "offset": match.start()})
    hits.sort(key=lambda h: h["offset"])
    return hits


def check_text_policy(prompt: str, policy: TextPolicy) -> QACheckResult:
    """Blocked terms in the prompt (whole words, any case); score = hits (fails above 0)."""
    terms = _policy_terms(policy)
    hits = find_blocked_terms(prompt, policy)
    metrics = {"terms_checked": len(terms), "hits": hits}
    if hits:
        listed = ", ".join(f"{h['term']!r} ({h['category']}) at {h['offset']}" for h in hits)
        return QACheckResult(name="text_policy", status="failed", score=len(hits), threshold=0,
                             detail=f"prompt contains blocked term(s): {listed}", metrics=metrics)
    return QACheckResult(name="text_policy", status="passed", score=0, threshold=0,
                         detail=f"no blocked term among {len(terms)}", metrics=metrics)
