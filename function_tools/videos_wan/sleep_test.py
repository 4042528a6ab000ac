"""TEST-ONLY videos_wan backend ``sleep``: simulated GPU work for bench/bench_scale.py.

It waits a fixed ``options.test_only_sleep_s`` per clip (cancellably, in 0.05 s steps) and stores
a tiny JSON record of the call instead of a video, so the orchestration's scaling over Serve
replicas can be measured without the CPU cost of rendering: a sleeping replica needs no core
(``ray: {num_cpus: 0}``), so eight of them fit a 2-core machine. It refuses to load unless
the profile sets that option: a production profile that names it by mistake fails at start.
"""

from __future__ import annotations

import json
import os
import time

from function_tools.videos_wan.models import VideosWanRequest, VideosWanResponse
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import ConfigError
from sparkle_motion.services import ToolContext

STEP_S = 0.05


class SleepTestBackend:
    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.sleep_s = profile.options.get("test_only_sleep_s")

    def load(self) -> None:
        if isinstance(self.sleep_s, bool) or not isinstance(self.sleep_s, (int, float)) or not 0 < self.sleep_s <= 600:
            raise ConfigError("videos_wan backend 'sleep' is test-only: it needs the profile option "
                              "test_only_sleep_s (seconds per clip, 0-600)", field="tools.videos_wan.options")

    def invoke(self, request: VideosWanRequest, ctx: ToolContext) -> VideosWanResponse:
        started = time.perf_counter()
        deadline = time.monotonic() + float(self.sleep_s)
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(STEP_S, left))
            ctx.check_cancelled()
        record = {"start_frame_uri": request.start_frame_uri, "end_frame_uri": request.end_frame_uri,
                  "slept_s": round(time.perf_counter() - started, 4), "pid": os.getpid()}
        manifest = ctx.put_output(request, "test_sleep_clip", json.dumps(record).encode(), "application/json",
                                  ctx.provenance(seed=request.seed), ext=".json")
        return VideosWanResponse(artifacts=[manifest], num_frames=request.frame_count, fps=request.fps,
                                 duration_s=request.frame_count / request.fps, seed=request.seed or 0)
