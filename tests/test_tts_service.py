"""tts_chatterbox `espeak` backend over HTTP against the real process.

Outputs are decoded with real decoders (the ``wave`` module and PyAV) and
checked for the properties of speech, not just for being a WAV file.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest

from function_tools.tts_chatterbox.dsp import estimate_f0
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import RunningTool
from speech_checks import assert_same_request_same_bytes, decode_wav, looks_like_speech, speech_evidence
from tool_fixtures import module_tool_fixtures

pytestmark = pytest.mark.xdist_group("tts_chatterbox")

RUN = "tts-test"
LINE = "The rain kept falling on the neon signs, and nobody on the street looked up."
LINE_WORDS = len(LINE.split())


home, tool, store = module_tool_fixtures("tts_chatterbox", env={"SPARKLE_TTS_CHATTERBOX_BACKEND": "espeak"})


def invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    reply = tool.client.post("/invoke", json=payload, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_speech_checks_reject_a_steady_tone_and_noise() -> None:
    # the evidence must be able to fail: a 150 Hz harmonic tone and white noise are not speech
    sr = 16000
    t = np.arange(3 * sr) / sr
    tone = 0.3 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    assert not looks_like_speech(speech_evidence(tone, sr), 3.0, 10)
    noise = np.random.default_rng(1).normal(scale=0.1, size=3 * sr)
    assert not looks_like_speech(speech_evidence(noise, sr), 3.0, 10)


def test_line_becomes_speech_in_a_16_bit_mono_wav(tool: RunningTool, store: ArtifactStore) -> None:
    body = invoke(tool, text=LINE, voice={"character_id": "ava", "language": "en-US"}, seed=7)
    assert body["tool_id"] == "tts_chatterbox" and body["backend"] == "espeak"
    assert body["engine"].startswith("espeak-ng 1.") and body["watermarked"] is False
    manifest = body["artifacts"][0]
    assert manifest["uri"] == body["audio_uri"] and manifest["media_type"] == "audio/wav"
    path = store.path_for(body["audio_uri"])

    x, rate, channels, width = decode_wav(path)
    assert (rate, channels, width) == (24000, 1, 2)
    duration = len(x) / rate
    assert 0.2 * LINE_WORDS <= duration <= 0.9 * LINE_WORDS
    assert body["duration_s"] == pytest.approx(duration, abs=0.002)

    with av.open(str(path)) as container:  # a second, independent decoder agrees
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "pcm_s16le" and stream.rate == 24000 and stream.channels == 1
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    assert len(decoded) == len(x)

    evidence = speech_evidence(x, rate)
    assert looks_like_speech(evidence, duration, LINE_WORDS), evidence

    # leading silence was trimmed so the line starts on time
    first_50ms = np.sqrt(np.mean(x[: rate // 20] ** 2))
    assert first_50ms > 0.01 * np.sqrt(np.mean(x**2))

    meta = store.get(body["audio_uri"]).metadata
    for key in ("duration_s", "sample_rate", "voice_id", "engine", "synth_time_s", "watermarked", "words",
                "raw_duration_s", "trimmed_leading_s", "trimmed_trailing_s", "seed", "tool", "backend", "request_id"):
        assert key in meta, key
    assert meta["raw_duration_s"] >= meta["duration_s"] - 0.01
    assert meta["seed"] == 7 and meta["voice_id"] == body["voice_id"]


def test_word_and_phoneme_timings_fit_the_audio(tool: RunningTool) -> None:
    body = invoke(tool, text=LINE, voice={"character_id": "miko"})
    words = body["words"]
    assert [w["word"] for w in words] == [w.strip(",.") for w in LINE.split()]
    for a, b in zip(words, words[1:]):
        assert a["start_s"] <= a["end_s"] <= b["start_s"] + 1e-6
    assert words[0]["start_s"] < 0.2
    assert all(0 <= w["start_s"] < w["end_s"] <= body["duration_s"] for w in words)
    assert words[-1]["end_s"] > 0.8 * body["duration_s"]
    assert all(LINE[w["char_start"]:w["char_start"] + len(w["word"])] == w["word"] for w in words)
    phonemes = body["phonemes"]
    assert len(phonemes) >= LINE_WORDS * 2
    assert all(p["phoneme"] and 0 <= p["start_s"] < p["end_s"] <= body["duration_s"] for p in phonemes)
    assert [p["start_s"] for p in phonemes] == sorted(p["start_s"] for p in phonemes)


def test_same_request_gives_identical_wav_bytes(tool: RunningTool, store: ArtifactStore) -> None:
    assert_same_request_same_bytes(lambda **request: invoke(tool, **request), store)


def test_two_characters_sound_different(tool: RunningTool, store: ArtifactStore) -> None:
    f0 = {}
    for character in ("ava", "miko"):
        body = invoke(tool, text=LINE, voice={"character_id": character})
        x, rate, _, _ = decode_wav(store.path_for(body["audio_uri"]))
        f0[character] = float(np.median(estimate_f0(x, rate)))
    low, high = sorted(f0.values())
    assert high / low > 1.15, f0


def test_long_text_is_split_and_longer(tool: RunningTool, store: ArtifactStore) -> None:
    long_text = " ".join([LINE] * 5)
    assert len(long_text) > 280
    short = invoke(tool, text=LINE, voice={"character_id": "kai"})
    long = invoke(tool, text=long_text, voice={"character_id": "kai"})
    meta = store.get(long["audio_uri"]).metadata
    assert meta["chunks"] >= 2
    x, rate, _, _ = decode_wav(store.path_for(long["audio_uri"]))
    assert len(x) / rate > 4 * short["duration_s"]
    assert len(long["words"]) == 5 * LINE_WORDS
    assert [w["start_s"] for w in long["words"]] == sorted(w["start_s"] for w in long["words"])
    assert long["words"][-1]["end_s"] <= long["duration_s"]


@pytest.mark.parametrize("rate", [8000, 48000])
def test_requested_sample_rate_is_honoured(tool: RunningTool, store: ArtifactStore, rate: int) -> None:
    body = invoke(tool, text="Short line.", sample_rate=rate)
    x, decoded_rate, _, _ = decode_wav(store.path_for(body["audio_uri"]))
    assert decoded_rate == rate and body["sample_rate"] == rate
    assert 0.3 < len(x) / rate < 2.0


def test_other_languages_and_ignored_chatterbox_fields(tool: RunningTool, store: ArtifactStore) -> None:
    body = invoke(tool, text="Bonjour, je m'appelle Claire.", voice={"language": "fr-FR", "voice_id": "claire"},
                  exaggeration=0.8, cfg_weight=0.3)
    assert body["voice_id"] == "claire"
    meta = store.get(body["audio_uri"]).metadata
    assert meta["params"]["espeak"]["voice"].startswith("roa/fr")
    assert meta["params"]["ignored"]["fields"] == {"exaggeration": 0.8, "cfg_weight": 0.3}
    x, rate, _, _ = decode_wav(store.path_for(body["audio_uri"]))
    assert looks_like_speech(speech_evidence(x, rate), len(x) / rate, 5)


@pytest.mark.parametrize(("payload", "field"), [
    ({"text": "Hello.", "voice": {"language": "tlh-US"}}, "voice.language"),
    ({"text": "Hello.", "voice": {"language": "not a tag"}}, "voice.language"),
    ({"text": ""}, "text"),
    ({"text": "   \n "}, "text"),
    ({"text": "x" * 5001}, "text"),
    ({"text": "?! ..."}, "text"),
    ({"text": "Hello.", "sample_rate": 4000}, "sample_rate"),
    ({"text": "Hello.", "sample_rate": 96000}, "sample_rate"),
    ({"text": "Hello.", "voice": {"pitch": 40}}, "voice.pitch"),
    ({"text": "Hello.", "speed": 2}, "speed"),
    ({"text": "Hello.", "reference_audio_uri": "/etc/passwd"}, "reference_audio_uri"),
    ({"text": "Hello.", "reference_audio_uri": "artifact+fs://adhoc/x/clip_000000000000"}, "reference_audio_uri"),
])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(tool: RunningTool, store: ArtifactStore,
                                                               payload: dict[str, Any], field: str) -> None:
    before = sorted(m.uri for m in store.list(RUN))
    reply = tool.client.post("/invoke", json={"run_id": RUN, **payload})
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["field"] == field, error
    assert sorted(m.uri for m in store.list(RUN)) == before
    assert tool.client.get("/ready").status_code == 200
    if field == "voice.language" and "tlh" in str(payload):
        assert "tlh-US" in error["message"] and "en-us" in error["message"]


def test_service_keeps_serving_and_describes_itself(tool: RunningTool) -> None:
    assert tool.client.post("/invoke", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    meta = tool.client.get("/metadata").json()
    assert meta["active_backend"] == "espeak" and "espeak" in meta["backends"]
    assert "voice" in meta["request_schema"]["properties"]
    body = invoke(tool, text="Still here.")
    assert body["duration_s"] > 0.3
