"""tts_chatterbox synthesis engine, in-process: eSpeak NG binding, DSP, chunking, voice design."""

from __future__ import annotations

import hashlib
import stat
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from function_tools.tts_chatterbox.dsp import estimate_f0, resample, trim_silence
from function_tools.tts_chatterbox.espeak import EspeakBackend, synthesize_speech
from function_tools.tts_chatterbox.espeak_engine import (
    NATIVE_SAMPLE_RATE,
    EspeakCli,
    EspeakLibrary,
    SynthesisParams,
    open_synthesizer,
)
from function_tools.tts_chatterbox.models import TtsChatterboxRequest, TtsVoice
from function_tools.tts_chatterbox.text import split_text
from function_tools.tts_chatterbox.voices import design_voice
from sparkle_motion.config import ToolProfile
from sparkle_motion.errors import BackendError, InvalidInputError
from sparkle_motion.plan.models import VoiceProfile

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def backend() -> EspeakBackend:
    b = EspeakBackend(ToolProfile(backend="espeak", model="espeak-ng", options={}), settings=None)  # type: ignore[arg-type]
    b.load()
    yield b
    b.close()


def _digest(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples).tobytes()).hexdigest()


# -- the library binding ---------------------------------------------------------------------------

def test_library_reports_version_voices_and_timed_events(backend: EspeakBackend) -> None:
    synth = backend.synth
    assert isinstance(synth, EspeakLibrary)
    assert synth.version.count(".") >= 1
    tags = {tag for v in synth.voices for _, tag in v.languages}
    assert {"en-us", "en-gb", "fr-fr", "de", "es", "pt-br"} <= tags

    raw = synth.synthesize("Hello there, wide world.", SynthesisParams(voice="gmw/en-US+m3"))
    assert raw.sample_rate == NATIVE_SAMPLE_RATE and raw.samples.dtype == np.int16
    assert 0.8 < len(raw.samples) / raw.sample_rate < 3.0
    words = ["Hello there, wide world."[w.text_start:w.text_start + w.text_length] for w in raw.words]
    assert words == ["Hello", "there", "wide", "world"]
    starts = [w.start_ms for w in raw.words]
    assert starts == sorted(starts) and starts[-1] < len(raw.samples) * 1000 / raw.sample_rate
    assert len([p for p in raw.phonemes if p.phoneme]) >= 12  # h ə l oʊ ð ɛɹ w aɪ d w ɜː l d


def test_same_text_twice_in_one_process_is_bit_identical(backend: EspeakBackend) -> None:
    # libespeak-ng keeps pitch-flutter/AGC state in statics; the engine reloads it per call.
    params = SynthesisParams(voice="gmw/en-US+f2", seed=3)
    first = backend.synth.synthesize(SENTENCE, params)
    backend.synth.synthesize("Something else entirely, to move any internal state on.", SynthesisParams(voice="gmw/en-US+m1"))
    second = backend.synth.synthesize(SENTENCE, params)
    assert _digest(first.samples) == _digest(second.samples)


def test_rate_and_pitch_parameters_change_the_audio(backend: EspeakBackend) -> None:
    slow = backend.synth.synthesize(SENTENCE, SynthesisParams(voice="gmw/en-US+m3", rate_wpm=120))
    fast = backend.synth.synthesize(SENTENCE, SynthesisParams(voice="gmw/en-US+m3", rate_wpm=240))
    assert len(slow.samples) > 1.5 * len(fast.samples)
    low = backend.synth.synthesize(SENTENCE, SynthesisParams(voice="gmw/en-US+m3", pitch=30))
    high = backend.synth.synthesize(SENTENCE, SynthesisParams(voice="gmw/en-US+m3", pitch=80))
    f_low = np.median(estimate_f0(low.samples / 32768.0, NATIVE_SAMPLE_RATE))
    f_high = np.median(estimate_f0(high.samples / 32768.0, NATIVE_SAMPLE_RATE))
    assert f_high / f_low > 1.4


@pytest.mark.parametrize(("variant_of", "semitones"), [("ava", 5.0), ("miko", -4.0), ("kai", 8.0)])
def test_explicit_pitch_in_semitones_moves_the_measured_f0(backend: EspeakBackend, variant_of: str,
                                                            semitones: float) -> None:
    def median_f0(pitch: float) -> float:
        design = design_voice(TtsVoice(character_id=variant_of, pitch=pitch), backend.languages, backend.variants)
        speech = synthesize_speech(backend.synth, SENTENCE, design, seed=0, sample_rate=16000)
        return float(np.median(estimate_f0(speech.samples, 16000)))

    measured = 12 * np.log2(median_f0(semitones) / median_f0(0.0))
    assert measured == pytest.approx(semitones, abs=1.0)


def test_unknown_voice_name_is_a_backend_error(backend: EspeakBackend) -> None:
    with pytest.raises(BackendError, match="no voice"):
        backend.synth.synthesize("hi", SynthesisParams(voice="zz/nope+m3"))


def test_synthesis_params_are_range_checked() -> None:
    with pytest.raises(InvalidInputError) as err:
        SynthesisParams(voice="en", rate_wpm=20)
    assert err.value.field == "voice.rate"


def test_missing_library_and_no_cli_fails_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as err:
        open_synthesizer(tmp_path / "libnothing.so", tmp_path, cli_binary="")
    assert "espeakng-loader" in err.value.message and "espeak-ng" in err.value.message
    assert "not found" in err.value.context["library_error"]


def test_cli_fallback_drives_the_binary_and_reports_no_timings(tmp_path: Path) -> None:
    # A stand-in espeak-ng executable (the real binary is not installed here): it answers
    # --version / --voices like espeak-ng and writes a WAV of the requested rate to stdout.
    fake = tmp_path / "espeak-ng"
    log = tmp_path / "args.txt"
    fake.write_text(f"""#!{sys.executable}
import sys, wave, io, math, struct
args = sys.argv[1:]
open({str(log)!r}, "a").write(" ".join(args) + "\\n")
if args == ["--version"]:
    print("eSpeak NG text-to-speech: 1.51  Data at: /usr/share/espeak-ng-data"); sys.exit(0)
if args == ["--voices"]:
    print("Pty Language       Age/Gender VoiceName          File                 Other Languages")
    print(" 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)")
    sys.exit(0)
text = sys.stdin.read()
buf = io.BytesIO()
with wave.open(buf, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050)
    w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(2205 * len(text.split()))))
sys.stdout.buffer.write(buf.getvalue())
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    synth = open_synthesizer(tmp_path / "missing.so", tmp_path, cli_binary=str(fake))
    assert isinstance(synth, EspeakCli)
    assert synth.version == "1.51"
    assert synth.voices[0].identifier == "gmw/en-US" and (3, "en") in synth.voices[0].languages
    raw = synth.synthesize("three short words", SynthesisParams(voice="gmw/en-US+m3", rate_wpm=150, pitch=40))
    assert raw.sample_rate == 22050 and len(raw.samples) == 3 * 2205
    assert raw.words == [] and "no word" in raw.timings_note
    last_call = log.read_text().splitlines()[-1].split()
    assert last_call[last_call.index("-v") + 1] == "gmw/en-US+m3"
    assert last_call[last_call.index("-s") + 1] == "150" and last_call[last_call.index("-p") + 1] == "40"


# -- DSP -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dst", [8000, 16000, 24000, 44100, 48000])
def test_resample_keeps_an_in_band_tone_exact(dst: int) -> None:
    sr = 22050
    t = np.arange(sr // 2) / sr
    y = resample(0.5 * np.sin(2 * np.pi * 1000 * t), sr, dst)
    assert len(y) == int(np.ceil(len(t) * dst / sr))
    ideal = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(y)) / dst)
    middle = slice(dst // 20, -dst // 20)  # away from the zero-padded edges
    err_db = 20 * np.log10(np.sqrt(np.mean((y[middle] - ideal[middle]) ** 2)) / np.sqrt(np.mean(ideal[middle] ** 2)))
    assert err_db < -60


def test_resample_removes_content_above_the_new_nyquist() -> None:
    sr = 22050
    tone = 0.5 * np.sin(2 * np.pi * 5000 * np.arange(sr // 2) / sr)  # above 8 kHz's 4 kHz Nyquist
    y = resample(tone, sr, 8000)
    assert 20 * np.log10(np.sqrt(np.mean(y[400:-400] ** 2)) / np.sqrt(np.mean(tone**2))) < -50


@pytest.mark.parametrize("f0", [90.0, 150.0, 230.0, 320.0])
def test_f0_tracker_finds_the_fundamental_of_a_harmonic_tone(f0: float) -> None:
    sr = 16000
    t = np.arange(sr // 2) / sr
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    estimates = estimate_f0(tone, sr)
    assert len(estimates) > 20
    assert np.median(estimates) == pytest.approx(f0, rel=0.01)
    assert estimate_f0(np.random.default_rng(0).normal(size=sr // 2) * 0.1, sr).size < 5  # noise is unvoiced


def test_trim_silence_reports_what_it_cut() -> None:
    sr = 10000
    body = 0.5 * np.sin(np.arange(sr) / 3.0)
    x = np.concatenate([np.zeros(3000), body, np.zeros(2000)])
    kept, lead, tail = trim_silence(x, sr, keep_s=0.01)
    assert lead == 2900 and tail == 1900 and len(kept) == len(x) - lead - tail


# -- text chunking ---------------------------------------------------------------------------------

def test_short_text_is_one_chunk() -> None:
    assert [(c.text, c.offset) for c in split_text("  Hello there.  ")] == [("Hello there.", 2)]


def test_long_text_splits_at_sentences_and_keeps_offsets() -> None:
    sentences = [f"Sentence number {i} says something fairly ordinary about the weather." for i in range(10)]
    text = " ".join(sentences)
    chunks = split_text(text, 150)
    assert len(chunks) > 1 and all(len(c.text) <= 150 for c in chunks)
    assert all(c.text.endswith(".") and c.ends_sentence for c in chunks)
    assert all(text[c.offset:c.offset + len(c.text)] == c.text for c in chunks)
    assert " ".join(c.text for c in chunks) == text


def test_a_very_long_sentence_splits_at_commas_then_spaces() -> None:
    clause = "and then the train rolled on past fields of wheat"
    text = ", ".join([clause] * 12) + "."
    chunks = split_text(text, 120)
    assert len(chunks) > 1 and all(len(c.text) <= 120 for c in chunks)
    assert all(c.text.endswith(",") for c in chunks[:-1]) and chunks[-1].ends_sentence
    no_punctuation = "word " * 100
    chunks = split_text(no_punctuation, 50)
    assert all(len(c.text) <= 50 for c in chunks) and sum(len(c.text.split()) for c in chunks) == 100


# -- voice design ----------------------------------------------------------------------------------

def test_languages_map_bcp47_tags_to_installed_voices(backend: EspeakBackend) -> None:
    index = backend.languages
    assert index.resolve("en-US")[1] == "gmw/en-US"
    assert index.resolve("en-GB")[1] == "gmw/en"
    assert index.resolve("pt-BR")[1] == "roa/pt-BR"
    assert index.resolve("fr-CA")[0] == "fr"  # region without its own voice falls back to the language
    assert index.resolve("de")[1] == "gmw/de"
    with pytest.raises(InvalidInputError) as err:
        index.resolve("tlh-US")
    assert err.value.field == "voice.language" and "tlh-US" in err.value.message


def test_characters_get_stable_distinct_voices_and_explicit_values_win(backend: EspeakBackend) -> None:
    index, variants = backend.languages, backend.variants
    ava = design_voice(TtsVoice(character_id="ava"), index, variants)
    assert design_voice(TtsVoice(character_id="ava"), index, variants) == ava
    cast = {design_voice(TtsVoice(character_id=c), index, variants).params(0) for c in ("ava", "miko", "bo", "kai", "zoe")}
    assert len(cast) == 5
    explicit = design_voice(TtsVoice(character_id="ava", pitch=0, rate=1.2), index, variants)
    assert explicit.pitch == 50 and explicit.rate_wpm == 210 and explicit.variant == ava.variant
    clamped = design_voice(TtsVoice(pitch=-20, rate=0.25), index, variants)
    assert clamped.pitch == 0 and clamped.rate_wpm == 80 and "clamped" in clamped.decisions["pitch"]
    calm = design_voice(TtsVoice(character_id="ava", style="calm, confessional"), index, variants)
    assert calm.rate_wpm < ava.rate_wpm and calm.decisions["style_applied"] == ["calm"]


def test_request_voice_accepts_any_plan_voice_profile() -> None:
    profile = VoiceProfile(voice_id="narrator-1", style="calm", language="pt-BR", rate=1.1, pitch=-2.0)
    request = TtsChatterboxRequest(text="Olá", voice=profile.model_dump())
    assert request.voice.language == "pt-BR" and request.voice.voice_id == "narrator-1"
    assert TtsChatterboxRequest(text="Hi").voice.language == "en-US"


def test_long_text_is_chunked_joined_and_timed(backend: EspeakBackend) -> None:
    design = design_voice(TtsVoice(character_id="ava"), backend.languages, backend.variants)
    text = " ".join(["The lights went out across the city, one block at a time."] * 6)
    assert len(text) > 280
    speech = synthesize_speech(backend.synth, text, design, seed=0, sample_rate=16000)
    assert speech.chunks >= 2
    assert len(speech.words) == len(text.split())
    assert [w.word for w in speech.words][:3] == ["The", "lights", "went"]
    assert all(text[w.char_start:w.char_start + len(w.word)] == w.word for w in speech.words)
    starts = [w.start_s for w in speech.words]
    assert starts == sorted(starts) and speech.words[-1].end_s <= speech.duration_s


def test_wav_written_by_the_media_helper_is_16_bit_mono(backend: EspeakBackend, tmp_path: Path) -> None:
    from sparkle_motion.media import write_wav

    design = design_voice(TtsVoice(), backend.languages, backend.variants)
    speech = synthesize_speech(backend.synth, "Short line.", design, seed=0, sample_rate=24000)
    path = tmp_path / "a.wav"
    write_wav(path, speech.samples, speech.sample_rate)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        assert w.getnframes() == len(speech.samples)
