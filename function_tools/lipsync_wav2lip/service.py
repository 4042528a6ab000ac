"""lipsync_wav2lip FunctionTool: SPEC for the shared service factory."""

from sparkle_motion.services import ToolSpec

from function_tools.lipsync_wav2lip.models import LipsyncRequest, LipsyncResponse

SPEC = ToolSpec(
    tool_id="lipsync_wav2lip",
    version="1.0.0",
    request_model=LipsyncRequest,
    response_model=LipsyncResponse,
    # The GPU `wav2lip` backend plugs in here with the same models (GPU issue).
    backends={"mux": "function_tools.lipsync_wav2lip.mux:MuxBackend"},
    description="Mux dialogue onto a clip (video stream copied, AAC audio) and map speech to frames. "
                "The mux backend does not move lips (lip_motion: false).",
)
