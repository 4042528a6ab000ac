#!/usr/bin/env python
"""Benchmark the whole product on the cpu profile, next to floors measured in the same run.

1. mesh cold start: eight processes from nothing to every /ready.
2. make: idea → plan (script_agent) → film (production_agent) for a 3-shot ~20 s film at
   640x360@24, vs the floor: ffmpeg encoding the same number of frames once (the median of
   three encodes, one before make and two after, so one lucky or unlucky second on a shared
   machine does not decide the ratio). Also CPU seconds: the services' (with the ffmpeg
   processes they ran) for make, ffmpeg's for one floor encode — a ratio that load on the
   machine moves much less than wall time, and per service, so the voice's share shows
   (`tts_chatterbox`: the cpu profile's `kokoro`; `--voice espeak` measures the same film
   with the eSpeak voice). The load average before make and after
   the floors is printed: two shared cores under load stretch every wall time.
3. per-call HTTP overhead: images_sdxl (64x64 storyboard) through the mesh vs the same
   backend called in-process, p50/p95.

    .venv/bin/python bench/bench_make.py [--voice kokoro|espeak]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.logs import get_logger
from sparkle_motion.media import VideoWriter
from sparkle_motion.services import ToolClient
from sparkle_motion.services.context import ToolContext
from sparkle_motion.testing import running_mesh

FPS, WIDTH, HEIGHT, SHOTS, DURATION = 24, 640, 360, 3, 20.0
CALLS = 30
VOICES = {"kokoro": ("kokoro", "kokoro-82m-v1.0-int8"), "espeak": ("espeak", "espeak-ng")}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def floor_encode(frames: int, out: Path) -> tuple[float, float]:
    """ffmpeg encoding `frames` frames of one picture once: the least any film of this size costs.

    Returns (wall seconds, CPU seconds of this process and the ffmpeg it ran).
    """
    picture = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    cpu_before = _own_cpu_s()
    started = time.perf_counter()
    with VideoWriter(out, WIDTH, HEIGHT, FPS) as writer:
        for _ in range(frames):
            writer.write(picture)
    return time.perf_counter() - started, _own_cpu_s() - cpu_before


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def services_cpu_s(home: Path) -> dict[str, float]:
    """CPU seconds used so far by each of the mesh's services and the children it has waited for (ffmpeg runs)."""
    state = json.loads((home / "mesh.json").read_text())
    per_service = {}
    for tool_id, info in state.get("services", {}).items():
        try:
            fields = Path(f"/proc/{info['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, KeyError):
            continue
        per_service[tool_id] = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return per_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", choices=sorted(VOICES), default=None,
                        help="tts_chatterbox backend for the film (default: the cpu profile's)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-make-"))
    started = time.perf_counter()
    backends = {"tts_chatterbox": VOICES[args.voice]} if args.voice else None
    with running_mesh(home, render={"fps": FPS, "width": WIDTH, "height": HEIGHT}, backends=backends) as settings:
        cold_start = time.perf_counter() - started
        voice = settings.tool_profile("tts_chatterbox").backend
        print(f"mesh cold start: {cold_start:.2f} s for {len(settings.tools)} services; voice: {voice}")

        # -- make ---------------------------------------------------------------------
        floors = [floor_encode(round(DURATION * FPS), home / "floor0.mp4")]
        cpu0 = services_cpu_s(home)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        with ToolClient("script_agent", settings=settings) as client:
            planned = client.invoke({"prompt": "A lighthouse keeper and a lost sailor wait out a storm at night",
                                     "shots": SHOTS, "duration_s": DURATION, "seed": 3})
        plan_s = time.perf_counter() - t0
        with ProductionClient(settings, timeout=60) as production:
            run_id = production.start(plan_uri=planned["artifact_uri"], qa_mode="full").run_id
            final = production.wait_for_status(run_id, {"succeeded", "failed"}, timeout=600)
            make_s = time.perf_counter() - t0
            cpu1 = services_cpu_s(home)
            cpu_by_service = {tool_id: cpu1[tool_id] - cpu0.get(tool_id, 0.0) for tool_id in cpu1}
            make_cpu_s = sum(cpu_by_service.values())
            if final.status != "succeeded":
                raise SystemExit(f"make failed: {final.error}")
            film = production.final_film(run_id)
        if film is None:
            raise SystemExit(f"run {run_id} succeeded without a final film")
        runtime = film["duration_s"] or planned["plan_summary"]["runtime_s"]
        frames = round(runtime * FPS)
        floors += [floor_encode(frames, home / f"floor{i}.mp4") for i in (1, 2)]
        floor = statistics.median(wall for wall, _ in floors)
        floor_cpu = statistics.median(cpu for _, cpu in floors)
        # Wall time per stage, first step's start to last step's end: a stage's items may run side by side.
        spans: dict[str, tuple[datetime, datetime]] = {}
        for step in final.steps:
            begun = datetime.fromisoformat(step.started_at)
            ended = datetime.fromisoformat(step.completed_at) if step.completed_at else begun
            first, last = spans.get(step.stage, (begun, ended))
            spans[step.stage] = (min(first, begun), max(last, ended))
        by_stage = {stage: (last - first).total_seconds() for stage, (first, last) in spans.items()}
        print(f"make: {make_s:.2f} s for a {runtime:.1f} s film ({frames} frames, {SHOTS} shots, "
              f"{WIDTH}x{HEIGHT}@{FPS}); plan {plan_s:.2f} s")
        print("  stage wall seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in by_stage.items()))
        print(f"floor (ffmpeg encode of {frames} frames once): {floor:.2f} s "
              f"(median of {', '.join(f'{wall:.2f}' for wall, _ in floors)}); load average {load_before:.1f} before make, "
              f"{os.getloadavg()[0]:.1f} after the floors on {os.cpu_count()} CPUs")
        print(f"ratio make/floor: {make_s / floor:.1f}x; make is {runtime / make_s:.2f}x real time")
        print(f"CPU: make {make_cpu_s:.2f} s in the services, floor {floor_cpu:.2f} s; "
              f"ratio {make_cpu_s / floor_cpu:.1f}x")
        print("  CPU seconds per service: " + ", ".join(
            f"{tool_id} {cpu:.2f}" for tool_id, cpu in sorted(cpu_by_service.items(), key=lambda kv: -kv[1])))

        # -- per-call HTTP overhead -------------------------------------------------------
        payload = {"prompt": "a red kite over a green hill", "width": 64, "height": 64, "seed": 1, "run_id": "bench"}
        http_times = []
        with ToolClient("images_sdxl", settings=settings) as client:
            client.invoke(payload)  # warm
            for _ in range(CALLS):
                t = time.perf_counter()
                client.invoke(payload)
                http_times.append(time.perf_counter() - t)
        from function_tools.images_sdxl.service import SPEC
        from function_tools.images_sdxl.storyboard import StoryboardBackend

        profile = settings.tool_profile("images_sdxl")
        backend = StoryboardBackend(profile, settings)
        backend.load()
        store = ArtifactStore(settings.home)
        request = SPEC.request_model.model_validate(payload)
        local_times = []
        for i in range(CALLS + 1):
            ctx = ToolContext(tool_id="images_sdxl", tool_version=SPEC.version, backend=profile.backend,
                              model=profile.model, options=profile.options, settings=settings, store=store,
                              request_id=f"bench{i}", log=get_logger("bench"))
            t = time.perf_counter()
            backend.invoke(request, ctx)
            if i:
                local_times.append(time.perf_counter() - t)
        print(f"images_sdxl 64x64 over HTTP: p50 {1e3 * pct(http_times, 50):.1f} ms, p95 {1e3 * pct(http_times, 95):.1f} ms")
        print(f"same backend in-process:     p50 {1e3 * pct(local_times, 50):.1f} ms, p95 {1e3 * pct(local_times, 95):.1f} ms")
        print(f"HTTP overhead per call: p50 {1e3 * (pct(http_times, 50) - pct(local_times, 50)):.1f} ms, "
              f"p95 {1e3 * (pct(http_times, 95) - pct(local_times, 95)):.1f} ms; "
              f"ratio http/in-process p50 {statistics.median(http_times) / statistics.median(local_times):.2f}x")


if __name__ == "__main__":
    main()
