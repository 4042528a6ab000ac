"""Backend ``kokoro``: neural speech on CPU from Kokoro-82M (int8 ONNX, PyPI only), with model-timed words.

Per request: the language is resolved as for ``espeak`` (unknown → 422), the
text is split into chunks (``text.split_text``), each chunk is phonemized by
eSpeak NG and spoken by Kokoro through kokoro-onnx with the character's
blended style (kokoro_voices), trimmed, and joined with the eSpeak backend's
pauses; the result is resampled to the requested rate.  Word and phoneme
timings come from the model's own durations (kokoro_model, kokoro_text).

A line whose language Kokoro cannot speak (kokoro_text.Unspeakable) is spoken
by the ``espeak`` backend instead: same request, its response, and a
``fallback`` record (backend, reason, language) in the artifact's metadata.

Deterministic: the ONNX export has no random nodes and onnxruntime runs its
kernels in a fixed order for a fixed thread count, so the same request gives
the same WAV bytes (``seed`` has nothing to seed and is recorded as such).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.dsp import activity_threshold, frame_rms, resample, trim_silence
from function_tools.tts_chatterbox.espeak_speech import EspeakBackend
from function_tools.tts_chatterbox.kokoro_model import MODEL_VERSION, KokoroModel, default_cache_dir
from function_tools.tts_chatterbox.kokoro_text import (
    Phonemizer,
    TimedPhoneme,
    Unspeakable,
    phoneme_timings,
    word_timings,
)
from function_tools.tts_chatterbox.kokoro_voices import KokoroVoice, design_kokoro_voice
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
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import BackendError, ConfigError, InvalidInputError
from sparkle_motion.services import ToolContext

TIMINGS_NOTE = ("word and phoneme timings come from Kokoro's predicted durations; words eSpeak writes as one "
                "phoneme group share its span by phoneme count (estimated: true)")


@dataclass
class _Chunk:
    """One spoken chunk: trimmed samples at the model's rate, timings from its trimmed start."""

    samples: np.ndarray
    rate: int
    words: list[WordTiming]
    phonemes: list[PhonemeTiming]
    raw_s: float
    lead_s: float
    tail_s: float


def _end_of_sound(rms: np.ndarray, threshold: float, start: float, end: float) -> float:
    """The end of the last loud frame in [start, end], keeping a minimal word length."""
    f0, f1 = int(start / WORD_FRAME_S), max(int(start / WORD_FRAME_S) + 1, int(np.ceil(end / WORD_FRAME_S)))
    loud = np.nonzero(rms[f0:f1] > threshold)[0]
    last = (f0 + loud[-1] + 1) * WORD_FRAME_S if loud.size else end
    return max(min(last, end), min(start + MIN_WORD_S, end))


class KokoroBackend:
    """FunctionTool backend: ``load()`` reassembles and opens Kokoro, ``invoke()`` speaks one request."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        options = profile.options
        self.max_chunk_chars = int(options.get("max_chunk_chars", DEFAULT_MAX_CHUNK_CHARS))
        if not 40 <= self.max_chunk_chars <= 400:
            raise ConfigError("tts_chatterbox option max_chunk_chars must be within 40-400 for kokoro",
                              field="tools.tts_chatterbox.options.max_chunk_chars")
        threads = options.get("threads", min(4, os.cpu_count() or 1))
        if not isinstance(threads, int) or not 1 <= threads <= 64:
            raise ConfigError("tts_chatterbox option threads must be an integer within 1-64",
                              field="tools.tts_chatterbox.options.threads")
        self.threads = threads
        self.cache_dir = Path(options["model_dir"]).expanduser() if options.get("model_dir") else default_cache_dir()
        # eSpeak resolves languages (the same 422s as the espeak backend) and speaks what Kokoro cannot.
        self.espeak = EspeakBackend(profile, settings)
        self.model: KokoroModel | None = None
        self.phonemizer: Phonemizer | None = None

    def load(self) -> None:
        self.espeak.load()
        self.model = KokoroModel.open(self.cache_dir, threads=self.threads)
        self.phonemizer = Phonemizer(self.model.kokoro.tokenizer.vocab)
        # A real utterance proves the whole path works before /ready says so.
        self.synthesize("Ready.", "en-us", design_kokoro_voice(TtsVoice()), sample_rate=24000)

    def close(self) -> None:
        self.espeak.close()

    @property
    def engine(self) -> str:
        assert self.model is not None
        v = self.model.versions
        return f"{MODEL_VERSION} (kokoro-onnx {v['kokoro-onnx']}, onnxruntime {v['onnxruntime']})"

    # -- synthesis -------------------------------------------------------------------

    def synthesize(self, text: str, language: str, voice: KokoroVoice, *, sample_rate: int) -> Speech:
        """Chunk, phonemize, speak, trim and join ``text``; raises Unspeakable for a language Kokoro lacks."""
        assert self.model is not None and self.phonemizer is not None
        chunks = split_text(text, self.max_chunk_chars)
        if not chunks:
            raise InvalidInputError("has nothing to say after splitting", field="text")
        started = time.perf_counter()
        phonemized = self.phonemizer.phonemize([c.text for c in chunks], language)
        if not any(c.isalpha() for p in phonemized for c in p):
            raise InvalidInputError("has nothing eSpeak NG can pronounce (no phonemes)", field="text",
                                    context={"text_chars": len(text), "language": language})
        style = voice.style(self.model.styles)
        pieces: list[np.ndarray] = []
        words: list[WordTiming] = []
        phonemes: list[PhonemeTiming] = []
        offset_s, raw_s, lead_first, tail_last = 0.0, 0.0, 0.0, 0.0
        times = {"phonemize_s": time.perf_counter() - started, "kokoro_s": 0.0}
        for index, (chunk, chunk_phonemes) in enumerate(zip(chunks, phonemized)):
            part = self._speak_chunk(chunk, chunk_phonemes, language, style, voice.speed, times)
            if not pieces:
                lead_first = part.lead_s
            tail_last, raw_s = part.tail_s, raw_s + part.raw_s
            words += [w.model_copy(update={"start_s": round(offset_s + w.start_s, 4),
                                           "end_s": round(offset_s + w.end_s, 4)}) for w in part.words]
            phonemes += [p.model_copy(update={"start_s": round(offset_s + p.start_s, 4),
                                              "end_s": round(offset_s + p.end_s, 4)}) for p in part.phonemes]
            pieces.append(part.samples)
            offset_s += len(part.samples) / part.rate
            if index + 1 < len(chunks):
                silence = pause_after(chunk, part.rate)
                pieces.append(silence)
                offset_s += len(silence) / part.rate
        joined = np.concatenate(pieces)
        if not np.any(joined):
            raise BackendError("Kokoro produced silence", context={"text_chars": len(text), "language": language})
        t0 = time.perf_counter()
        out = resample(joined, part.rate, sample_rate)
        times["resample_s"] = time.perf_counter() - t0
        duration = len(out) / sample_rate
        for timing in [*words, *phonemes]:  # resampling rounds the length; keep every timing inside the audio
            timing.start_s, timing.end_s = min(timing.start_s, duration), min(timing.end_s, duration)
        return Speech(
            samples=out, sample_rate=sample_rate, words=words, phonemes=phonemes, phoneme_text=phonemized,
            raw_duration_s=round(raw_s, 4), trimmed_leading_s=round(lead_first, 4),
            trimmed_trailing_s=round(tail_last, 4), chunks=len(chunks),
            synth_time_s=round(time.perf_counter() - started, 6),
            stage_times={k: round(v, 6) for k, v in times.items()},
        )

    def _speak_chunk(self, chunk: TextChunk, phonemes: str, language: str, style: np.ndarray, speed: float,
                     times: dict[str, float]) -> _Chunk:
        """One chunk through Kokoro, trimmed, with word and phoneme timings relative to its trimmed start."""
        assert self.model is not None and self.phonemizer is not None
        t0 = time.perf_counter()
        audio, rate, timed_raw = self.model.kokoro.create_timed(
            phonemes, style, speed=speed, is_phonemes=True, trim=False, sentence_pause=0.0, clause_pause=0.0)
        times["kokoro_s"] += time.perf_counter() - t0
        audio = np.asarray(audio, dtype=np.float32)
        timed = [TimedPhoneme(t.phoneme, t.start, t.end) for t in timed_raw]
        kept, lead, tail = trim_silence(audio, rate)
        lead_s, kept_s = lead / rate, len(kept) / rate
        rms = frame_rms(kept, max(1, int(WORD_FRAME_S * rate)))
        threshold = activity_threshold(rms)

        def place(t: float) -> float:
            return min(max(t - lead_s, 0.0), kept_s)

        t0 = time.perf_counter()
        spans = word_timings(chunk.text, chunk.offset, timed,
                             lambda ws: self.phonemizer.phonemize(ws, language))  # type: ignore[union-attr]
        times["phonemize_s"] += time.perf_counter() - t0
        starts = [place(span[2]) for span in spans] + [kept_s]
        words = []
        for k, (a, b, _, _, reach, estimated) in enumerate(spans):
            # a word lasts while it sounds, up to its reach (kokoro_text) and the next word's start
            end = _end_of_sound(rms, threshold, starts[k], max(starts[k], min(place(reach), starts[k + 1])))
            words.append(WordTiming(word=chunk.text[a - chunk.offset:b - chunk.offset], start_s=starts[k], end_s=end,
                                    char_start=a, estimated=estimated))
        spoken = [p.model_copy(update={"start_s": place(p.start_s), "end_s": place(p.end_s)})
                  for p in phoneme_timings(timed)]
        return _Chunk(samples=kept, rate=rate, words=words, phonemes=[p for p in spoken if p.end_s > p.start_s],
                      raw_s=len(audio) / rate, lead_s=lead_s, tail_s=tail / rate)

    # -- the FunctionTool call -------------------------------------------------------

    def invoke(self, request: TtsChatterboxRequest, ctx: ToolContext) -> TtsChatterboxResponse:
        assert self.espeak.languages is not None
        language, _ = self.espeak.languages.resolve(request.voice.language)
        voice = design_kokoro_voice(request.voice)
        try:
            speech = self.synthesize(request.text, language, voice, sample_rate=request.sample_rate)
        except Unspeakable as exc:
            record = {"backend": "espeak", "reason": exc.reason, "language": request.voice.language,
                      "espeak_language": language,
                      **{k: v for k, v in exc.context.items() if k in ("unknown",)}}
            ctx.log.info("kokoro_fallback", **record)
            return self.espeak.invoke(request, FallbackContext(ctx, record))

        ignored = {name: getattr(request, name) for name in ("exaggeration", "cfg_weight", "reference_audio_uri")
                   if getattr(request, name) is not None}
        if request.voice.pitch is not None:
            ignored["voice.pitch"] = request.voice.pitch
        params: dict[str, Any] = {
            "text": request.text,
            "voice": request.voice.model_dump(mode="json"),
            "sample_rate": request.sample_rate,
            "kokoro": {**voice.describe(), "language": language, "phonemes": speech.phoneme_text,
                       "threads": self.threads},
            "voice_decisions": voice.decisions,
            "seed": "unused: the Kokoro ONNX export has no random nodes",
            "ignored": {"fields": ignored,
                        "reason": "Kokoro has no pitch, emotion, guidance or cloning control; the character's "
                                  "style blend sets its pitch"} if ignored else {},
        }
        return store_speech(ctx, request, speech, voice_id=voice.voice_id, engine=self.engine, params=params,
                            timings_note=TIMINGS_NOTE)


class FallbackContext(ToolContext):
    """The caller's context (same store, staging and outputs) adding a ``fallback`` record to what it stores."""

    def __init__(self, ctx: ToolContext, record: dict[str, Any]) -> None:  # noqa: D107 - shares ctx's state
        self.__dict__.update(ctx.__dict__)
        self.fallback = record

    def provenance(self, **extra: Any) -> dict[str, Any]:
        return super().provenance(fallback=self.fallback, **extra)
