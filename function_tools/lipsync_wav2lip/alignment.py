"""Where the speech falls on the clip's frames: the alignment every lipsync backend writes.

Segments come from the TTS word timings when the request carries them, else
from energy-based voice activity detection; each is mapped to the inclusive
range of frames it overlaps, so subtitles, QA and a lipsync pass agree on it.
"""

from __future__ import annotations

import math

from sparkle_motion.errors import InvalidInputError
from sparkle_motion.media.vad import speech_segments

from function_tools.lipsync_wav2lip.inputs import VideoFacts
from function_tools.lipsync_wav2lip.models import AlignmentSegment, LipsyncRequest


def frame_span(start_s: float, end_s: float, fps: float, frame_count: int) -> tuple[int, int]:
    """Inclusive frame indices whose display interval overlaps [start_s, end_s)."""
    first = int(math.floor(start_s * fps + 1e-9))
    last = int(math.ceil(end_s * fps - 1e-9)) - 1
    first = min(max(first, 0), frame_count - 1)
    return first, min(max(last, first), frame_count - 1)


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
