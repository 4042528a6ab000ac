#!/usr/bin/env python
"""Walk through the six media FunctionTools by hand, over HTTP, without the agents.

Renders two keyframes (images_sdxl), a clip between them (videos_wan), a line of
dialogue (tts_chatterbox), muxes it onto the clip (lipsync_wav2lip), assembles the
film with subtitles (assemble_ffmpeg) and runs QA on it (qa_qwen2vl). Starts the
mesh if it is not running (profile from SPARKLE_PROFILE, default cpu).

    .venv/bin/python scripts/tools_walkthrough.py -o walkthrough.mp4
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from sparkle_motion import mesh
from sparkle_motion.config import get_settings
from sparkle_motion.errors import SparkleError
from sparkle_motion.services import ToolClient

RUN_ID = "walkthrough"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("walkthrough.mp4"))
    parser.add_argument("--text", default="The storm is coming. We should light the lamp before dark.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    settings = get_settings()
    if not mesh.is_up(settings):
        print(f"starting the mesh (profile {settings.profile_name}) …")
        mesh.up(settings)

    def call(tool_id: str, payload: dict) -> dict:
        with ToolClient(tool_id, settings=settings) as client:
            return client.invoke({"run_id": RUN_ID, **payload})

    fps, width, height, seconds = 24, 640, 360, 4.0
    prompts = ["A lighthouse on a cliff at dusk, storm clouds, Mara in a yellow raincoat",
               "Close-up of Mara lighting the lighthouse lamp at night, rain on the glass"]
    frames = [call("images_sdxl", {"prompt": p, "seed": args.seed + i, "width": width, "height": height,
                                   "characters": ["Mara"]})["images"][0]["artifact"]["uri"]
              for i, p in enumerate(prompts)]
    print("keyframes:", *frames, sep="\n  ")

    clip = call("videos_wan", {"start_frame_uri": frames[0], "end_frame_uri": frames[1],
                               "motion_prompt": "slow push-in, handheld", "prompt": prompts[1],
                               "fps": fps, "num_frames": int(seconds * fps), "seed": args.seed})
    print("clip:", clip["video"]["uri"], f"({clip['num_frames']} frames, camera {clip['camera_move']['name']})")

    speech = call("tts_chatterbox", {"text": args.text, "seed": args.seed,
                                     "voice": {"language": "en-US", "character_id": "mara", "voice_id": "en-us+f3"}})
    print("speech:", speech["audio_uri"], f"({speech['duration_s']:.2f} s, {speech['engine']})")

    synced = call("lipsync_wav2lip", {"video_uri": clip["video"]["uri"], "audio_uri": speech["audio_uri"],
                                      "options": {"fit": "pad_or_trim",
                                                  "word_timings": [{k: w[k] for k in ("word", "start_s", "end_s")}
                                                                   for w in speech["words"]]}})
    print("lipsync:", synced["video_uri"], f"({synced['segments']} speech segments, lip motion: {synced['lip_motion']})")

    film = call("assemble_ffmpeg", {"clips": [{"uri": synced["video_uri"]}],
                                    "subtitles": [{"start_s": 0.0, "end_s": min(seconds, speech["duration_s"]),
                                                   "text": f"Mara: {args.text}"}]})
    print("film:", film["video_uri"], f"({film['duration_s']:.2f} s, {film['concat_mode']})")

    qa = call("qa_qwen2vl", {"media": [{"uri": film["video_uri"], "kind": "video"}],
                             "checks": ["black_frames", "frozen_frames", "duration_mismatch", "missing_speech"],
                             "expectations": {"duration_s": seconds,
                                              "speech_intervals": [{"start_s": 0.0,
                                                                    "end_s": min(seconds, speech["duration_s"])}]}})
    report = qa["report"]
    print("QA:", report["verdict"], *(f"  {c['name']}: {c['status']} — {c['detail']}" for c in report["checks"]), sep="\n")

    store_path = next(a["local_path"] for a in film["artifacts"] if a["uri"] == film["video_uri"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store_path, args.output)
    print(f"wrote {args.output.resolve()}")
    return 0 if report["verdict"] != "fail" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SparkleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
