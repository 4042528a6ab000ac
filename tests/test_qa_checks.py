"""Unit tests of the qa_qwen2vl check functions (pure numpy; no process, no store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from function_tools.qa_qwen2vl import checks as qc
from function_tools.qa_qwen2vl.report import QACheckResult, build_report
from sparkle_motion.errors import ConfigError


@pytest.fixture(scope="module")
def policy() -> qc.QAPolicy:
    return qc.load_policy()


def series(mean_luma: list[float], diffs: list[float] | None = None, fps: float = 10.0,
           stride: int = 1) -> qc.FrameSeries:
    n = len(mean_luma)
    idx = np.arange(n) * stride
    return qc.FrameSeries(times_s=idx / fps, indices=idx, mean_luma=np.asarray(mean_luma, dtype=float),
                          diffs=np.asarray(diffs if diffs is not None else [10.0] * (n - 1), dtype=float),
                          step_s=stride / fps, stride=stride)


# ---------------------------------------------------------------- policy

def test_policy_file_loads_with_every_section(policy: qc.QAPolicy) -> None:
    assert policy.black_frames.max_frames >= 1
    assert policy.text_policy.blocked_terms, "the shipped policy blocks some terms"


def test_policy_with_bad_value_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    text = Path(qc.project_path("configs/qa_policy.yaml")).read_text()
    bad = tmp_path / "policy.yaml"
    bad.write_text(text.replace("max_frames: 6", "max_frames: -3"))
    with pytest.raises(ConfigError) as info:
        qc.load_policy(bad)
    assert info.value.field == "black_frames.max_frames"
    with pytest.raises(ConfigError):
        qc.load_policy(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- intervals

def test_true_runs_and_interval_arithmetic() -> None:
    assert qc.true_runs(np.array([0, 1, 1, 0, 1], dtype=bool)) == [(1, 2), (4, 4)]
    assert qc.true_runs(np.zeros(0, dtype=bool)) == []
    assert qc.merge_intervals([(2, 3), (0, 1), (0.5, 2.5)]) == [(0.0, 3.0)]
    assert qc.subtract_intervals([(0, 10)], [(2, 3), (5, 12)]) == [(0.0, 2.0), (3.0, 5.0)]
    assert qc.subtract_intervals([(1, 2)], [(0, 5)]) == []
    assert qc.overlap_seconds([(0, 1), (0.5, 2)], (1, 3)) == pytest.approx(1.0)


# ---------------------------------------------------------------- video

def test_black_run_longer_than_limit_fails_with_its_position(policy: qc.QAPolicy) -> None:
    lumas = [120.0] * 5 + [3.0] * 10 + [120.0] * 5
    result = qc.check_black_frames(series(lumas), policy.black_frames, media_uri="u")
    assert result.status == "failed"
    assert result.score == 10 and result.threshold == policy.black_frames.max_frames
    assert result.frame == 5 and result.time_s == pytest.approx(0.5)
    assert [(s.start_s, s.end_s) for s in result.segments] == [(0.5, 1.5)]
    assert result.media_uri == "u"


def test_short_black_run_passes_and_stride_scales_run_length(policy: qc.QAPolicy) -> None:
    short = [120.0] * 5 + [3.0] * policy.black_frames.max_frames + [120.0] * 5
    assert qc.check_black_frames(series(short), policy.black_frames).status == "passed"
    # Two analysed frames at stride 4 stand for 8 source frames.
    strided = qc.check_black_frames(series([120, 3, 3, 120], stride=4), policy.black_frames)
    assert strided.score == 8 and strided.status == "failed"


def test_frozen_stretch_fails_unless_covered_by_allowed_hold(policy: qc.QAPolicy) -> None:
    # 10 fps; frames 5..25 identical: a 2.1 s still starting at 0.5 s.
    diffs = [8.0] * 5 + [0.0] * 20 + [8.0] * 10
    s = series([100.0] * 36, diffs)
    result = qc.check_frozen_frames(s, policy.frozen_frames)
    assert result.status == "failed"
    assert result.time_s == pytest.approx(0.5) and result.frame == 5
    assert result.score == pytest.approx(2.1)
    held = qc.check_frozen_frames(s, policy.frozen_frames, [(0.4, 2.7)])
    assert held.status == "passed" and held.score == 0
    partly = qc.check_frozen_frames(s, policy.frozen_frames, [(0.5, 1.0)])
    assert partly.status == "failed" and partly.score == pytest.approx(1.6)


def test_motion_passes_frozen_check(policy: qc.QAPolicy) -> None:
    result = qc.check_frozen_frames(series([100.0] * 30, [5.0] * 29), policy.frozen_frames)
    assert result.status == "passed" and result.score == 0


def test_long_video_is_sampled_with_a_stride_and_cut_at_the_time_limit(tmp_path: Path, policy: qc.QAPolicy) -> None:
    from function_tools.qa_qwen2vl.signal import SignalBackend
    from sparkle_motion.config import ToolProfile
    from sparkle_motion.media import VideoWriter

    path = tmp_path / "clip.mp4"
    with VideoWriter(path, 32, 24, 10) as writer:
        for i in range(40):  # 20 bright frames, 20 black
            writer.write(np.full((24, 32, 3), 200 if i < 20 else 0, np.uint8))
    backend = SignalBackend(ToolProfile("signal", "signal-v1"), settings=None)  # type: ignore[arg-type]
    sampled = policy.model_copy(update={"limits": policy.limits.model_copy(update={"max_analysed_frames": 10})})
    video = backend._analyse_video(path, sampled)
    assert video.series.stride == 4 and video.series.indices.tolist() == list(range(0, 40, 4))
    assert video.frames_decoded == 40 and not video.truncated and video.duration_s == pytest.approx(4.0)
    assert qc.check_black_frames(video.series, policy.black_frames).score == 20
    short = policy.model_copy(update={"limits": policy.limits.model_copy(update={"max_video_seconds": 1.5})})
    cut = backend._analyse_video(path, short)
    assert cut.truncated and cut.frames_decoded == 15 and cut.series.mean_luma.min() > 150


# ---------------------------------------------------------------- audio

def test_missing_speech_reports_the_silent_expected_interval(policy: qc.QAPolicy) -> None:
    speech = [(1.0, 2.0)]
    ok = qc.check_missing_speech(speech, [(1.0, 2.0)], 3.0, policy.speech)
    assert ok.status == "passed" and ok.score == pytest.approx(1.0)
    bad = qc.check_missing_speech(speech, [(1.0, 2.0), (2.2, 2.9)], 3.0, policy.speech)
    assert bad.status == "failed" and bad.score == 0
    assert [(s.start_s, s.end_s) for s in bad.segments] == [(2.2, 2.9)]


def test_unexpected_speech_ignores_margin_and_flags_the_rest(policy: qc.QAPolicy) -> None:
    m = policy.speech.boundary_margin_s
    within_margin = qc.check_unexpected_speech([(1.0 - m / 2, 2.0 + m / 2)], [(1.0, 2.0)], policy.speech)
    assert within_margin.status == "passed" and within_margin.score == 0
    bad = qc.check_unexpected_speech([(1.0, 2.0), (4.0, 5.0)], [(1.0, 2.0)], policy.speech)
    assert bad.status == "failed" and bad.score == pytest.approx(1.0) and bad.time_s == 4.0
    all_silent = qc.check_unexpected_speech([(0.5, 0.9)], [], policy.speech)
    assert all_silent.status == "failed" and all_silent.score == pytest.approx(0.4)


def test_clipping_fraction(policy: qc.QAPolicy) -> None:
    t = np.linspace(0, 1, 16000, endpoint=False)
    clean = 0.5 * np.sin(2 * np.pi * 440 * t)
    clipped = np.clip(2.0 * np.sin(2 * np.pi * 440 * t), -1, 1)
    level = policy.clipping.level
    assert qc.count_clipped(clean, level) == 0
    n = qc.count_clipped(clipped, level)
    assert n > 0.5 * clipped.size  # a sine driven 6 dB over full scale is flat most of the time
    assert qc.check_clipping(n, clipped.size, policy.clipping).status == "failed"
    assert qc.check_clipping(0, clean.size, policy.clipping).status == "passed"
    assert qc.check_clipping(0, 0, policy.clipping).status == "inconclusive"


def test_loudness_deviation() -> None:
    assert qc.check_loudness(-16.5, -16.0, 1.0).status == "passed"
    bad = qc.check_loudness(-30.0, -16.0, 2.0)
    assert bad.status == "failed" and bad.score == pytest.approx(14.0)


def test_duration_comparisons() -> None:
    ok = qc.check_duration([qc.DurationComparison("video vs expected", 2.0, 2.02, 1 / 24)])
    assert ok.status == "passed"
    bad = qc.check_duration([qc.DurationComparison("video vs expected", 2.0, 2.0, 1 / 24),
                             qc.DurationComparison("audio vs video", 2.5, 2.0, 1 / 24)])
    assert bad.status == "failed" and bad.score == pytest.approx(0.5)
    assert "audio vs video" in bad.detail and "video vs expected" not in bad.detail
    assert qc.check_duration([]).status == "inconclusive"


# ---------------------------------------------------------------- frames and images

def _scene(seed: int, shape: tuple[int, int] = (72, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (shape[0] // 8, shape[1] // 8))
    return np.kron(coarse, np.ones((8, 8)))


def test_ssim_properties() -> None:
    a = _scene(1)
    assert qc.ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + np.random.default_rng(2).normal(0, 8, a.shape), 0, 255)
    assert 0.6 < qc.ssim(a, noisy) < 1.0
    assert qc.ssim(a, noisy) == pytest.approx(qc.ssim(noisy, a))
    assert qc.ssim(a, _scene(3)) < 0.3
    with pytest.raises(ValueError):
        qc.ssim(a, a[:, :50])


def test_phash_is_stable_under_small_changes_and_differs_across_scenes() -> None:
    a = _scene(1)
    assert qc.hamming(qc.phash(a), qc.phash(np.clip(a * 1.05 + 3, 0, 255))) <= 4
    assert qc.hamming(qc.phash(a), qc.phash(_scene(4))) > 16


def test_continuity_passes_similar_and_fails_different_frames(policy: qc.QAPolicy) -> None:
    a = _scene(1, (144, 256))
    similar = np.clip(a + np.random.default_rng(5).normal(0, 5, a.shape), 0, 255)
    ok = qc.check_continuity(a, similar, policy.continuity)
    assert ok.status == "passed" and ok.score > policy.continuity.min_ssim
    bad = qc.check_continuity(a, _scene(9, (144, 256)), policy.continuity)
    assert bad.status == "failed" and bad.metrics["phash_distance"] > policy.continuity.max_phash_distance


def test_degenerate_images(policy: qc.QAPolicy) -> None:
    flat = np.full((64, 64, 3), (40, 90, 200), dtype=np.uint8)
    result = qc.check_degenerate_image(flat, policy.degenerate_image)
    assert result.status == "failed" and result.score == 0
    assert "uniform" in result.detail and "one colour" in result.detail
    # Two flat colours: not uniform, but almost no information.
    halves = flat.copy()
    halves[:, 32:] = (250, 250, 250)
    two = qc.check_degenerate_image(halves, policy.degenerate_image)
    assert two.status == "failed" and "entropy" in two.detail and "uniform" not in two.detail
    rng = np.random.default_rng(0)
    detailed = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert qc.check_degenerate_image(detailed, policy.degenerate_image).status == "passed"


# ---------------------------------------------------------------- text policy

def test_text_policy_matches_whole_words_any_case() -> None:
    policy = qc.TextPolicy(blocked_terms={"violence": ["gore", "self harm"], "other": ["c++"]})
    hit = qc.check_text_policy("A GORE-soaked scene, then self   harm.", policy)
    assert hit.status == "failed" and hit.score == 2
    assert [h["term"] for h in hit.metrics["hits"]] == ["gore", "self harm"]
    assert qc.check_text_policy("a gorgeous sunset over Gorey village", policy).status == "passed"
    assert qc.check_text_policy("written in c++ today", policy).status == "failed"
    assert qc.check_text_policy("written in c+ today", policy).status == "passed"


# ---------------------------------------------------------------- verdict

def _r(name: str, status: str) -> QACheckResult:
    return QACheckResult(name=name, status=status, detail=f"{name} {status}")


def test_verdict_logic() -> None:
    assert build_report([_r("a", "passed"), _r("b", "passed")]).verdict == "pass"
    report = build_report([_r("a", "passed"), _r("b", "inconclusive")])
    assert report.verdict == "inconclusive" and report.reasons == ["inconclusive: b: b inconclusive"]
    report = build_report([_r("a", "failed"), _r("b", "inconclusive"), _r("c", "failed")])
    assert report.verdict == "fail" and report.reasons == ["a: a failed", "c: c failed"]
    assert build_report([]).verdict == "inconclusive"
