"""Storing a finished utterance and answering with it: the same for every tts_chatterbox CPU backend.

espeak and kokoro differ in how they speak and in their ``params`` record; the WAV,
the artifact's metadata layout and the response are one contract, so they live here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.models import PhonemeTiming, TtsChatterboxRequest, TtsChatterboxResponse, WordTiming
from sparkle_motion.media import write_wav
from sparkle_motion.services import ToolContext


# Word ends are pulled back to the last frame of sound before the next word: the frame, and a word's least length.
WORD_FRAME_S = 0.005
MIN_WORD_S = 0.03


@dataclass
class Speech:
    """A finished utterance at the requested sample rate, with timings in seconds (every CPU backend's)."""

    samples: np.ndarray  # float32 mono
    sample_rate: int
    words: list[WordTiming]
    phonemes: list[PhonemeTiming]
    raw_duration_s: float
    trimmed_leading_s: float
    trimmed_trailing_s: float
    chunks: int
    synth_time_s: float
    timings_note: str | None = None  # espeak: why timings are missing or partial
    phoneme_text: list[str] = field(default_factory=list)  # kokoro: the phonemes it was given, per chunk
    stage_times: dict[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def store_speech(ctx: ToolContext, request: TtsChatterboxRequest, speech: Speech, *, voice_id: str, engine: str,
                 params: dict[str, Any], timings_note: str | None) -> TtsChatterboxResponse:
    """Write ``speech`` as a WAV artifact whose metadata records ``params``, and answer with it."""
    staged = ctx.staging_path(".wav")
    t0 = time.perf_counter()
    write_wav(staged, speech.samples, speech.sample_rate)
    metadata: dict[str, Any] = {
        "duration_s": round(speech.duration_s, 4),
        "sample_rate": speech.sample_rate,
        "voice_id": voice_id,
        "engine": engine,
        "synth_time_s": speech.synth_time_s,
        "watermarked": False,
        "seed": request.seed,
        "params": params,
        "raw_duration_s": speech.raw_duration_s,
        "trimmed_leading_s": speech.trimmed_leading_s,
        "trimmed_trailing_s": speech.trimmed_trailing_s,
        "chunks": speech.chunks,
        "words": [w.model_dump() for w in speech.words],
        "phonemes": [p.model_dump() for p in speech.phonemes],
        "timings_note": timings_note,
        "timings": speech.stage_times,
    }
    manifest = ctx.put_output(request, "dialogue_audio", staged, "audio/wav", metadata,
                              media={"duration_s": round(speech.duration_s, 4), "sample_rate": speech.sample_rate},
                              move=True)
    store_s = time.perf_counter() - t0
    return TtsChatterboxResponse(
        artifacts=[manifest], audio_uri=manifest.uri, duration_s=round(speech.duration_s, 4),
        sample_rate=speech.sample_rate, voice_id=voice_id, engine=engine,
        synth_time_s=speech.synth_time_s, watermarked=False, words=speech.words, phonemes=speech.phonemes,
        timings_note=timings_note,
        timings={**speech.stage_times, "synth_s": speech.synth_time_s, "store_s": round(store_s, 6)},
    )
