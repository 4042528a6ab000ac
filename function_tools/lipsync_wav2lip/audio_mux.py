"""Put the dialogue onto the clip without touching its pixels: copy the video stream, encode AAC.

This is the whole of the ``mux`` backend's work, and what the ``wav2lip``
backend falls back to when no face is found; both call :func:`mux_dialogue`,
so neither backend imports the other.  It does not move any lips, and its
outputs say so (``lip_motion: false``).
"""

from __future__ import annotations

import time

from sparkle_motion.media import ffmpeg_exe, run_ffmpeg
from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.alignment import build_segments
from function_tools.lipsync_wav2lip.inputs import analyse_lipsync_inputs
from function_tools.lipsync_wav2lip.models import AlignmentMap, LipsyncRequest, LipsyncResponse
from function_tools.lipsync_wav2lip.outputs import store_lipsync_outputs


def checked_ffmpeg() -> str:
    """Run ``ffmpeg -version`` (fail at start-up, not on the first request) and return the binary."""
    run_ffmpeg(["-version"], timeout=30)
    return ffmpeg_exe()


def mux_dialogue(request: LipsyncRequest, ctx: ToolContext, ffmpeg: str) -> LipsyncResponse:
    """Mux the request's audio onto its clip (video stream copy + AAC), map speech to frames, store both."""
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
                "video_duration_s": round(video.duration_s, 6), "ffmpeg_cmd": [ffmpeg, *args],
                "timings": timings}
    return store_lipsync_outputs(request, ctx, out_path, metadata, video=video, sample_rate=sample_rate,
                                 alignment=alignment, params=params, source=source, started=started)
