"""lipsync_wav2lip FunctionTool: SPEC for the shared service factory."""

from sparkle_motion.services import ToolSpec

from function_tools.lipsync_wav2lip.models import LipsyncRequest, LipsyncResponse

SPEC = ToolSpec(
    tool_id="lipsync_wav2lip",
    version="1.0.0",
    request_model=LipsyncRequest,
    response_model=LipsyncResponse,
    backends={"mux": "function_tools.lipsync_wav2lip.mux:MuxBackend",
              "wav2lip": "function_tools.lipsync_wav2lip.wav2lip:Wav2LipBackend"},
    description="Put dialogue onto a clip and map speech to frames. `mux` copies the video stream and does not "
                "move lips (lip_motion: false); `wav2lip` runs a Wav2Lip checkout (lip_motion: true) and falls "
                "back to `mux`, recorded in `fallback`, when no face is found.",
)
