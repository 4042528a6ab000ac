"""The measurement checks both qa_qwen2vl backends run: decoded luma, audio levels, VAD, loudness, SSIM.

``signal`` answers with these checks alone; ``qwen2-vl`` runs them next to a
vision-language model's verdicts.  Both use :class:`SignalChecks` from here, so
neither backend imports the other.

Bad requests (unknown artifact, URI outside the store, missing expectation a
requested check needs, oversized input) are refused with a 422 naming the field
before any work.  Media that exists but cannot be decoded is *reported*, not
refused: every check that would have read it is ``inconclusive`` with the
decode error as detail, so QA of a broken render says what is broken instead of
failing the whole call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from function_tools.qa_qwen2vl import checks as qc
from function_tools.qa_qwen2vl.consistency import check_character_consistency
from function_tools.qa_qwen2vl.models import (
    ALL_CHECKS,
    AUDIO_STREAM_CHECKS,
    CHECK_MEDIA_KINDS,
    QAMedia,
    QARequest,
)
from function_tools.qa_qwen2vl.report import QACheckResult
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import InvalidInputError, SparkleError
from sparkle_motion.media import probe
from sparkle_motion.media.loudness import integrated_loudness
from sparkle_motion.media.vad import decode_audio_mono, speech_segments
from sparkle_motion.services import ToolContext

#: Longer side of the frame kept for continuity (then resized to the policy size).
CONTINUITY_DECODE_SIDE = 512


class MediaDecodeError(Exception):
    """The media exists but could not be read; checks on it become inconclusive."""


@dataclass
class VideoAnalysis:
    series: qc.FrameSeries
    fps: float
    frames_decoded: int
    duration_s: float             # decoded frames / fps, or the probed duration when truncated
    truncated: bool
    first_luma: np.ndarray


@dataclass
class AudioAnalysis:
    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass
class MediaState:
    """What was learned about one request item, decoded lazily and at most once."""

    index: int
    item: QAMedia
    path: Path
    video: VideoAnalysis | None = None
    audio: AudioAnalysis | None = None
    image_rgb: np.ndarray | None = None
    has_audio_stream: bool = False
    error: str | None = None           # decode failure: every check on this media is inconclusive
    audio_error: str | None = None     # the audio stream alone could not be read

    @property
    def uri_field(self) -> str:
        return f"media[{self.index}].uri"


def _decode_error_text(exc: BaseException) -> str:
    if isinstance(exc, SparkleError):
        stderr = str(exc.context.get("stderr", "")).strip().splitlines()
        return exc.message + (f" ({stderr[-1][:200]})" if stderr else "")
    return f"{type(exc).__name__}: {exc}"[:400]


class SignalChecks:
    """The QA policy and every measurement check over decoded media (no model)."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.policy: qc.QAPolicy | None = None

    def load(self) -> None:
        policy_path = self.profile.options.get("policy_path")
        self.policy = qc.load_policy(Path(policy_path) if policy_path else None)

    # ------------------------------------------------------------------ request checks

    @staticmethod
    def require_expectations(request: QARequest, wanted: list[str], explicit: bool) -> None:
        """An explicitly requested check without the expectation it compares against is a caller error."""
        if not explicit:
            return
        exp = request.expectations
        needs = {"missing_speech": ("speech_intervals", exp.speech_intervals is not None),
                 "unexpected_speech": ("speech_intervals", exp.speech_intervals is not None),
                 "continuity": ("reference_frame_uri", exp.reference_frame_uri is not None),
                 "text_policy": ("prompt", exp.prompt is not None),
                 # Without portraits there is nothing to compare: the check passes saying so (see consistency.py).
                 "character_consistency": ("prompt", exp.prompt is not None)}
        for i, name in enumerate(wanted):
            if name in needs and not needs[name][1]:
                attr = needs[name][0]
                raise InvalidInputError(f"check {name!r} (checks[{i}]) needs expectations.{attr}",
                                        field=f"expectations.{attr}")
            if CHECK_MEDIA_KINDS[name] and not request.media:
                raise InvalidInputError(f"check {name!r} needs media to inspect; media is empty",
                                        field=f"checks[{i}]")

    def resolve_portraits(self, request: QARequest, ctx: ToolContext, policy: qc.QAPolicy) -> list[tuple[str, Path]]:
        """The portraits ``character_consistency`` compares with: (name, path), each checked like media."""
        portraits = []
        for i, character in enumerate(request.expectations.characters or []):
            field_name = f"expectations.characters[{i}].portrait_uri"
            _, path = ctx.resolve_input(character.portrait_uri, field_name)
            self.check_size(path, field_name, policy)
            portraits.append((character.name, path))
        return portraits

    def resolve(self, index: int, item: QAMedia, ctx: ToolContext, policy: qc.QAPolicy) -> MediaState:
        field_name = f"media[{index}].uri"
        _, path = ctx.resolve_input(item.uri, field_name)
        self.check_size(path, field_name, policy)
        return MediaState(index=index, item=item, path=path)

    @staticmethod
    def check_size(path: Path, field_name: str, policy: qc.QAPolicy) -> None:
        size = path.stat().st_size
        if size > policy.limits.max_media_bytes:
            raise InvalidInputError(f"artifact is {size} bytes; the QA limit is {policy.limits.max_media_bytes}",
                                    field=field_name, context={"size_bytes": size})

    # ------------------------------------------------------------------ checks

    def run_checks(self, request: QARequest, wanted: list[str], explicit: bool, states: list[MediaState],
                    reference: Path | None, policy: qc.QAPolicy,
                    portraits: list[tuple[str, Path]] | None = None) -> list[QACheckResult]:
        exp = request.expectations
        # In default mode a check runs only when the expectation it compares against is present.
        enabled = set(wanted)
        if not explicit:
            if exp.speech_intervals is None:
                enabled -= {"missing_speech", "unexpected_speech"}
            elif not exp.speech_intervals:
                enabled.discard("missing_speech")  # nothing expected, nothing can be missing
            if reference is None:
                enabled.discard("continuity")
            if exp.prompt is None:
                enabled.discard("text_policy")
            if exp.loudness_lufs is None:
                enabled.discard("loudness")
            if not exp.characters or exp.prompt is None:
                enabled.discard("character_consistency")

        results: list[QACheckResult] = []
        if "text_policy" in enabled and exp.prompt is not None:
            results.append(qc.check_text_policy(exp.prompt, policy.text_policy))

        for state in states:
            self._decode(state, enabled, explicit, policy)

        reference_luma, reference_error = None, None
        if "continuity" in enabled and reference is not None:
            try:
                reference_luma = self._first_frame_luma(reference)
            except MediaDecodeError as exc:
                reference_error = f"reference frame could not be decoded: {exc}"

        for state in states:
            results += self._media_results(state, enabled, explicit, exp, reference_luma, reference_error, states,
                                           policy)
        if "character_consistency" in enabled and exp.prompt is not None:
            rule = policy.character_consistency
            results += [check_character_consistency(state.path, state.item.uri, exp.prompt, portraits or [],
                                                     max_distance=rule.max_distance, bins=rule.bins)
                        for state in states if state.item.kind == "image" and state.error is None]

        # Checks asked for by name, or by giving the expectation they compare against,
        # must answer even when no media could run them.
        driven = self._expectation_driven(exp)
        requested = wanted if explicit else [n for n in ALL_CHECKS if n in enabled and n in driven]
        produced = {r.name for r in results}
        for name in requested:
            if name not in produced:
                kinds = " or ".join(sorted(CHECK_MEDIA_KINDS[name])) or "text"
                why = "no media with an audio stream" if name in AUDIO_STREAM_CHECKS else f"no {kinds} media"
                results.append(QACheckResult(name=name, status="inconclusive", detail=f"cannot run: {why}"))
        order = {name: i for i, name in enumerate(ALL_CHECKS)}
        return sorted(results, key=lambda r: order[r.name])  # stable: media order kept within a check

    @staticmethod
    def _expectation_driven(exp: Any) -> set[str]:
        driven = set()
        if exp.speech_intervals is not None:
            driven |= {"missing_speech", "unexpected_speech"}
        if exp.loudness_lufs is not None:
            driven.add("loudness")
        if exp.reference_frame_uri is not None:
            driven.add("continuity")
        if exp.prompt is not None:
            driven.add("text_policy")
        if exp.characters and exp.prompt is not None:
            driven.add("character_consistency")
        if exp.duration_s is not None:
            driven.add("duration_mismatch")
        return driven

    def _decode(self, state: MediaState, enabled: set[str], explicit: bool, policy: qc.QAPolicy) -> None:
        kind = state.item.kind
        needed = {name for name in enabled if kind in CHECK_MEDIA_KINDS[name]}
        if not needed:
            return
        try:
            if kind == "image":
                state.image_rgb = self.read_image(state.path, policy)
                return
            info = probe(state.path, field_name=state.uri_field)
            audio_stream = info.first("audio")
            state.has_audio_stream = audio_stream is not None
            if kind == "video":
                if info.first("video") is None:
                    raise MediaDecodeError("media has no video stream")
                if needed - AUDIO_STREAM_CHECKS:
                    state.video = self._analyse_video(state.path, policy)
            elif audio_stream is None:
                raise MediaDecodeError("media has no audio stream")
        except (SparkleError, MediaDecodeError) as exc:
            state.error = _decode_error_text(exc)
            return
        if state.has_audio_stream and needed & (AUDIO_STREAM_CHECKS | {"duration_mismatch"}):
            duration = audio_stream.duration_s or info.duration_s or 0.0
            if duration > policy.limits.max_audio_seconds:
                state.audio_error = (f"audio is {duration:.0f} s long; the QA limit is "
                                     f"{policy.limits.max_audio_seconds:g} s")
                return
            try:
                samples, rate = decode_audio_mono(state.path, field_name=state.uri_field)
            except SparkleError as exc:
                state.audio_error = _decode_error_text(exc)
                return
            state.audio = AudioAnalysis(samples, rate)

    @staticmethod
    def read_image(path: Path, policy: qc.QAPolicy) -> np.ndarray:
        try:
            with Image.open(path) as img:
                if img.width * img.height > policy.limits.max_image_pixels:
                    raise MediaDecodeError(f"image is {img.width}x{img.height}; the QA limit is "
                                           f"{policy.limits.max_image_pixels} pixels")
                img.draft("RGB", (CONTINUITY_DECODE_SIDE, CONTINUITY_DECODE_SIDE))
                rgb = img.convert("RGB")
                rgb.thumbnail((CONTINUITY_DECODE_SIDE, CONTINUITY_DECODE_SIDE), Image.Resampling.BOX)
                return np.asarray(rgb, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
            raise MediaDecodeError(f"image could not be decoded: {type(exc).__name__}: {exc}") from exc

    def _first_frame_luma(self, path: Path) -> np.ndarray:
        """Luma of a reference: the image itself, or the first frame of a video."""
        assert self.policy is not None
        try:
            with Image.open(path):
                is_image = True
        except (UnidentifiedImageError, OSError):
            is_image = False
        if is_image:
            return qc.rgb_to_luma(self.read_image(path, self.policy))
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise MediaDecodeError("no video stream")
                for frame in container.decode(video=0):
                    scale = min(1.0, CONTINUITY_DECODE_SIDE / max(frame.width, frame.height))
                    small = frame.reformat(width=max(2, round(frame.width * scale)),
                                           height=max(2, round(frame.height * scale)), format="gray")
                    return small.to_ndarray().astype(np.float32)
        except av.error.FFmpegError as exc:
            raise MediaDecodeError(f"{type(exc).__name__}: {exc}") from exc
        raise MediaDecodeError("video has no decodable frame")

    def _analyse_video(self, path: Path, policy: qc.QAPolicy) -> VideoAnalysis:
        """Decode once, straight to small luma planes (swscale does the downscale), with a stride for long media."""
        import av

        limits = policy.limits
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                # The checks read luma means and differences at ~96 px wide, where H.264's deblocking
                # (edges of 8 px blocks) is invisible; skipping it saves about a quarter of the decode.
                stream.codec_context.options = {"skip_loop_filter": "all"}
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else 0.0
                if fps <= 0:
                    raise MediaDecodeError("video has no frame rate")
                expected = stream.frames or int(math.ceil(
                    float(stream.duration * stream.time_base) * fps if stream.duration else 0))
                limit_frames = int(limits.max_video_seconds * fps)
                # Without a frame count the stride stays 1; max_video_seconds still bounds the work.
                stride = max(1, math.ceil(min(expected, limit_frames) / limits.max_analysed_frames))
                width = stream.codec_context.width
                height = stream.codec_context.height
                aw = min(width, limits.analysis_width)
                ah = max(2, round(height * aw / width))

                times, indices, means, diffs = [], [], [], []
                # Stills are measured against the frame that opened them, not the previous
                # frame: slow real motion (a gentle ease-in) drifts past the threshold within
                # the window, while a held picture never does.
                anchor: np.ndarray | None = None
                still_max = policy.frozen_frames.diff_max
                first_luma: np.ndarray | None = None
                decoded = 0
                truncated = False
                for index, frame in enumerate(container.decode(stream)):
                    if index >= limit_frames:
                        truncated = True
                        break
                    decoded = index + 1
                    if index == 0:
                        scale = min(1.0, CONTINUITY_DECODE_SIDE / max(width, height))
                        first_luma = frame.reformat(width=max(2, round(width * scale)),
                                                    height=max(2, round(height * scale)),
                                                    format="gray").to_ndarray().astype(np.float32)
                    if index % stride:
                        continue
                    luma = frame.reformat(width=aw, height=ah, format="gray").to_ndarray().astype(np.float32)
                    times.append(index / fps)
                    indices.append(index)
                    means.append(float(luma.mean()))
                    if anchor is None:
                        anchor = luma
                    else:
                        drift = float(np.abs(luma - anchor).mean())
                        diffs.append(drift)
                        if drift >= still_max:
                            anchor = luma
        except av.error.FFmpegError as exc:
            raise MediaDecodeError(f"video could not be decoded: {type(exc).__name__}: {exc}") from exc
        if first_luma is None:
            raise MediaDecodeError("video has no decodable frame")
        series = qc.FrameSeries(times_s=np.asarray(times), indices=np.asarray(indices, dtype=np.int64),
                                mean_luma=np.asarray(means), diffs=np.asarray(diffs), step_s=stride / fps,
                                stride=stride)
        return VideoAnalysis(series=series, fps=fps, frames_decoded=decoded, duration_s=decoded / fps,
                             truncated=truncated, first_luma=first_luma)

    # ------------------------------------------------------------------ per media

    def _media_results(self, state: MediaState, enabled: set[str], explicit: bool, exp: Any,
                       reference_luma: np.ndarray | None, reference_error: str | None,
                       states: list[MediaState], policy: qc.QAPolicy) -> list[QACheckResult]:
        kind, uri = state.item.kind, state.item.uri
        names = [n for n in ALL_CHECKS if n in enabled and kind in CHECK_MEDIA_KINDS[n]]
        out: list[QACheckResult] = []

        def inconclusive(name: str, detail: str) -> QACheckResult:
            return QACheckResult(name=name, status="inconclusive", detail=detail, media_uri=uri)

        if state.error is not None:
            for name in names:
                # A broken video may or may not have carried audio; only report audio
                # checks on it when they were asked for by name.
                if kind == "video" and name in AUDIO_STREAM_CHECKS and not explicit:
                    continue
                # By default duration runs only against an expectation or an a/v pair,
                # and a file that cannot be read shows neither.
                if name == "duration_mismatch" and not explicit and exp.duration_s is None:
                    continue
                out.append(inconclusive(name, f"media could not be decoded: {state.error}"))
            return out

        for name in names:
            if name in AUDIO_STREAM_CHECKS:
                if state.audio is None:
                    if state.audio_error is not None:
                        out.append(inconclusive(name, f"audio could not be analysed: {state.audio_error}"))
                    # else: a video without an audio stream; the request-level pass
                    # reports the check as inconclusive if no media could run it.
                    continue
                out.append(self._audio_check(name, state, exp, policy))
            elif name in ("black_frames", "frozen_frames"):
                assert state.video is not None
                result = (qc.check_black_frames(state.video.series, policy.black_frames, media_uri=uri)
                          if name == "black_frames" else
                          qc.check_frozen_frames(state.video.series, policy.frozen_frames,
                                                 [(h.start_s, h.end_s) for h in exp.allow_holds], media_uri=uri))
                out.append(self._note_truncation(result, state.video, policy))
            elif name == "degenerate_image":
                assert state.image_rgb is not None
                out.append(qc.check_degenerate_image(state.image_rgb, policy.degenerate_image, media_uri=uri))
            elif name == "continuity":
                if reference_error is not None:
                    out.append(inconclusive(name, reference_error))
                    continue
                assert reference_luma is not None
                if kind == "image":
                    assert state.image_rgb is not None
                    out.append(qc.check_continuity(reference_luma, qc.rgb_to_luma(state.image_rgb),
                                                   policy.continuity, media_uri=uri))
                else:
                    assert state.video is not None
                    out.append(qc.check_continuity(reference_luma, state.video.first_luma, policy.continuity,
                                                   media_uri=uri, time_s=0.0, frame=0))
            elif name == "duration_mismatch":
                result = self._duration(state, exp, states, policy, explicit)
                if result is not None:
                    out.append(result)
        return out

    @staticmethod
    def _note_truncation(result: QACheckResult, video: VideoAnalysis, policy: qc.QAPolicy) -> QACheckResult:
        if not video.truncated:
            return result
        note = f" (analysed the first {policy.limits.max_video_seconds:g} s only)"
        return result.model_copy(update={"detail": result.detail + note,
                                         "metrics": {**result.metrics, "truncated": True}})

    def _audio_check(self, name: str, state: MediaState, exp: Any, policy: qc.QAPolicy) -> QACheckResult:
        audio, uri = state.audio, state.item.uri
        assert audio is not None
        if name == "clipping":
            level = policy.clipping.level
            clipped = np.flatnonzero(np.abs(audio.samples) >= level)
            first = float(clipped[0] / audio.sample_rate) if clipped.size else None
            return qc.check_clipping(int(clipped.size), int(audio.samples.size), policy.clipping,
                                     first_clip_s=first, media_uri=uri)
        if name == "loudness":
            target = exp.loudness_lufs if exp.loudness_lufs is not None else policy.loudness.target_lufs
            tolerance = exp.loudness_tolerance_lu or policy.loudness.tolerance_lu
            try:
                measured = integrated_loudness(state.path)
            except SparkleError as exc:
                return QACheckResult(name=name, status="inconclusive", media_uri=uri,
                                     detail=f"loudness could not be measured: {_decode_error_text(exc)}")
            if measured is None:
                return QACheckResult(name=name, status="failed", score=None, threshold=tolerance, media_uri=uri,
                                     detail=f"audio is silent (below -70 LUFS), target {target:g} LUFS",
                                     metrics={"measured_lufs": None, "target_lufs": target})
            return qc.check_loudness(measured, target, tolerance, media_uri=uri)
        if audio.duration_s <= 0:
            return QACheckResult(name=name, status="inconclusive", detail="audio stream is empty", media_uri=uri)
        speech = speech_segments(audio.samples, audio.sample_rate)
        expected = [(iv.start_s, iv.end_s) for iv in exp.speech_intervals or []]
        if name == "missing_speech":
            return qc.check_missing_speech(speech, expected, audio.duration_s, policy.speech, media_uri=uri)
        return qc.check_unexpected_speech(speech, expected, policy.speech, media_uri=uri)

    @staticmethod
    def _duration(state: MediaState, exp: Any, states: list[MediaState], policy: qc.QAPolicy,
                  explicit: bool) -> QACheckResult | None:
        uri = state.item.uri
        video = state.video
        frame_s = 1.0 / video.fps if video is not None else None
        override = exp.duration_tolerance_s

        def tolerance(frame: float | None) -> float:
            return override or frame or policy.duration.audio_tolerance_s

        if state.audio_error is not None and state.item.kind == "audio":
            return QACheckResult(name="duration_mismatch", status="inconclusive", media_uri=uri,
                                 detail=f"audio could not be analysed: {state.audio_error}")
        comparisons: list[qc.DurationComparison] = []
        if video is not None and video.truncated:
            return QACheckResult(name="duration_mismatch", status="inconclusive", media_uri=uri,
                                 detail=f"video longer than the analysis limit {policy.limits.max_video_seconds:g} s")
        if exp.duration_s is not None:
            if video is not None:
                comparisons.append(qc.DurationComparison("video vs expected", video.duration_s, exp.duration_s,
                                                         tolerance(frame_s)))
            if state.audio is not None:
                comparisons.append(qc.DurationComparison("audio vs expected", state.audio.duration_s,
                                                         exp.duration_s, tolerance(frame_s)))
        if video is not None and state.audio is not None:
            comparisons.append(qc.DurationComparison("audio vs video", state.audio.duration_s, video.duration_s,
                                                     tolerance(frame_s)))
        # A silent clip checked with its separate dialogue track (before muxing).
        videos = [s for s in states if s.item.kind == "video"]
        audios = [s for s in states if s.item.kind == "audio"]
        if (state.item.kind == "audio" and state.audio is not None and len(videos) == 1 and len(audios) == 1
                and videos[0].video is not None and not videos[0].has_audio_stream):
            other = videos[0].video
            comparisons.append(qc.DurationComparison(f"audio vs video media[{videos[0].index}]",
                                                     state.audio.duration_s, other.duration_s,
                                                     tolerance(1.0 / other.fps)))
        if not comparisons and not explicit:
            return None
        return qc.check_duration(comparisons, media_uri=uri)
