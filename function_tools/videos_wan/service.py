"""videos_wan FunctionTool: two keyframes → a clip (keyframe_motion on CPU, Wan2.1 FLF2V or LTX-Video on GPU)."""

from __future__ import annotations

from function_tools.videos_wan.models import VideosWanRequest, VideosWanResponse
from sparkle_motion.services import ToolSpec

SPEC = ToolSpec(
    tool_id="videos_wan",
    version="1.0.0",
    request_model=VideosWanRequest,
    response_model=VideosWanResponse,
    # Import strings: the CPU process never imports the GPU backend's stack.
    backends={"keyframe_motion": "function_tools.videos_wan.keyframe_motion:KeyframeMotionBackend",
              "wan2.1-flf2v": "function_tools.videos_wan.wan:WanFlf2vBackend",
              "ltx-video": "function_tools.videos_wan.ltx:LtxVideoBackend",
              # TEST-ONLY (bench/bench_scale.py): waits instead of rendering; refuses to load without its option.
              "sleep": "function_tools.videos_wan.sleep_test:SleepTestBackend"},
    max_body_bytes=64 * 1024,
    max_concurrency=1,
    description="A clip between a start and an end keyframe; `keyframe_motion` renders a parsed camera move "
                "over an eased blend and encodes H.264 yuv420p; `wan2.1-flf2v` runs Wan2.1 first-last-frame-to-video "
                "(diffusers) between the two keyframes; `ltx-video` runs LTX-Video's LTXConditionPipeline with the keyframes "
                "at the first and last frame (fits a 24 GB card).",
)
