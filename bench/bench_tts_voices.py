"""Voice quality and speed of tts_chatterbox `kokoro` against `espeak`, measured in one run.

Lines: the dialogue of films the offline planner composes for several ideas
(English, each character with the voice profile the planner gave it), spoken
by both backends in this process through the same code /invoke runs.

* word recall: pocketsphinx (offline, its bundled US English model) listens to
  each line resampled to 16 kHz mono; recall = words of the line recognised in
  order (longest common subsequence of the normalised words) / words of the line;
* real-time factor: synthesis wall time / audio duration on this machine.  Each
  line is spoken ``--repeats`` times and the fastest take counts (as ``timeit``
  does: other load only ever slows a take down); the mean take and the process
  CPU time per audio second are printed too.  The takes must be identical;
* per-voice pitch: median F0 of each character's lines, per backend.

The decision rule of issue 15 is printed at the end: kokoro is the cpu default
only if its recall is clearly higher (here: by 0.15 or more) and its RTF (fastest
take) is 0.5 or below.

Run: ``.venv/bin/python bench/bench_tts_voices.py [--threads N] [--repeats 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.dsp import estimate_f0, resample
from function_tools.tts_chatterbox.espeak import EspeakBackend, synthesize_speech
from function_tools.tts_chatterbox.kokoro import KokoroBackend
from function_tools.tts_chatterbox.kokoro_voices import design_kokoro_voice
from function_tools.tts_chatterbox.models import TtsVoice
from function_tools.tts_chatterbox.voices import design_voice
from sparkle_motion.agents.offline_planner import OfflinePlanner, PlanControls
from sparkle_motion.config import ToolProfile, load_settings

IDEAS = (
    "Two friends on a neon rooftop reconcile before sunrise.",
    "A lighthouse keeper and a lost sailor wait out a storm.",
    "Mara, a young chef, argues with her father about the family restaurant.",
    "An old detective interviews a nervous witness in a rainy diner.",
    "Two astronauts repair their ship while arguing about home.",
    "A grandmother teaches her grandson to fish at dawn.",
    "Jonas and Priya race to finish a robot before the science fair.",
)
RECOGNISER_RATE = 16000
SAMPLE_RATE = 24000


@dataclass(frozen=True)
class Line:
    film: int
    character: str  # the voice's identity: the planner's voice_id, shared by characters of different films
    voice: TtsVoice
    text: str


@dataclass
class Result:
    recall: list[float] = field(default_factory=list)
    wall_s: float = 0.0  # per line the fastest of the repeats, summed
    wall_mean_s: float = 0.0  # per line the mean of the repeats, summed
    cpu_s: float = 0.0  # per line the least process CPU time of the repeats, summed
    audio_s: float = 0.0
    nondeterministic: int = 0  # lines whose repeats differ
    f0: dict[str, list[float]] = field(default_factory=dict)
    voice_ids: dict[str, str] = field(default_factory=dict)
    hypotheses: list[str] = field(default_factory=list)


def planner_lines() -> list[Line]:
    lines = []
    for film, idea in enumerate(IDEAS):
        plan = OfflinePlanner(idea, PlanControls()).compose()
        characters = {c["id"]: c for c in plan["characters"]}
        for entry in plan["dialogue_timeline"]:
            if entry["type"] != "dialogue":
                continue
            c = characters[entry["character_id"]]
            # the voice production_run sends for the line
            voice = TtsVoice(character_id=c["id"], character_name=c["name"], **c["voice_profile"])
            lines.append(Line(film, voice.voice_id or voice.identity, voice, entry["text"]))
    return lines


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower().replace("’", "'"))


def recall(reference: str, hypothesis: str) -> float:
    ref, hyp = words_of(reference), words_of(hypothesis)
    table = [[0] * (len(hyp) + 1) for _ in range(len(ref) + 1)]
    for i, r in enumerate(ref):
        for j, h in enumerate(hyp):
            table[i + 1][j + 1] = table[i][j] + 1 if r == h else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1] / len(ref) if ref else 1.0


class Recogniser:
    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=RECOGNISER_RATE, loglevel="FATAL")

    def __call__(self, samples: np.ndarray, rate: int) -> str:
        x = resample(samples, rate, RECOGNISER_RATE)
        pcm = (np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


def measure(name: str, lines: list[Line], speak: Any, listen: Recogniser, repeats: int) -> Result:
    """Speak every line ``repeats`` times (timing), then listen to it once and track its pitch."""
    result = Result()
    for line in lines:
        walls, cpus, takes = [], [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            samples, voice_id = speak(line)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            takes.append(samples)
        result.wall_s += min(walls)
        result.wall_mean_s += statistics.mean(walls)
        result.cpu_s += min(cpus)
        result.nondeterministic += any(not np.array_equal(takes[0], t) for t in takes[1:])
        result.audio_s += len(samples) / SAMPLE_RATE
        heard = listen(samples, SAMPLE_RATE)
        result.hypotheses.append(heard)
        result.recall.append(recall(line.text, heard))
        f0 = estimate_f0(samples, SAMPLE_RATE)
        if f0.size:
            result.f0.setdefault(line.character, []).append(float(np.median(f0)))
        result.voice_ids[line.character] = voice_id
    print(f"  {name}: {len(lines)} lines, {result.audio_s:.1f} s of audio; fastest of {repeats} takes "
          f"{result.wall_s:.1f} s in all; repeats that differ: {result.nondeterministic}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads for kokoro (default: backend's)")
    parser.add_argument("--repeats", type=int, default=3, help="takes per line; the fastest is timed (default 3)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    lines = planner_lines()
    if len(lines) < 20:
        raise SystemExit(f"the planner gave only {len(lines)} lines; the evaluation needs at least 20")
    settings = load_settings(dict(os.environ))
    espeak = EspeakBackend(ToolProfile(backend="espeak", model="espeak-ng"), settings)
    options = {"threads": args.threads} if args.threads else {}
    kokoro = KokoroBackend(ToolProfile(backend="kokoro", model="kokoro-82m", options=options), settings)
    t0 = time.perf_counter()
    espeak.load()
    kokoro.load()
    load_s = time.perf_counter() - t0
    assert espeak.synth is not None and espeak.languages is not None
    listen = Recogniser()

    def speak_espeak(line: Line) -> tuple[np.ndarray, str]:
        design = design_voice(line.voice, espeak.languages, espeak.variants)  # type: ignore[arg-type]
        speech = synthesize_speech(espeak.synth, line.text, design, seed=0, sample_rate=SAMPLE_RATE)  # type: ignore[arg-type]
        return speech.samples, f"{design.espeak_voice}+{design.variant}"

    def speak_kokoro(line: Line) -> tuple[np.ndarray, str]:
        voice = design_kokoro_voice(line.voice)
        language, _ = kokoro.espeak.languages.resolve(line.voice.language)  # type: ignore[union-attr]
        speech = kokoro.synthesize(line.text, language, voice, sample_rate=SAMPLE_RATE)
        return speech.samples, voice.recipe.name

    load_before = os.getloadavg()[0]
    print(f"{len(lines)} lines from {len(IDEAS)} planned films; kokoro threads {kokoro.threads}; "
          f"load average {load_before:.1f} on {os.cpu_count()} CPUs", flush=True)
    results = {"espeak": measure("espeak", lines, speak_espeak, listen, args.repeats),
               "kokoro": measure("kokoro", lines, speak_kokoro, listen, args.repeats)}
    load_after = os.getloadavg()[0]

    base = results["espeak"]
    rows = {}
    print("\n| backend | word recall | RTF (fastest take) | RTF (mean take) | RTF (CPU time) | audio s | "
          "recall ÷ espeak | RTF ÷ espeak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        rec, rtf, cpu = statistics.mean(r.recall), r.wall_s / r.audio_s, r.cpu_s / r.audio_s
        rows[name] = {"recall": rec, "rtf": rtf, "rtf_mean": r.wall_mean_s / r.audio_s, "rtf_cpu": cpu,
                      "audio_s": r.audio_s, "nondeterministic_lines": r.nondeterministic}
        print(f"| {name} | {rec:.3f} | {rtf:.3f} | {r.wall_mean_s / r.audio_s:.3f} | {cpu:.3f} | {r.audio_s:.1f} | "
              f"{rec / statistics.mean(base.recall):.2f} | {rtf / (base.wall_s / base.audio_s):.0f} |")

    print("\n| planner voice_id | espeak voice | espeak F0 Hz | kokoro voice | kokoro F0 Hz | kokoro recall |")
    print("| --- | --- | --- | --- | --- | --- |")
    per_voice = {}
    for character in dict.fromkeys(line.character for line in lines):
        idx = [i for i, line in enumerate(lines) if line.character == character]
        e_f0 = statistics.median(base.f0.get(character, [0.0]))
        k_f0 = statistics.median(results["kokoro"].f0.get(character, [0.0]))
        k_rec = statistics.mean(results["kokoro"].recall[i] for i in idx)
        per_voice[character] = {"espeak_voice": base.voice_ids[character], "espeak_f0": e_f0,
                                "kokoro_voice": results["kokoro"].voice_ids[character], "kokoro_f0": k_f0,
                                "kokoro_recall": k_rec}
        print(f"| {character} | {base.voice_ids[character]} | {e_f0:.0f} | {results['kokoro'].voice_ids[character]} | "
              f"{k_f0:.0f} | {k_rec:.2f} |")

    k, e = rows["kokoro"], rows["espeak"]
    pairs = list(zip(results["kokoro"].recall, base.recall))
    better, worse = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
    default = k["recall"] >= e["recall"] + 0.15 and k["rtf"] <= 0.5
    print(f"\nper line: kokoro recognised more words on {better} lines, fewer on {worse}, "
          f"as many on {len(pairs) - better - worse}")
    print(f"load average {load_before:.1f} before, {load_after:.1f} after; model load {load_s:.1f} s")
    print(f"decision rule (recall clearly higher, i.e. +0.15 or more, and RTF <= 0.5): kokoro recall "
          f"{k['recall']:.3f} vs {e['recall']:.3f}, RTF {k['rtf']:.3f} -> "
          f"{'kokoro qualifies as the cpu default' if default else 'kokoro stays opt-in'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"lines": len(lines), "backends": rows, "kokoro_better_lines": better, "kokoro_worse_lines": worse, "voices": per_voice, "threads": kokoro.threads,
                       "load_average": [load_before, load_after], "cpus": os.cpu_count(),
                       "hypotheses": {n: r.hypotheses for n, r in results.items()},
                       "texts": [line.text for line in lines]}, f, indent=1, ensure_ascii=False)
    espeak.close()
    kokoro.close()


if __name__ == "__main__":
    main()
