"""The `mux` backend: put the dialogue onto the clip without touching its pixels.

What it does, and no more: the video stream is copied bit for bit, the audio is
encoded to AAC (padded or trimmed to the video when the request allows), and an
alignment map says where the speech falls on the clip's frames so later stages
(subtitles, QA, a GPU lipsync pass) can use it. It does not move any lips, and
its outputs say so (``lip_motion: false``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.media import ffmpeg_exe, probe, run_ffmpeg
from sparkle_motion.media.vad import decode_audio_mono, speech_segments
from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.models import (
    AlignmentMap,
    AlignmentSegment,
    LipsyncRequest,
    LipsyncResponse,
)

# Inputs are single shots of dialogue; anything longer is a mistake upstream.
MAX_INPUT_DURATION_S = 600.0


@dataclass(frozen=True)
class VideoFacts:
    fps: float
    frame_count: int
    duration_s: float
    width: int
    height: int
    codec: str


def video_facts(path: Path, field: str) -> VideoFacts:
    """Frame rate, frame count and duration of the first video stream, or a 422 naming ``field``."""
    info = probe(path, field_name=field)
    stream = info.first("video")
    if stream is None:
        raise InvalidInputError("media has no video stream", field=field)
    if not stream.fps or stream.fps <= 0 or not stream.width or not stream.height:
        raise InvalidInputError("video stream has no usable frame rate or size", field=field)
    if stream.frames:
        frames = int(stream.frames)
    else:
        duration = stream.duration_s or info.duration_s
        if not duration:
            raise InvalidInputError("video stream has no duration", field=field)
        frames = int(round(duration * stream.fps))
    duration_s = frames / stream.fps
    if frames < 1:
        raise InvalidInputError("video stream has no frames", field=field)
    if duration_s > MAX_INPUT_DURATION_S:
        raise InvalidInputError(f"video is {duration_s:.1f} s; at most {MAX_INPUT_DURATION_S:.0f} s is accepted",
                                field=field)
    return VideoFacts(float(stream.fps), frames, duration_s, int(stream.width), int(stream.height), stream.codec)


def frame_span(start_s: float, end_s: float, fps: float, frame_count: int) -> tuple[int, int]:
    """Inclusive frame indices whose display interval overlaps [start_s, end_s)."""
    first = int(math.floor(start_s * fps + 1e-9))
    last = int(math.ceil(end_s * fps - 1e-9)) - 1
    first = min(max(first, 0), frame_count - 1)
    return first, min(max(last, first), frame_count - 1)


def decide_fit(audio_s: float, video_s: float, fps: float, mode: str) -> str:
    """Return "none" | "pad" | "trim", or raise the 422 the request asked for with fit="error"."""
    frame_s = 1.0 / fps
    difference = audio_s - video_s
    if abs(difference) <= frame_s + 1e-6:
        return "none"
    needed = "trim" if difference > 0 else "pad"
    if mode == needed or mode == "pad_or_trim":
        return needed
    hint = "'trim' or 'pad_or_trim'" if needed == "trim" else "'pad' or 'pad_or_trim'"
    raise InvalidInputError(
        f"audio is {audio_s:.3f} s but the video (video_uri) is {video_s:.3f} s: they differ by "
        f"{abs(difference):.3f} s, more than one frame ({frame_s:.3f} s); set options.fit to {hint}",
        field="audio_uri",
        context={"audio_duration_s": round(audio_s, 6), "video_duration_s": round(video_s, 6),
                 "fit": mode},
    )


def build_segments(request: LipsyncRequest, samples, sample_rate: int, audio_s: float,
                   video: VideoFacts, output_s: float) -> tuple[str, list[AlignmentSegment]]:
    """Speech segments from the TTS word timings when given, else from energy-based VAD."""
    timings = request.options.word_timings
    tolerance = 1.0 / video.fps
    if timings is not None:
        raw = []
        for i, word in enumerate(timings):
            if word.end_s > audio_s + tolerance:
                raise InvalidInputError(
                    f"word {word.word!r:.40} ends at {word.end_s:.3f} s, after the audio ends ({audio_s:.3f} s)",
                    field=f"options.word_timings[{i}].end_s")
            if i and word.start_s < timings[i - 1].start_s:
                raise InvalidInputError("word timings must be in start order",
                                        field=f"options.word_timings[{i}].start_s")
            raw.append((word.start_s, word.end_s, word.word))
        source = "word_timings"
    else:
        raw = [(s, e, None) for s, e in speech_segments(samples, sample_rate)]
        source = "vad"
    segments = []
    for start, end, text in raw:
        if start >= output_s:  # cut off by a trim: that speech is not in the output
            continue
        end = min(end, output_s)
        first, last = frame_span(start, end, video.fps, video.frame_count)
        segments.append(AlignmentSegment(start_s=round(start, 6), end_s=round(end, 6),
                                         start_frame=first, end_frame=last, text=text))
    return source, segments


def analyse_lipsync_inputs(request: LipsyncRequest, ctx: ToolContext
                           ) -> tuple[Path, Path, VideoFacts, np.ndarray, int, str]:
    """Resolve and decode both inputs and decide the fit (every lipsync backend starts here).

    Returns (video_path, audio_path, video facts, mono samples, sample rate, fit applied);
    every failure is a 422 naming ``video_uri`` or ``audio_uri``.
    """
    _, video_path = ctx.resolve_input(request.video_uri, "video_uri")
    _, audio_path = ctx.resolve_input(request.audio_uri, "audio_uri")
    video = video_facts(video_path, "video_uri")
    samples, sample_rate = decode_audio_mono(audio_path, field_name="audio_uri")
    audio_s = samples.size / sample_rate
    if audio_s <= 0:
        raise InvalidInputError("audio stream is empty", field="audio_uri")
    if audio_s > MAX_INPUT_DURATION_S:
        raise InvalidInputError(f"audio is {audio_s:.1f} s; at most {MAX_INPUT_DURATION_S:.0f} s is accepted",
                                field="audio_uri")
    return video_path, audio_path, video, samples, sample_rate, decide_fit(audio_s, video.duration_s, video.fps,
                                                                           request.options.fit)


def store_lipsync_outputs(request: LipsyncRequest, ctx: ToolContext, out_path: Path, metadata: dict[str, Any], *,
                          video: VideoFacts, sample_rate: int, alignment: AlignmentMap, params: dict[str, Any],
                          source: str, started: float) -> LipsyncResponse:
    """Store the synced video and its alignment map (every lipsync backend's outputs) and answer."""
    lip_motion = alignment.lip_motion
    timings = metadata.get("timings", {})
    video_manifest = ctx.put_output(
        request, "video", out_path, "video/mp4", metadata,
        media={"duration_s": video.duration_s, "fps": video.fps, "width": video.width,
               "height": video.height, "sample_rate": sample_rate},
        ext=".mp4", move=True,
    )
    alignment_doc = {**alignment.model_dump(mode="json"), "video_uri": video_manifest.uri,
                     "input_video_uri": request.video_uri, "audio_uri": request.audio_uri}
    alignment_manifest = ctx.put_output(
        request, "alignment", json.dumps(alignment_doc, indent=2).encode("utf-8"), "application/json",
        {"params": params, "lip_motion": lip_motion, "video_uri": video_manifest.uri, "source": source},
        ext=".json",
    )
    timings["total_s"] = round(time.perf_counter() - started, 4)
    return LipsyncResponse(
        artifacts=[video_manifest, alignment_manifest], timings=timings,
        video_uri=video_manifest.uri, alignment_uri=alignment_manifest.uri, lip_motion=lip_motion,
        fit_applied=alignment.fit_applied, segments=len(alignment.segments),
    )


class MuxBackend:
    """Mux dialogue onto a clip (video stream copy + AAC) and map speech to frames."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings

    def load(self) -> None:
        # Fail at start-up, not on the first request, if the ffmpeg binary is unusable.
        run_ffmpeg(["-version"], timeout=30)
        self.ffmpeg = ffmpeg_exe()

    def invoke(self, request: LipsyncRequest, ctx: ToolContext) -> LipsyncResponse:
        started = time.perf_counter()
        video_path, audio_path, video, samples, sample_rate, fit = analyse_lipsync_inputs(request, ctx)
        audio_s = samples.size / sample_rate
        output_s = video.duration_s  # the output audio always ends with the video
        analysed = time.perf_counter()
        source, segments = build_segments(request, samples, sample_rate, audio_s, video, output_s)
        segmented = time.perf_counter()

        out_path = ctx.staging_path(".mp4")
        # apad+atrim make the audio exactly as long as the video whatever its length;
        # the video stream is copied so its packets (and pixels) are the input's.
        args = [
            "-loglevel", "error", "-i", str(video_path), "-i", str(audio_path),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-af", f"apad=whole_dur={output_s:.6f},atrim=end={output_s:.6f}",
            "-c:a", "aac", "-b:a", request.options.audio_bitrate,
            "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out_path),
        ]
        run_ffmpeg(args, cancel=ctx.cancel_token)
        muxed = time.perf_counter()

        alignment = AlignmentMap(
            source=source, fps=video.fps, frame_count=video.frame_count,
            video_duration_s=round(video.duration_s, 6), audio_duration_s=round(audio_s, 6),
            output_audio_duration_s=round(output_s, 6), fit_applied=fit, segments=segments, lip_motion=False,
        )
        options = request.options
        params = {
            "video_uri": request.video_uri, "audio_uri": request.audio_uri, "fit": options.fit,
            "fit_applied": fit, "audio_bitrate": options.audio_bitrate,
            "word_timings_given": options.word_timings is not None,
            # Face options steer the wav2lip backend; nothing here looks at faces.
            "unused_options": {"pads": list(options.pads), "resize_factor": options.resize_factor,
                               "nosmooth": options.nosmooth},
        }
        timings = {"analyse_s": round(analysed - started, 4), "segment_s": round(segmented - analysed, 4),
                   "mux_s": round(muxed - segmented, 4)}
        metadata = {"params": params, "lip_motion": False, "video_stream": "copy", "audio_codec": "aac",
                    "input_video_codec": video.codec, "audio_duration_s": round(audio_s, 6),
                    "video_duration_s": round(video.duration_s, 6), "ffmpeg_cmd": [self.ffmpeg, *args],
                    "timings": timings}
        return store_lipsync_outputs(request, ctx, out_path, metadata, video=video, sample_rate=sample_rate,
                                     alignment=alignment, params=params, source=source, started=started)
