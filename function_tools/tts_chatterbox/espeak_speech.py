"""eSpeak NG speech with word and phoneme timings: the engine of the `espeak` backend, and the per-line fallback
that the `kokoro` backend shares (so that no backend module imports another)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.dsp import activity_threshold, frame_rms, resample, trim_silence
from function_tools.tts_chatterbox.espeak_engine import RawSynthesis, Synthesizer, open_synthesizer
from function_tools.tts_chatterbox.models import (
    PhonemeTiming,
    TtsChatterboxRequest,
    TtsChatterboxResponse,
    TtsVoice,
    WordTiming,
)
from function_tools.tts_chatterbox.pauses import pause_after
from function_tools.tts_chatterbox.speech_output import MIN_WORD_S, WORD_FRAME_S, Speech, store_speech
from function_tools.tts_chatterbox.text import DEFAULT_MAX_CHUNK_CHARS, TextChunk, split_text
from function_tools.tts_chatterbox.voices import CHARACTER_VARIANTS, LanguageIndex, VoiceDesign, design_voice
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import BackendError, ConfigError, InvalidInputError
from sparkle_motion.services import ToolContext

_WORD_RE = re.compile(r"\w[\w'’]*", re.UNICODE)


def _word_timings(raw: RawSynthesis, chunk: TextChunk, offset_s: float, lead_s: float, kept_s: float) -> list[WordTiming]:
    """Timings for every word of a chunk, placed in the output.

    eSpeak reports a WORD event per pronounced word group; it folds some function
    words into their neighbour ("in the car" gives events for "in" and "car"
    only).  Each event anchors the text word at its position, the words it
    swallowed share its interval in proportion to their length and are marked
    ``estimated``.  Interval ends are refined to where the sound stops before
    the next event, so pauses are not counted as speech.
    """
    tokens = [(m.start(), m.end()) for m in _WORD_RE.finditer(chunk.text)]
    if not tokens or not raw.words:
        return []
    frame = max(1, int(WORD_FRAME_S * raw.sample_rate))
    rms = frame_rms(raw.samples.astype(np.float32) / 32768.0, frame)
    threshold = activity_threshold(rms)
    raw_len_s = len(raw.samples) / raw.sample_rate

    anchors: dict[int, float] = {}  # token index -> event start (s)
    for ev in raw.words:
        index = next((i for i, (a, b) in enumerate(tokens) if ev.text_start < b), None)
        if index is not None and index not in anchors:
            anchors[index] = ev.start_ms / 1000.0
    ordered = sorted(anchors)
    if not ordered:
        return []
    timings: list[WordTiming] = []
    for n, first in enumerate(ordered):
        start = anchors[first]
        # words before the first event belong to it; words after an event up to the next anchor too
        group_from = 0 if n == 0 else first
        group_to = ordered[n + 1] if n + 1 < len(ordered) else len(tokens)
        limit = anchors[ordered[n + 1]] if n + 1 < len(ordered) else raw_len_s
        f0, f1 = int(start / WORD_FRAME_S), max(int(start / WORD_FRAME_S) + 1, int(limit / WORD_FRAME_S))
        loud = np.nonzero(rms[f0:f1] > threshold)[0]
        end = (f0 + loud[-1] + 1) * WORD_FRAME_S if loud.size else limit
        end = min(max(end, start + MIN_WORD_S), max(limit, start + MIN_WORD_S))
        group = tokens[group_from:group_to]
        weights = np.cumsum([0] + [b - a for a, b in group], dtype=np.float64)
        bounds = start + (end - start) * weights / weights[-1]
        for k, (a, b) in enumerate(group):
            # shift into the trimmed chunk, then to the chunk's place in the output
            s = min(max(bounds[k] - lead_s, 0.0), kept_s)
            e = min(max(bounds[k + 1] - lead_s, s), kept_s)
            timings.append(WordTiming(word=chunk.text[a:b], start_s=round(offset_s + s, 4), end_s=round(offset_s + e, 4),
                                      char_start=chunk.offset + a, estimated=len(group) > 1))
    return timings


def _phoneme_timings(raw: RawSynthesis, offset_s: float, lead_s: float, kept_s: float) -> list[PhonemeTiming]:
    timings: list[PhonemeTiming] = []
    raw_len_s = len(raw.samples) / raw.sample_rate
    events = raw.phonemes
    for i, ev in enumerate(events):
        if not ev.phoneme.strip("_: "):  # pauses carry no phoneme
            continue
        start = ev.start_ms / 1000.0 - lead_s
        end = (events[i + 1].start_ms / 1000.0 if i + 1 < len(events) else raw_len_s) - lead_s
        s, e = min(max(start, 0.0), kept_s), min(max(end, 0.0), kept_s)
        if e > s:
            timings.append(PhonemeTiming(phoneme=ev.phoneme, start_s=round(offset_s + s, 4), end_s=round(offset_s + e, 4)))
    return timings


def synthesize_speech(synth: Synthesizer, text: str, design: VoiceDesign, *, seed: int, sample_rate: int,
                      max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
                      progress: Callable[[int, int | None, str], None] | None = None) -> Speech:
    """Chunk, synthesize, trim and join ``text``; resample to ``sample_rate``.

    ``progress`` (a ToolContext's) is told of each chunk before it is spoken; a cancelled call stops there.
    """
    chunks = split_text(text, max_chunk_chars)
    if not chunks:
        raise BackendError("text has nothing to synthesize after splitting", context={"text_chars": len(text)})
    params = design.params(seed)
    pieces: list[np.ndarray] = []
    words: list[WordTiming] = []
    phonemes: list[PhonemeTiming] = []
    notes: set[str] = set()
    raw_total = 0
    lead_first = tail_last = 0.0
    offset_s = 0.0
    synth_s = 0.0
    native_rate = 0
    started = time.perf_counter()
    for index, chunk in enumerate(chunks):
        if progress is not None:
            progress(index, len(chunks), "chunks")
        t0 = time.perf_counter()
        raw = synth.synthesize(chunk.text, params)
        synth_s += time.perf_counter() - t0
        if native_rate and raw.sample_rate != native_rate:
            raise BackendError("engine changed sample rate between chunks",
                               context={"first": native_rate, "now": raw.sample_rate})
        native_rate = raw.sample_rate
        if raw.timings_note:
            notes.add(raw.timings_note)
        raw_total += len(raw.samples)
        kept, lead, tail = trim_silence(raw.samples, raw.sample_rate)
        lead_s, kept_s = lead / raw.sample_rate, len(kept) / raw.sample_rate
        if index == 0:
            lead_first = lead_s
        tail_last = tail / raw.sample_rate
        words += _word_timings(raw, chunk, offset_s, lead_s, kept_s)
        phonemes += _phoneme_timings(raw, offset_s, lead_s, kept_s)
        pieces.append(kept.astype(np.float32) / 32768.0)
        offset_s += kept_s
        if index + 1 < len(chunks):
            silence = pause_after(chunk, raw.sample_rate)
            pieces.append(silence)
            offset_s += len(silence) / raw.sample_rate
    joined = np.concatenate(pieces)
    if not np.any(joined):
        # punctuation-only or invisible text: nothing to pronounce is the caller's problem
        raise InvalidInputError("has nothing eSpeak NG can pronounce (the synthesized audio is silent)",
                                field="text", context={"voice": params.voice, "text_chars": len(text)})
    t0 = time.perf_counter()
    out = resample(joined, native_rate, sample_rate)
    resample_s = time.perf_counter() - t0
    duration = len(out) / sample_rate
    for w in words:  # resampling rounds the length; keep every timing inside the audio
        w.start_s, w.end_s = min(w.start_s, duration), min(w.end_s, duration)
    for p in phonemes:
        p.start_s, p.end_s = min(p.start_s, duration), min(p.end_s, duration)
    return Speech(
        samples=out, sample_rate=sample_rate, words=words, phonemes=phonemes,
        raw_duration_s=round(raw_total / native_rate, 4), trimmed_leading_s=round(lead_first, 4),
        trimmed_trailing_s=round(tail_last, 4), chunks=len(chunks),
        synth_time_s=round(time.perf_counter() - started, 6),
        timings_note="; ".join(sorted(notes)) or None,
        stage_times={"espeak_s": round(synth_s, 6), "resample_s": round(resample_s, 6)},
    )


class EspeakBackend:
    """FunctionTool backend: ``load()`` opens eSpeak NG, ``invoke()`` speaks one request."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.synth: Synthesizer | None = None
        self.languages: LanguageIndex | None = None
        self.variants: frozenset[str] = frozenset()
        self.max_chunk_chars = int(profile.options.get("max_chunk_chars", DEFAULT_MAX_CHUNK_CHARS))
        if not 40 <= self.max_chunk_chars <= 2000:
            raise ConfigError("tts_chatterbox option max_chunk_chars must be within 40-2000",
                              field="tools.tts_chatterbox.options.max_chunk_chars")

    def load(self) -> None:
        self.synth = open_synthesizer()
        self.languages = LanguageIndex(self.synth.voices)
        self.variants = frozenset(installed_variants(self.synth))
        # A real utterance proves the whole path works before /ready says so.
        design = design_voice(TtsVoice(), self.languages, self.variants)
        synthesize_speech(self.synth, "Ready.", design, seed=0, sample_rate=22050)

    def close(self) -> None:
        if self.synth is not None:
            self.synth.close()

    @property
    def engine(self) -> str:
        assert self.synth is not None
        suffix = "" if self.synth.kind == "library" else " (cli)"
        return f"espeak-ng {self.synth.version}{suffix}"

    def invoke(self, request: TtsChatterboxRequest, ctx: ToolContext) -> TtsChatterboxResponse:
        assert self.synth is not None and self.languages is not None
        if request.reference_audio_uri is not None:
            # espeak cannot clone a voice, but the field is still an input URI: a path or a
            # foreign URI is refused (422 on the field) as every other tool refuses it.
            manifest, _ = ctx.resolve_input(request.reference_audio_uri, "reference_audio_uri")
            if not manifest.media_type.startswith("audio/"):
                raise InvalidInputError(f"reference audio must be audio (got {manifest.media_type})",
                                        field="reference_audio_uri")
        design = design_voice(request.voice, self.languages, self.variants)
        speech = synthesize_speech(self.synth, request.text, design, seed=request.seed,
                                   sample_rate=request.sample_rate, max_chunk_chars=self.max_chunk_chars,
                                   progress=ctx.progress)
        ignored = {name: getattr(request, name) for name in ("exaggeration", "cfg_weight", "reference_audio_uri")
                   if getattr(request, name) is not None}
        params: dict[str, Any] = {
            "text": request.text,
            "voice": request.voice.model_dump(mode="json"),
            "sample_rate": request.sample_rate,
            "espeak": {"voice": f"{design.espeak_voice}+{design.variant}", "rate_wpm": design.rate_wpm,
                       "pitch": design.pitch, "pitch_range": design.pitch_range},
            "voice_decisions": design.decisions,
            "ignored": {"fields": ignored, "reason": "the espeak backend has no emotion, guidance or cloning"}
            if ignored else {},
        }
        return store_speech(ctx, request, speech, voice_id=design.voice_id, engine=self.engine, params=params,
                            timings_note=speech.timings_note)


def installed_variants(synth: Synthesizer) -> list[str]:
    """Variant names under the data path's voices/!v (the CLI fallback assumes the classic set)."""
    data_path = getattr(synth, "data_path", None)
    if data_path is not None:
        folder = Path(data_path) / "voices" / "!v"
        if folder.is_dir():
            return sorted(p.name for p in folder.iterdir() if p.is_file())
    return list(CHARACTER_VARIANTS)
