"""The ray engine's scaling, in one run on this machine:

1. Ray's start-up time (local instance + Serve's proxy) and the resident memory it costs;
2. the ``video_clips`` stage on the CPU backend (``keyframe_motion``) with 1 vs 2 replicas (ratio);
3. the orchestration's scaling with simulated GPU work: the TEST-ONLY ``sleep`` videos_wan backend
   (a fixed wait per clip, no core used, ``num_cpus: 0``) at 1, 2, 4 and 8 replicas — speed-up and
   efficiency against the 1-replica time of the same run (goal: at least 0.8K for K replicas);
4. the per-call overhead of the Ray route (proxy → replica) vs the local route (one uvicorn process).

Clips go through production's own fan-out (``agents/fan_out.py``: ``tool_capacity`` reads
``limits.replicas`` x ``max_concurrency`` from /metadata) and ``ToolClient``, as a film's stage does.
Run: ``.venv/bin/python bench/bench_scale.py [--clips 8] [--sleep-s 2]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml
from PIL import Image

from sparkle_motion.agents.fan_out import fan_out, tool_capacity
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings, load_settings
from sparkle_motion.ray_engine import RayServeMesh
from sparkle_motion.services import ToolClient
from sparkle_motion.testing import free_port, running_tool, write_test_profile

RUN = "bench-scale"


def tree_rss_mb(exclude: set[int]) -> float:
    """Resident memory of this process's descendants (Ray's processes; not the tools started by hand)."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        if child.pid in exclude:
            continue
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def profile(home: Path, name: str, *, backend: str, replicas: int, num_cpus: float,
            options: dict[str, Any] | None = None) -> Settings:
    """A profile with videos_wan on ``backend`` and ``replicas`` replicas; the env points the replicas at it."""
    path = write_test_profile(home)
    data = yaml.safe_load(path.read_text())
    data.update(engine="ray", ray={"http_port": HTTP_PORT, "num_cpus": 2, "object_store_mb": 100}, name=name)
    data["tools"]["videos_wan"] = {"backend": backend, "model": backend, "max_concurrency": 1,
                                   "options": options or {}, "ray": {"num_replicas": replicas, "num_cpus": num_cpus}}
    target = home / f"{name}.yaml"
    target.write_text(yaml.safe_dump(data))
    env = {"SPARKLE_HOME": str(home), "SPARKLE_PROFILE": str(target)}
    os.environ.update(env)               # the replicas' runtime env is taken from here at deploy time
    return load_settings(env)


def keyframes(store: ArtifactStore) -> tuple[str, str]:
    rng = np.random.default_rng(5)
    uris = []
    for index in range(2):
        pixels = (rng.random((144, 256, 3)) * 255).astype(np.uint8)
        path = store.staging_dir() / f"bench-key-{index}.png"
        Image.fromarray(pixels).save(path)
        uris.append(store.put(RUN, "base_images", "image", path, "image/png", ext=".png", move=True).uri)
    return uris[0], uris[1]


def run_stage(settings: Settings, keys: tuple[str, str], clips: int, frames: int) -> tuple[float, int]:
    """``clips`` videos_wan calls through production's fan-out; (seconds, the capacity it used)."""
    moves = ["slow push-in", "pan left", "crane up", "pull out", "pan right", "tilt down", "handheld", "static"]
    with ToolClient("videos_wan", settings=settings) as client:
        client.wait_ready(600)
        capacity = tool_capacity(client)
        started = time.perf_counter()
        fan_out(list(range(clips)), lambda i: client.invoke(
            {"run_id": RUN, "stage": "video_clips", "start_frame_uri": keys[0], "end_frame_uri": keys[1],
             "motion_prompt": moves[i % len(moves)], "fps": 12.0, "num_frames": frames, "seed": 1000 + i,
             "width": 512, "height": 288}),
            lambda: capacity)
        return time.perf_counter() - started, capacity


def call_latency_ms(url: str, keys: tuple[str, str], settings: Settings, calls: int) -> tuple[float, float]:
    """Median ms of GET /metadata and of a 1 ms /invoke, one call at a time."""
    with ToolClient("videos_wan", settings=settings, base_url=url) as client:
        client.wait_ready(600)
        body = {"run_id": RUN, "start_frame_uri": keys[0], "end_frame_uri": keys[1], "num_frames": 2}
        for _ in range(3):
            client.invoke(body)          # warm-up
        meta, invoke = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            client.metadata()
            meta.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.invoke(body)
            invoke.append(time.perf_counter() - t0)
    return statistics.median(meta) * 1000, statistics.median(invoke) * 1000


HTTP_PORT = free_port()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--sleep-s", type=float, default=2.0)
    parser.add_argument("--cpu-clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=72)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        home = Path(tmp) / "home"
        store = ArtifactStore(home)
        keys = keyframes(store)
        settings = profile(home, "cpu1", backend="keyframe_motion", replicas=1, num_cpus=1.0)
        rss_before = tree_rss_mb(set())
        ray_mesh = RayServeMesh(settings)
        ray_mesh.connect()
        print(f"ray start-up (local instance, 2 CPUs, 100 MB object store, no dashboard, + Serve proxy): "
              f"{ray_mesh.startup_s:.1f} s; resident memory of Ray's processes: "
              f"{tree_rss_mb(set()) - rss_before:.0f} MB")
        entry = settings.tool("videos_wan")
        try:
            # -- 2. the CPU backend, 1 vs 2 replicas
            times = {}
            for replicas in (1, 2):
                settings = profile(home, f"cpu{replicas}", backend="keyframe_motion", replicas=replicas,
                                   num_cpus=1.0)
                ray_mesh.settings = settings
                ray_mesh.deploy([entry], wait=True)
                rss = tree_rss_mb(set())
                times[replicas], capacity = run_stage(settings, keys, args.cpu_clips, args.frames)
                print(f"video_clips, keyframe_motion (CPU), {args.cpu_clips} clips x {args.frames} frames 512x288, "
                      f"{replicas} replica(s) (fan-out {capacity}): {times[replicas]:.1f} s; Ray + replicas RSS "
                      f"{rss:.0f} MB")
            print(f"  CPU backend 2 vs 1 replicas: {times[1] / times[2]:.2f}x faster (2 cores, shared with the "
                  "rest of the machine)")

            # -- 3. simulated GPU work
            baseline = None
            print(f"sleep backend (TEST-ONLY), {args.clips} clips x {args.sleep_s:g} s:")
            for replicas in (1, 2, 4, 8):
                settings = profile(home, f"sleep{replicas}", backend="sleep", replicas=replicas, num_cpus=0.0,
                                   options={"test_only_sleep_s": args.sleep_s})
                ray_mesh.settings = settings
                ray_mesh.deploy([entry], wait=True)
                elapsed, capacity = run_stage(settings, keys, args.clips, 2)
                baseline = baseline or elapsed
                ideal = math.ceil(args.clips / replicas) * args.sleep_s
                speedup = baseline / elapsed
                print(f"  {replicas} replica(s) (fan-out {capacity}): {elapsed:6.2f} s (ideal {ideal:5.1f} s)  "
                      f"speed-up {speedup:4.2f}x  efficiency {speedup / replicas:4.2f}  "
                      f"{'ok' if speedup >= 0.8 * replicas else 'BELOW 0.8K'}")

            # -- 4. per-call overhead, Ray route vs local route (same backend, 1 ms of work)
            settings = profile(home, "overhead", backend="sleep", replicas=1, num_cpus=0.0,
                               options={"test_only_sleep_s": 0.001})
            ray_mesh.settings = settings
            ray_mesh.deploy([entry], wait=True)
            ray_meta, ray_invoke = call_latency_ms(settings.url_for("videos_wan"), keys, settings, args.calls)
            env = {"SPARKLE_PROFILE": str(settings.profile_path), "SPARKLE_ENGINE": "local", "SPARKLE_TOKEN": None}
            with running_tool("videos_wan", home=home, env=env, ready_timeout=300) as tool:
                local_meta, local_invoke = call_latency_ms(tool.url, keys, settings, args.calls)
            print(f"per call (median of {args.calls}): GET /metadata local {local_meta:.1f} ms, Ray {ray_meta:.1f} ms "
                  f"(+{ray_meta - local_meta:.1f} ms); POST /invoke local {local_invoke:.1f} ms, Ray "
                  f"{ray_invoke:.1f} ms (+{ray_invoke - local_invoke:.1f} ms)")
        finally:
            ray_mesh.stop()
            store.close()


if __name__ == "__main__":
    main()
