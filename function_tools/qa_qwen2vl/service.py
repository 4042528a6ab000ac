"""qa_qwen2vl FunctionTool: SPEC for the shared service factory."""

from sparkle_motion.services import ToolSpec

from function_tools.qa_qwen2vl.models import QARequest, QAResponse

SPEC = ToolSpec(
    tool_id="qa_qwen2vl",
    version="1.0.0",
    request_model=QARequest,
    response_model=QAResponse,
    # Import strings: the CPU process never imports the GPU backend's stack.
    backends={"signal": "function_tools.qa_qwen2vl.signal:SignalBackend",
              "qwen2-vl": "function_tools.qa_qwen2vl.qwen2vl:Qwen2VLBackend"},
    description="QA report over images, video and audio: black/frozen frames, speech vs silence, clipping, "
                "duration, loudness, continuity, degenerate images and a prompt text policy; `qwen2-vl` adds Qwen2-VL "
                "verdicts on prompt adherence, anatomy, artifacts and safety.",
)
