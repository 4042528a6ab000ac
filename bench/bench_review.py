"""Re-rolling one keyframe of a finished film vs rendering the whole film, on the same mesh.

The 4-shot plan of tests/data/plans/four_shots_review.json (frame_002 joins two
talking close-ups). Each repeat renders the plan with fresh keyframe seeds (the
baseline: every keyframe, clip and later step is new; the dialogue and the cast
portraits come from the cache after the first repeat — the step counts printed
say so), then re-rolls frame_002 with a new seed through
``POST /runs/{run_id}/review`` (a new run: 1 keyframe, 2 clips, 2 lip-syncs,
assembly, final QA; the rest from the step cache). Wall seconds from submit to
``succeeded``, and the ratio within the same run.

Run: ``.venv/bin/python bench/bench_review.py [--profile cpu] [--repeats 3] [--fps 12 --width 320 --height 184]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.testing import running_mesh

PLAN = Path(__file__).resolve().parents[1] / "tests" / "data" / "plans" / "four_shots_review.json"


def fresh_plan(shift: int) -> dict:
    plan = json.loads(PLAN.read_text())
    plan["metadata"]["plan_id"] = f"bench_review_{shift}"
    for base in plan["base_images"]:
        base["seed"] += 1000 * shift
    return plan


def timed_until_done(client: ProductionClient, run_id: str, started: float) -> tuple[float, Counter]:
    status = client.wait_for_status(run_id, {"succeeded", "failed"}, timeout=3 * 3600, interval=0.1)
    elapsed = time.perf_counter() - started
    if status.status != "succeeded":
        raise SystemExit(f"run {run_id} {status.status}: {status.error}")
    return elapsed, Counter(s.status for s in status.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu", help="base profile (cpu, gpu)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=184)
    args = parser.parse_args()

    full_s, reroll_s = [], []
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp, \
            running_mesh(Path(tmp), base=args.profile,
                         render={"fps": args.fps, "width": args.width, "height": args.height}) as settings, \
            ProductionClient(settings, timeout=120) as client:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            run_id = client.start(plan=fresh_plan(repeat)).run_id
            full, full_steps = timed_until_done(client, run_id, started)
            started = time.perf_counter()
            rerun = client.regenerate(run_id, [{"item": "frame_002", "seed": 777 + repeat}]).run_id
            reroll, reroll_steps = timed_until_done(client, rerun, started)
            full_s.append(full)
            reroll_s.append(reroll)
            print(f"repeat {repeat + 1}: full run {full:6.2f} s ({dict(full_steps)}), "
                  f"re-roll frame_002 {reroll:6.2f} s ({dict(reroll_steps)})", flush=True)
    full_m, reroll_m = statistics.median(full_s), statistics.median(reroll_s)
    print(f"profile {args.profile}, {args.width}x{args.height}@{args.fps}, 4 shots / 6 s, {args.repeats} repeats")
    print(f"full run (baseline): median {full_m:.2f} s")
    print(f"re-roll one keyframe: median {reroll_m:.2f} s = {reroll_m / full_m:.2f}x the full run")


if __name__ == "__main__":
    main()
