"""Put the dialogue onto the clip: copy the video stream (or redraw a storyboard speaker's mouth), encode AAC.

This is the whole of the ``mux`` backend's work, and what the ``wav2lip``
backend falls back to when no face is found; both call :func:`mux_dialogue`,
so neither backend imports the other.  A clip is copied bit for bit
(``lip_motion: false``) unless it records where its faces' mouths are (a
``keyframe_motion`` clip of storyboard keyframes) and the request has word
timings: then the speaker's mouth is redrawn open on the words
(``mouth_motion.py``), the shot is re-encoded with the clip's own encoder
settings (so assembly still concatenates by stream copy), and the outputs say
``lip_motion: true`` with the mouth track in the metadata.
"""

from __future__ import annotations

import time
from typing import Any

from sparkle_motion.media import ffmpeg_exe, run_ffmpeg
from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.alignment import build_segments
from function_tools.lipsync_wav2lip.inputs import analyse_lipsync_inputs
from function_tools.lipsync_wav2lip.models import AlignmentMap, LipsyncRequest, LipsyncResponse
from function_tools.lipsync_wav2lip.mouth_motion import plan_mouth_motion, redraw_mouths
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

    clip_manifest, _ = ctx.resolve_input(request.video_uri, "video_uri")
    mouths, mouth_note = plan_mouth_motion(request, clip_manifest.metadata, video, output_s)
    picture = video_path
    if mouths is not None:
        picture = ctx.staging_path(".mp4")
        redraw_mouths(video_path, mouths, video, picture, ctx)
    drawn = time.perf_counter()

    out_path = ctx.staging_path(".mp4")
    # apad+atrim make the audio exactly as long as the video whatever its length; the
    # video stream is copied (the input's packets, or those of the redrawn shot).
    args = [
        "-loglevel", "error", "-i", str(picture), "-i", str(audio_path),
        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
        "-af", f"apad=whole_dur={output_s:.6f},atrim=end={output_s:.6f}",
        "-c:a", "aac", "-b:a", request.options.audio_bitrate,
        "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out_path),
    ]
    run_ffmpeg(args, cancel=ctx.cancel_token)  # the redrawn shot is staged: removed when the call ends
    muxed = time.perf_counter()
    lip_motion = mouths is not None

    alignment = AlignmentMap(
        source=source, fps=video.fps, frame_count=video.frame_count,
        video_duration_s=round(video.duration_s, 6), audio_duration_s=round(audio_s, 6),
        output_audio_duration_s=round(output_s, 6), fit_applied=fit, segments=segments, lip_motion=lip_motion,
    )
    options = request.options
    params = {
        "video_uri": request.video_uri, "audio_uri": request.audio_uri, "fit": options.fit,
        "fit_applied": fit, "audio_bitrate": options.audio_bitrate,
        "word_timings_given": options.word_timings is not None,
        # Face-detection options steer the wav2lip backend; storyboard mouths come from the clip metadata.
        "unused_options": {"pads": list(options.pads), "resize_factor": options.resize_factor,
                           "nosmooth": options.nosmooth},
    }
    timings = {"analyse_s": round(analysed - started, 4), "segment_s": round(segmented - analysed, 4),
               "mouths_s": round(drawn - segmented, 4), "mux_s": round(muxed - drawn, 4)}
    mouth_motion: dict[str, Any] = {"note": mouth_note}
    if mouths is not None:
        mouth_motion.update(encoder=vars(mouths.encoder), frames_redrawn=len(mouths.frames), track=mouths.track())
    metadata = {"params": params, "lip_motion": lip_motion, "mouth_motion": mouth_motion,
                "video_stream": "redrawn_mouths" if lip_motion else "copy", "audio_codec": "aac",
                "input_video_codec": video.codec, "audio_duration_s": round(audio_s, 6),
                "video_duration_s": round(video.duration_s, 6), "ffmpeg_cmd": [ffmpeg, *args],
                "timings": timings}
    return store_lipsync_outputs(request, ctx, out_path, metadata, video=video, sample_rate=sample_rate,
                                 alignment=alignment, params=params, source=source, started=started)
