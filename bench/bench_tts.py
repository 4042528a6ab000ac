"""TTS real-time factor of the tts_chatterbox `espeak` backend.

Measured in one run, on the same sentences and voice:

* ``pipeline``: what /invoke does per line — chunking, eSpeak synthesis (with the
  per-call library reload that makes output reproducible), silence trimming,
  word/phoneme timing, resampling 22.05 → 24 kHz;
* ``baseline``: one raw ``espeak_Synth`` call per line at eSpeak's native rate
  (no chunking, trimming or resampling);
* ``reload``: the library load/initialise/unload alone (no synthesis).

RTF = processing time / audio duration (lower is faster; < 1 is faster than real time).
Run: ``.venv/bin/python bench/bench_tts.py [--repeats 5] [--sample-rate 24000]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from function_tools.tts_chatterbox.espeak import installed_variants, synthesize_speech
from function_tools.tts_chatterbox.espeak_engine import ESPEAK_LOCK, EspeakLibrary, open_synthesizer
from function_tools.tts_chatterbox.models import TtsVoice
from function_tools.tts_chatterbox.voices import LanguageIndex, design_voice

SENTENCES = [
    "The rain kept falling on the neon signs, and nobody on the street looked up.",
    "Do you remember the night we met?",
    "I kept the photograph, even after everything that happened between us.",
    "Tomorrow the train leaves at six, and I intend to be on it.",
    ("It was late when the music finally stopped. The crowd drifted out into the cold, laughing and "
     "shouting, and for a moment the whole city seemed to hold its breath. Then the lights went out, "
     "one block at a time, until only the river was left, shining under the bridge like a promise "
     "nobody meant to keep."),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-rate", type=int, default=24000)
    args = parser.parse_args()

    synth = open_synthesizer()
    if not isinstance(synth, EspeakLibrary):
        raise SystemExit("bench needs libespeak-ng (espeakng-loader); only the CLI fallback is available")
    design = design_voice(TtsVoice(character_id="ava"), LanguageIndex(synth.voices), installed_variants(synth))
    params = design.params(seed=0)
    synthesize_speech(synth, "Warm up.", design, seed=0, sample_rate=args.sample_rate)  # filter tables, page cache

    pipeline_s, baseline_s, audio_s, raw_audio_s = [], [], 0.0, 0.0
    for _ in range(args.repeats):
        for text in SENTENCES:
            t0 = time.perf_counter()
            raw = synth.synthesize(text, params)
            baseline_s.append(time.perf_counter() - t0)
            raw_audio_s += len(raw.samples) / raw.sample_rate

            t0 = time.perf_counter()
            speech = synthesize_speech(synth, text, design, seed=0, sample_rate=args.sample_rate)
            pipeline_s.append(time.perf_counter() - t0)
            audio_s += speech.duration_s

    reload_s = []
    for _ in range(args.repeats * len(SENTENCES)):
        t0 = time.perf_counter()
        with ESPEAK_LOCK, synth._loaded():  # noqa: SLF001 - the cost being measured
            pass
        reload_s.append(time.perf_counter() - t0)

    pipeline_rtf = sum(pipeline_s) / audio_s
    baseline_rtf = sum(baseline_s) / raw_audio_s
    print(f"engine: espeak-ng {synth.version}; voice {params.voice}; {len(SENTENCES)} lines x {args.repeats} repeats; "
          f"output {args.sample_rate} Hz")
    print(f"audio produced: pipeline {audio_s:.1f} s (trimmed), baseline {raw_audio_s:.1f} s (raw)")
    print(f"pipeline  (/invoke work): RTF {pipeline_rtf:.4f}  median {statistics.median(pipeline_s) * 1000:.1f} ms/line  "
          f"({1 / pipeline_rtf:.0f}x real time)")
    print(f"baseline  (raw espeak):   RTF {baseline_rtf:.4f}  median {statistics.median(baseline_s) * 1000:.1f} ms/line  "
          f"({1 / baseline_rtf:.0f}x real time)")
    print(f"library reload per call:  median {statistics.median(reload_s) * 1000:.2f} ms")
    print(f"ratio pipeline/baseline RTF: {pipeline_rtf / baseline_rtf:.2f}x")
    synth.close()


if __name__ == "__main__":
    main()
