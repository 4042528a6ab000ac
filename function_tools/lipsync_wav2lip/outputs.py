"""What every lipsync backend stores: the synced video and its alignment map, and the response."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.inputs import VideoFacts
from function_tools.lipsync_wav2lip.models import AlignmentMap, LipsyncRequest, LipsyncResponse


def store_lipsync_outputs(request: LipsyncRequest, ctx: ToolContext, out_path: Path, metadata: dict[str, Any], *,
                          video: VideoFacts, sample_rate: int, alignment: AlignmentMap, params: dict[str, Any],
                          source: str, started: float) -> LipsyncResponse:
    """Store the synced video and its alignment map (every lipsync backend's outputs) and answer."""
    lip_motion = alignment.lip_motion
    timings = metadata.get("timings", {})
    video_manifest = ctx.put_output(
        request, "video", out_path, "video/mp4", metadata,
        media={"duration_s": video.duration_s, "fps": video.fps, "width": video.width,
               "height": video.height, "sample_rate": sample_rate},
        ext=".mp4", move=True,
    )
    alignment_doc = {**alignment.model_dump(mode="json"), "video_uri": video_manifest.uri,
                     "input_video_uri": request.video_uri, "audio_uri": request.audio_uri}
    alignment_manifest = ctx.put_output(
        request, "alignment", json.dumps(alignment_doc, indent=2).encode("utf-8"), "application/json",
        {"params": params, "lip_motion": lip_motion, "video_uri": video_manifest.uri, "source": source},
        ext=".json",
    )
    timings["total_s"] = round(time.perf_counter() - started, 4)
    return LipsyncResponse(
        artifacts=[video_manifest, alignment_manifest], timings=timings,
        video_uri=video_manifest.uri, alignment_uri=alignment_manifest.uri, lip_motion=lip_motion,
        fit_applied=alignment.fit_applied, segments=len(alignment.segments),
    )
