"""Real-weight smoke test of tts_chatterbox `chatterbox` on a CUDA GPU.

    SMOKE_TTS=1 pytest tests/gpu/test_smoke_tts.py -v

Uses the ``gpu`` profile's checkpoints (ResembleAI/chatterbox from the local HF
cache or the hub, or local directories).  Checks what only real weights can show:
the sampler stops by itself (random weights never do), the length of the speech
fits the text, the audio is speech-like (silence between words, not flat noise),
the Perth watermark is detectable, a voice cloned from the first line is used,
a French line goes through the multilingual model, and CUDA telemetry is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import yaml
from gpu.conftest import require_smoke

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import REPO_ROOT
from sparkle_motion.testing import RunningTool, running_tool

pytestmark = require_smoke("SMOKE_TTS")

LINE = "The lighthouse keeper had not spoken to anyone in eleven days."
FRENCH = "Le gardien du phare n'avait parlé à personne depuis onze jours."


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smoke-tts")


@pytest.fixture(scope="module")
def tool(home: Path) -> Iterator[RunningTool]:
    profile = yaml.safe_load((REPO_ROOT / "configs" / "profiles" / "gpu.yaml").read_text(encoding="utf-8"))
    path = home / "profile.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    # preload: the English model loads before /ready (weights may be fetched into the HF cache first).
    with running_tool("tts_chatterbox", home=home, ready_timeout=900,
                      env={"SPARKLE_PROFILE": str(path), "SPARKLE_TOKEN": None,
                           "SPARKLE_TTS_CHATTERBOX_BACKEND": None}) as running:
        yield running


@pytest.fixture(scope="module")
def store(home: Path) -> Iterator[ArtifactStore]:
    s = ArtifactStore(home)
    yield s
    s.close()


def _invoke(tool: RunningTool, **payload: Any) -> dict[str, Any]:
    reply = tool.client.post("/invoke", json={"run_id": "smoke-tts", **payload}, timeout=600)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _decode(store: ArtifactStore, uri: str) -> tuple[np.ndarray, int]:
    with av.open(str(store.path_for(uri))) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    return samples.astype(np.float64) / 32768.0, rate


def _quiet_fraction(x: np.ndarray, rate: int) -> float:
    """Share of 20 ms frames 30 dB below the loudest: pauses between words (flat noise has none)."""
    frame = rate // 50
    n = len(x) // frame
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-9
    return float(np.mean(20 * np.log10(rms / rms.max()) < -30))


def _perth_score(x: np.ndarray, rate: int) -> float:
    import perth

    return float(perth.PerthImplicitWatermarker().get_watermark(x.astype(np.float32), rate, round=False).mean())


def test_chatterbox_speaks_a_line_then_clones_it(tool: RunningTool, store: ArtifactStore) -> None:
    first = _invoke(tool, text=LINE, seed=7, sample_rate=24000)
    meta = first["artifacts"][0]["metadata"]
    assert meta["device"].startswith("cuda") and meta["peak_vram_mb"] > 0
    assert all(c["stopped"] for c in meta["chunk_stats"]), meta["chunk_stats"]  # real weights say stop
    x, rate = _decode(store, first["audio_uri"])
    assert rate == 24000
    # ~11 words: between 2 and 10 seconds of speech
    assert 2.0 < len(x) / rate < 10.0, len(x) / rate
    assert _quiet_fraction(x, rate) > 0.03
    assert _perth_score(x, rate) > 0.9

    cloned = _invoke(tool, text="And then the boat came.", seed=7, reference_audio_uri=first["audio_uri"])
    assert cloned["voice_id"].startswith("chatterbox/ref-")
    assert cloned["artifacts"][0]["metadata"]["load_count"] == 1  # same model, warm
    y, _ = _decode(store, cloned["audio_uri"])
    assert 0.8 < len(y) / 24000 < 6.0


def test_french_goes_through_the_multilingual_model(tool: RunningTool, store: ArtifactStore) -> None:
    reply = _invoke(tool, text=FRENCH, seed=3, voice={"language": "fr-FR"}, sample_rate=22050)
    meta = reply["artifacts"][0]["metadata"]
    assert reply["engine"].endswith("(multilingual)") and meta["params"]["language_id"] == "fr"
    assert all(c["stopped"] for c in meta["chunk_stats"])
    x, rate = _decode(store, reply["audio_uri"])
    assert rate == 22050 and 2.0 < len(x) / rate < 12.0
    assert _perth_score(x, rate) > 0.9
