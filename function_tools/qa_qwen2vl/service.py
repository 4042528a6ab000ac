"""qa_qwen2vl FunctionTool: SPEC for the shared service factory."""

from sparkle_motion.services import ToolSpec

from function_tools.qa_qwen2vl.models import QARequest, QAResponse

SPEC = ToolSpec(
    tool_id="qa_qwen2vl",
    version="1.0.0",
    request_model=QARequest,
    response_model=QAResponse,
    # The GPU `qwen2-vl` backend plugs in here with the same models (GPU issue).
    backends={"signal": "function_tools.qa_qwen2vl.signal:SignalBackend"},
    description="QA report over images, video and audio: black/frozen frames, speech vs silence, clipping, "
                "duration, loudness, continuity, degenerate images and a prompt text policy.",
)
