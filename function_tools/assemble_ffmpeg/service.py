"""assemble_ffmpeg FunctionTool: SPEC for the shared service factory."""

from sparkle_motion.services import ToolSpec

from function_tools.assemble_ffmpeg.models import AssembleRequest, AssembleResponse

SPEC = ToolSpec(
    tool_id="assemble_ffmpeg",
    version="1.0.0",
    request_model=AssembleRequest,
    response_model=AssembleResponse,
    backends={"ffmpeg": "function_tools.assemble_ffmpeg.ffmpeg_backend:FfmpegAssembleBackend"},
    # 500 clips with trims and up to 2000 subtitles of 500 characters fit well inside 2 MiB.
    max_body_bytes=2 << 20,
    description="Concatenate clips (stream copy when possible), add one loudness-normalised AAC track, "
                "soft (mov_text) or burnt-in subtitles and a sidecar .srt.",
)
