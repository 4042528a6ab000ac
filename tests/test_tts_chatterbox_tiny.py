"""tts_chatterbox `chatterbox` over HTTP with a random-weight Chatterbox checkpoint on CPU.

The tool process loads the checkpoint through upstream's ``ChatterboxTTS.from_local``
(1-layer T3, full-size S3Gen and voice encoder with random weights) and runs real T3
sampling, S3Gen flow matching, HiFT vocoding and Perth watermarking: the audio is
noise, the plumbing is the production path.  Random T3 weights never emit the stop
token, so the profile caps speech tokens (``max_new_tokens``) and S3Gen runs 2
flow-matching steps.  This is the slowest GPU test module: ONE checkpoint build per
session (in a child process), ONE warm tool process, four generations in all.
WAVs are decoded with PyAV from the stored files; the watermark is detected with
Perth's own decoder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

pytest.importorskip("chatterbox", reason="the chatterbox backend needs scripts/install_chatterbox.sh (GPU stack)")

from filelock import FileLock  # noqa: E402
from tiny_models import REPO, write_gpu_profile  # noqa: E402
from tiny_models.chatterbox import TINY_MARKER, voiced_reference  # noqa: E402

from function_tools.tts_chatterbox.chatterbox import ChatterboxOptions, estimate_word_timings  # noqa: E402
from function_tools.tts_chatterbox.text import TextChunk  # noqa: E402
from sparkle_motion.artifacts import ArtifactStore  # noqa: E402
from sparkle_motion.errors import ConfigError  # noqa: E402
from sparkle_motion.media import write_wav  # noqa: E402
from sparkle_motion.testing import RunningTool, running_tool  # noqa: E402

pytestmark = pytest.mark.xdist_group("tts_chatterbox_tiny")

RUN = "chatterbox-tiny"
TINY_OPTIONS = {"device": "cpu", "dtype": "float32", "keep_warm_s": 900, "lock_timeout_s": 0,
                "max_new_tokens": 12, "n_cfm_timesteps": 2}
# Two sentences past 280 characters: two chunks, joined with a sentence pause.
LONG_TEXT = ("The lighthouse keeper had not spoken to anyone in eleven days, and the radio on the shelf only "
             "whispered static through the long grey afternoons while the gulls wheeled over the rocks below. "
             "When the boat finally appeared on the horizon, she put on her good coat, combed her hair twice, "
             "and walked down to the jetty to wait.")


@pytest.fixture(scope="session")
def tiny_chatterbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-chatterbox") / "ckpt"
    # A child process: construction needs ~2.5 GB that the test process should not keep.
    done = subprocess.run([sys.executable, "-m", "tiny_models.chatterbox", str(out)], cwd=REPO / "tests",
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert TINY_MARKER in (out / "tiny.json").read_text()
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chatterbox-home")


@pytest.fixture(scope="module")
def store(home: Path) -> Iterator[ArtifactStore]:
    s = ArtifactStore(home)
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference_uri(store: ArtifactStore, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A character's voice sample, stored before the tool starts so the profile can map it."""
    path = tmp_path_factory.mktemp("ref") / "mara.wav"
    write_wav(path, voiced_reference(seconds=2.0, f0=210.0, seed=5), 24000)
    return store.put(RUN, "voices", "voice_sample", path, "audio/wav").uri


def _start(home: Path, profile: Path) -> Any:
    return running_tool("tts_chatterbox", home=home, ready_timeout=300,
                        env={"SPARKLE_PROFILE": str(profile), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None,
                             "SPARKLE_TTS_CHATTERBOX_BACKEND": None})


@pytest.fixture(scope="module")
def tool(home: Path, tiny_chatterbox: Path, reference_uri: str) -> Iterator[RunningTool]:
    profile = write_gpu_profile(home / "profile.yaml", "tts_chatterbox", model=str(tiny_chatterbox),
                                options={**TINY_OPTIONS, "voices": {"mara": reference_uri}})
    with _start(home, profile) as running:
        yield running


def invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    payload.setdefault("run_id", RUN)
    reply = tool.client.post("/invoke", json=payload, timeout=300)
    assert reply.status_code == 200, reply.text
    return reply.json()


def decode(store: ArtifactStore, uri: str) -> tuple[np.ndarray, int, int, str]:
    """(int16 samples, sample rate, channels, sample format) decoded by PyAV from the stored file."""
    with av.open(str(store.path_for(uri))) as container:
        stream = container.streams.audio[0]
        rate, channels, fmt = stream.codec_context.sample_rate, stream.codec_context.channels, stream.codec_context.format.name
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])
    return samples, rate, channels, fmt


def perth_score(samples: np.ndarray, rate: int) -> float:
    """Mean watermark bit probability from Perth's decoder: ~1 marked, ~0 unmarked."""
    import perth

    detector = perth.PerthImplicitWatermarker()
    return float(detector.get_watermark(samples.astype(np.float32) / 32768.0, rate, round=False).mean())


@pytest.fixture(scope="module")
def long_pair(tool: RunningTool) -> tuple[dict[str, Any], dict[str, Any]]:
    request = {"text": LONG_TEXT, "seed": 11, "sample_rate": 16000}
    return invoke(tool, **request), invoke(tool, **request)


def test_long_line_is_two_chunks_of_decodable_watermarked_speech(long_pair, store: ArtifactStore,
                                                                 tiny_chatterbox: Path) -> None:
    first, _ = long_pair
    samples, rate, channels, fmt = decode(store, first["audio_uri"])
    assert (rate, channels, fmt) == (16000, 1, "s16")
    assert first["sample_rate"] == 16000 and first["backend"] == "chatterbox"
    assert len(samples) > 0 and first["duration_s"] == pytest.approx(len(samples) / 16000, abs=1e-3)
    assert np.abs(samples).max() > 100  # sound, not digital silence
    meta = first["artifacts"][0]["metadata"]
    assert meta["chunks"] == 2 and all(c["chars"] <= 280 for c in meta["chunk_stats"])
    # every chunk was cut by the cap (random weights never say stop) and the response says so
    assert all(c["generated_tokens"] == 12 and not c["stopped"] for c in meta["chunk_stats"])
    assert meta["token_cap_hit"] is True
    # two chunks of audio plus the sentence pause between them
    assert first["duration_s"] > sum(c["audio_s"] for c in meta["chunk_stats"])
    assert first["engine"].startswith("chatterbox-tts 0.1.7 (english)")
    assert first["voice_id"] == "chatterbox/builtin"
    assert first["watermarked"] is True and meta["watermarked"] is True
    assert perth_score(samples, rate) > 0.9
    assert meta["device"] == "cpu" and meta["dtype"] == "float32" and meta["seed"] == 11
    assert meta["model_id"] == str(tiny_chatterbox) and "t3_layers_1" in meta["applied_memory_options"]
    assert meta["inference_s"] > 0 and "load_s" in meta


def test_words_are_estimated_in_order_and_point_into_the_text(long_pair) -> None:
    first, _ = long_pair
    words = first["words"]
    assert [w["word"] for w in words] == LONG_TEXT.replace(",", "").replace(".", "").split()
    assert all(w["estimated"] for w in words)
    assert all(LONG_TEXT[w["char_start"]:].startswith(w["word"]) for w in words)
    starts = [w["start_s"] for w in words]
    assert starts == sorted(starts) and all(w["end_s"] > w["start_s"] for w in words)
    assert words[-1]["end_s"] <= first["duration_s"]
    assert "estimated" in first["timings_note"] and first["phonemes"] == []


def test_same_seed_gives_identical_samples_and_reuses_the_warm_model(long_pair, store: ArtifactStore) -> None:
    first, second = long_pair
    a, *_ = decode(store, first["audio_uri"])
    b, *_ = decode(store, second["audio_uri"])
    assert first["audio_uri"] != second["audio_uri"]
    assert np.array_equal(a, b)
    for reply in long_pair:
        meta = reply["artifacts"][0]["metadata"]
        assert meta["load_count"] == 1 and meta["reused"] is True  # loaded once, at warm-up


def test_profile_voice_mapping_clones_the_characters_reference(tool: RunningTool, store: ArtifactStore,
                                                                reference_uri: str, long_pair) -> None:
    reply = invoke(tool, text="Mara speaks.", seed=11, sample_rate=24000,
                   voice={"language": "en-GB", "character_id": "mara", "rate": 1.2}, exaggeration=0.9)
    meta = reply["artifacts"][0]["metadata"]
    reference = store.get(reference_uri)
    assert reply["voice_id"] == f"chatterbox/ref-{reference.sha256[:12]}"
    assert meta["params"]["voice_source"] == {"kind": "reference", "uri": reference_uri,
                                              "sha256": reference.sha256, "matched": "voices.mara"}
    assert meta["params"]["exaggeration"] == 0.9
    assert meta["params"]["ignored"]["fields"] == {"rate": 1.2}
    samples, rate, channels, _ = decode(store, reply["audio_uri"])
    assert (rate, channels) == (24000, 1) and len(samples) > 0
    assert meta["load_count"] == 1


def test_bad_reference_audio_is_a_422_on_the_field(tool: RunningTool, store: ArtifactStore) -> None:
    missing = tool.client.post("/invoke", json={"text": "Hi.", "reference_audio_uri": "artifact+fs://x/y/nope"})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "reference_audio_uri"
    not_audio = store.put(RUN, "voices", "notes", b"just text", "text/plain").uri
    wrong = tool.client.post("/invoke", json={"text": "Hi.", "reference_audio_uri": not_audio})
    assert wrong.status_code == 422 and "must be audio" in wrong.json()["error"]["message"]
    short_path = store.staging_dir() / "short.wav"
    write_wav(short_path, voiced_reference(seconds=0.3), 24000)
    short = store.put(RUN, "voices", "voice_sample", short_path, "audio/wav", move=True).uri
    too_short = tool.client.post("/invoke", json={"text": "Hi.", "reference_audio_uri": short})
    assert too_short.status_code == 422 and "1-60 s" in too_short.json()["error"]["message"]


def test_language_chatterbox_cannot_speak_is_a_422(tool: RunningTool) -> None:
    reply = tool.client.post("/invoke", json={"text": "Sawubona.", "voice": {"language": "zu-ZA"}})
    assert reply.status_code == 422
    body = reply.json()["error"]
    assert body["field"] == "voice.language" and "fr" in body["message"]


def test_simulated_oom_at_load_is_typed_and_frees_the_device(tmp_path: Path, tiny_chatterbox: Path) -> None:
    home = tmp_path / "oom-home"
    home.mkdir()
    profile = write_gpu_profile(home / "profile.yaml", "tts_chatterbox", model=str(tiny_chatterbox),
                                options={**TINY_OPTIONS, "preload": False, "simulate_oom": "load"})
    with _start(home, profile) as oom_tool:
        for _ in range(2):  # the second answer is the same OOM, not "device busy": the lock was released
            reply = oom_tool.client.post("/invoke", json={"text": "Hello."}, timeout=120)
            assert reply.status_code == 507, reply.text
            error = reply.json()["error"]
            assert error["code"] == "model_oom" and error["context"]["stage"] == "load"
            assert error["context"]["device"] == "cpu" and error["context"]["hint"]
        lock = FileLock(str(home / "locks" / "cpu.lock"))
        lock.acquire(timeout=0)  # raises Timeout if the tool still held it
        lock.release()


# ------------------------------------------------------------------ pure helpers (no model)

def test_word_timing_estimate_is_proportional_to_length() -> None:
    chunk = TextChunk("I sleep.", offset=10, ends_sentence=True)
    words = estimate_word_timings(chunk, 1.0, 2.0)
    assert [(w.word, w.char_start) for w in words] == [("I", 10), ("sleep", 12)]
    # weights: "I" 1+1, "sleep" 5+1 → "I" starts at 1.0, "sleep" at 1.25; the gap share is not speech
    assert words[0].start_s == 1.0 and words[1].start_s == 1.25
    assert words[0].end_s == pytest.approx(1.125) and words[1].end_s == pytest.approx(1.0 + 0.25 + 0.75 * 5 / 6, abs=1e-4)


@pytest.mark.parametrize("options, field", [
    ({"dtype": "float16"}, "dtype"),
    ({"max_chunk_chars": 300}, "max_chunk_chars"),
    ({"simulate_oom": "always"}, "simulate_oom"),
    ({"voices": {"mara": 3}}, "voices"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"memory": {"cpu_offload": True}}, "memory"),   # only memory: auto | {plan, estimate_gb} apply
])
def test_bad_profile_options_name_the_option(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ChatterboxOptions.from_profile(options)
    assert caught.value.field.endswith(field)
