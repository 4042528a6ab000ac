"""Assembling 10 clips (2 s, 640x360, 24 fps): concat by stream copy vs forced re-encode.

Both are measured in the same run against the real assemble_ffmpeg process over
HTTP (same clips, same audio track, same subtitles); the re-encode is the
baseline. Run: ``.venv/bin/python bench/bench_assemble.py [--clips 10] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.media import VideoWriter, write_wav
from sparkle_motion.testing import running_tool

WIDTH, HEIGHT, FPS = 640, 360, 24
RUN = "bench-assemble"


def make_clip(path: Path, seconds: float, seed: int) -> Path:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    with VideoWriter(path, WIDTH, HEIGHT, FPS, crf=20, preset="veryfast") as writer:
        for i in range(int(seconds * FPS)):
            r = (xx + 5 * i + 50 * seed) % 256
            g = (yy + 3 * i) % 256
            b = ((xx + yy) // 4 + 20 * seed) % 256
            writer.write(np.stack([r, g, b], axis=-1).astype(np.uint8))
    return path


def make_dialogue(path: Path, seconds: float, sr: int = 24000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    envelope = (np.sin(2 * np.pi * 1.5 * t) > 0).astype(np.float64)  # on/off phrases
    write_wav(path, 0.1 * envelope * np.sin(2 * np.pi * 170 * t), sr)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-assemble-") as tmp:
        home, src = Path(tmp) / "home", Path(tmp) / "src"
        src.mkdir()
        store = ArtifactStore(home)
        made = time.perf_counter()
        clips = [store.put(RUN, "inputs", "clip", make_clip(src / f"c{i}.mp4", args.seconds, i), "video/mp4",
                           ext=".mp4").uri for i in range(args.clips)]
        audio = store.put(RUN, "inputs", "audio", make_dialogue(src / "d.wav", args.clips * args.seconds),
                          "audio/wav", ext=".wav").uri
        print(f"inputs: {args.clips} clips x {args.seconds:.1f} s {WIDTH}x{HEIGHT}@{FPS} "
              f"made in {time.perf_counter() - made:.1f} s")
        subtitles = [{"start_s": i * args.seconds + 0.2, "end_s": i * args.seconds + 1.5, "text": f"Line {i}"}
                     for i in range(args.clips)]
        with running_tool("assemble_ffmpeg", home=home, env={"SPARKLE_TOKEN": None}) as tool:
            def assemble(force: bool) -> tuple[float, dict]:
                body = {"run_id": RUN, "clips": [{"uri": u} for u in clips], "audio_uri": audio,
                        "subtitles": subtitles, "options": {"force_reencode": force}}
                start = time.perf_counter()
                response = tool.client.post("/invoke", json=body, timeout=600)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                return elapsed, response.json()

            assemble(False)  # warm caches (page cache, first-request imports) before timing
            results: dict[bool, list[float]] = {False: [], True: []}
            last: dict[bool, dict] = {}
            for _ in range(args.repeats):
                for force in (False, True):  # interleaved so both see the same machine load
                    elapsed, last[force] = assemble(force)
                    results[force].append(elapsed)
        store.close()

    copy_s, reencode_s = statistics.median(results[False]), statistics.median(results[True])
    assert last[False]["concat_mode"] == "stream_copy" and last[True]["concat_mode"] == "reencode"
    film_s = last[False]["duration_s"]
    print(f"film: {film_s:.2f} s, median of {args.repeats} requests each")
    for name, seconds, body in (("stream_copy", copy_s, last[False]), ("reencode (baseline)", reencode_s, last[True])):
        steps = ", ".join(f"{k}={v:.2f}" for k, v in body["timings"].items())
        print(f"{name:20s} {seconds:6.2f} s  ({film_s / seconds:6.1f}x real time)  [{steps}]")
    print(f"speed-up stream_copy vs reencode: {reencode_s / copy_s:.2f}x")


if __name__ == "__main__":
    main()
