"""The two inputs of a lipsync request, probed and bounded, and the fit decided.

Every lipsync backend starts the same way: resolve the clip and the dialogue,
read the clip's frame rate, frame count and size, decode the audio to mono, bound
both durations, and decide whether the audio is padded or trimmed to the clip.
A request is refused or accepted the same way whichever backend runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparkle_motion.errors import InvalidInputError
from sparkle_motion.media import probe
from sparkle_motion.media.vad import decode_audio_mono
from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.models import LipsyncRequest

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
