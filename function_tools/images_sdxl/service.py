"""images_sdxl FunctionTool: text → keyframe images (storyboard on CPU, SDXL on GPU)."""

from __future__ import annotations

from function_tools.images_sdxl.models import ImagesSdxlRequest, ImagesSdxlResponse
from sparkle_motion.services import ToolSpec

SPEC = ToolSpec(
    tool_id="images_sdxl",
    version="1.0.0",
    request_model=ImagesSdxlRequest,
    response_model=ImagesSdxlResponse,
    # Import strings: the CPU process never imports the GPU backend's stack.
    backends={"storyboard": "function_tools.images_sdxl.storyboard:StoryboardBackend",
              "sdxl": "function_tools.images_sdxl.sdxl:SdxlBackend"},
    max_body_bytes=64 * 1024,
    max_concurrency=1,
    description="Keyframe images from a prompt; `storyboard` draws a deterministic storyboard frame with Pillow, "
                "`sdxl` runs Stable Diffusion XL (diffusers) under gpu_utils.model_context.",
)
