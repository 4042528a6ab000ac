"""qa_qwen2vl `qwen2-vl`: the verdict parser (pure) and the backend over HTTP with a tiny Qwen2-VL.

The tiny model has random weights, so it writes garbage: every VLM check must
come back ``inconclusive`` (never ``passed``), next to the signal checks that
still measure the media.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from function_tools.qa_qwen2vl.qwen2vl import VlmVerdict, build_vlm_prompt, parse_vlm_verdicts
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.media import VideoWriter
from sparkle_motion.testing import RunningTool, running_tool
from tiny_models import write_gpu_profile  # tests/ is on sys.path (rootdir conftest)

CHECKS = ["prompt_adherence", "anatomy", "artifacts", "safety"]


# ---------------------------------------------------------------- parser (pure code)

def test_parser_reads_a_well_formed_answer() -> None:
    text = ('{"prompt_adherence": {"verdict": "pass", "confidence": 0.9, "reason": "a lighthouse at dusk"}, '
            '"anatomy": {"verdict": "fail", "confidence": 0.8, "reason": "six fingers on the left hand"}, '
            '"artifacts": {"verdict": "pass", "confidence": 0.7, "reason": "clean"}, '
            '"safety": {"verdict": "pass", "confidence": 1.0, "reason": "nothing unsafe"}}')
    parsed = parse_vlm_verdicts(text, CHECKS)
    assert parsed["anatomy"] == VlmVerdict(verdict="fail", confidence=0.8, reason="six fingers on the left hand")
    assert all(isinstance(v, VlmVerdict) for v in parsed.values())
    assert parsed["safety"].verdict == "pass" and parsed["safety"].confidence == 1.0


def test_parser_tolerates_fences_prose_and_spelling() -> None:
    text = ('Sure! Here is my review:\n```json\n{"anatomy": {"verdict": "PASSED", "confidence": 0.6}, '
            '"safety": "fail."}\n```\nThanks.')
    parsed = parse_vlm_verdicts(text, ["anatomy", "safety"])
    assert parsed["anatomy"] == VlmVerdict(verdict="pass", confidence=0.6)
    assert parsed["safety"] == VlmVerdict(verdict="fail")


@pytest.mark.parametrize("text, expected", [
    ("", "no JSON object"),
    ("I think it looks fine.", "no JSON object"),
    ('{"anatomy": {"verdict": "pass"', "no JSON object"),                          # truncated by max_new_tokens
    ("[1, 2, 3]", "no JSON object"),
    ('{"other": 1}', "no verdict for 'anatomy'"),
    ('{"anatomy": {"verdict": "maybe"}}', "invalid verdict for 'anatomy': verdict"),
    ('{"anatomy": {"verdict": "pass", "confidence": 7}}', "invalid verdict for 'anatomy': confidence"),
    ('{"anatomy": {"confidence": 0.9}}', "invalid verdict for 'anatomy': verdict"),
    ('{"anatomy": 1}', "not an object"),
    ('{"anatomy": null}', "not an object"),
])
def test_parser_never_invents_a_verdict(text: str, expected: str) -> None:
    result = parse_vlm_verdicts(text, ["anatomy"])["anatomy"]
    assert isinstance(result, str) and expected in result


def test_prompt_names_every_check_and_quotes_the_intended_content() -> None:
    prompt = build_vlm_prompt(CHECKS, kind="video", frame_times=[0.0, 0.5, 1.0], intended='a "red" kite')
    for name in CHECKS:
        assert f"- {name}:" in prompt and f'"{name}": {{"verdict"' in prompt
    assert '"a \\"red\\" kite"' in prompt and "0.00s, 0.50s, 1.00s" in prompt and "five fingers" in prompt
    assert "prompt_adherence" not in build_vlm_prompt(["safety"], kind="image", frame_times=[None], intended=None)


# ---------------------------------------------------------------- over HTTP with a tiny model

pytestmark = pytest.mark.xdist_group("qa_qwen2vl_tiny")

TINY_OPTIONS = {"device": "cpu", "dtype": "float32", "max_new_tokens": 24, "frames_per_video": 3,
                "frame_max_side": 112, "keep_warm_s": 600, "lock_timeout_s": 0}
W, H, FPS = 64, 48, 8


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Only the HTTP tests need the [gpu] stack; the parser tests above run without it.
    pytest.importorskip("torchvision", reason="Qwen2-VL's image processor needs torchvision ([gpu] extra)")
    from tiny_models.qwen2vl import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@dataclass
class QA:
    tool: RunningTool
    store: ArtifactStore
    uris: dict[str, str]
    home: Path


def _make_media(root: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(3)
    texture = np.kron(rng.integers(0, 256, (H // 4, W // 2, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    clip = root / "clip.mp4"
    with VideoWriter(clip, W, H, FPS, crf=20) as writer:
        for i in range(16):  # a 2 s pan
            writer.write(np.ascontiguousarray(np.roll(texture, -3 * i, axis=1)[:, :W]))
    still = root / "still.png"
    Image.fromarray(texture[:, :W]).save(still)
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return {"clip": (clip, "video/mp4"), "still": (still, "image/png"), "broken": (broken, "image/png")}


def _start(home: Path, profile: Path) -> Any:
    return running_tool("qa_qwen2vl", home=home, ready_timeout=120,
                        env={"SPARKLE_PROFILE": str(profile), "HF_HUB_OFFLINE": "1", "SPARKLE_TOKEN": None,
                             "SPARKLE_QA_QWEN2VL_BACKEND": None})


@pytest.fixture(scope="module")
def qa(tmp_path_factory: pytest.TempPathFactory, tiny_qwen: Path) -> Iterator[QA]:
    home = tmp_path_factory.mktemp("qwen-home")
    store = ArtifactStore(home)
    media_dir = tmp_path_factory.mktemp("qwen-media")
    uris = {name: store.put("inputs", "media", "media", path, media_type).uri
            for name, (path, media_type) in _make_media(media_dir).items()}
    profile = write_gpu_profile(home / "profile.yaml", "qa_qwen2vl", model=str(tiny_qwen), options=TINY_OPTIONS)
    with _start(home, profile) as tool:
        yield QA(tool, store, uris, home)
    store.close()


def invoke(qa: QA, media: list[tuple[str, str]], **body: Any) -> tuple[int, dict[str, Any]]:
    payload = {"run_id": "qwen-tiny", "media": [{"uri": qa.uris[n], "kind": k} for n, k in media], **body}
    reply = qa.tool.client.post("/invoke", json=payload, timeout=120)
    return reply.status_code, reply.json()


def test_garbage_model_output_is_inconclusive_beside_real_signal_checks(qa: QA) -> None:
    status, body = invoke(qa, [("clip", "video"), ("still", "image")],
                          expectations={"prompt": "a textured wall panning left", "duration_s": 2.0})
    assert status == 200, body
    assert body["backend"] == "qwen2-vl"
    checks = body["report"]["checks"]
    vlm = [c for c in checks if c["name"] in CHECKS]
    # One verdict per VLM check per visual medium, none of them passed.
    assert sorted((c["name"], c["media_uri"]) for c in vlm) == sorted(
        (n, qa.uris[m]) for n in CHECKS for m in ("clip", "still"))
    assert all(c["status"] == "inconclusive" and c["detail"].startswith("unparseable model verdict") for c in vlm)
    clip_frames = next(c for c in vlm if c["media_uri"] == qa.uris["clip"])["metrics"]["frames"]
    assert [f["frame"] for f in clip_frames] == [0, 8, 15]  # first, middle, last of 16
    assert [f["time_s"] for f in clip_frames] == [0.0, 1.0, 1.875]
    assert all(isinstance(c["metrics"]["raw_output"], str) for c in vlm)
    # The signal checks still measure the media.
    by_name = {(c["name"], c["media_uri"]): c for c in checks}
    assert by_name[("black_frames", qa.uris["clip"])]["status"] == "passed"
    assert by_name[("frozen_frames", qa.uris["clip"])]["status"] == "passed"
    assert by_name[("duration_mismatch", qa.uris["clip"])]["status"] == "passed"
    assert by_name[("degenerate_image", qa.uris["still"])]["status"] == "passed"
    assert body["report"]["verdict"] == "inconclusive"
    assert any(r.startswith("inconclusive: anatomy") for r in body["report"]["reasons"])
    meta = qa.store.get(body["report_uri"]).metadata
    assert meta["gpu"]["device"] == "cpu" and meta["gpu"]["model_key"].startswith("qwen2-vl:")
    assert meta["vlm_checks"] == CHECKS and body["timings"]["inference_s"] > 0


def test_metadata_lists_the_vision_checks_production_asks_for(qa: QA) -> None:
    from function_tools.qa_qwen2vl.models import CHECK_NAMES
    from sparkle_motion.agents.qa_checks import answered_checks, select_checks
    from sparkle_motion.services import ToolClient

    capabilities = qa.tool.client.get("/metadata").json()["capabilities"]
    assert capabilities == {"checks": list(CHECK_NAMES), "vision_checks": CHECKS}
    answered = answered_checks(ToolClient("qa_qwen2vl", base_url=qa.tool.url, token=""))
    assert set(CHECKS) <= set(select_checks("keyframe", answered).checks)


def test_second_call_reuses_the_warm_model_and_explicit_checks_limit_the_work(qa: QA) -> None:
    # A first call of its own: the module's tests may run on two workers, each with its own tool process.
    status, body = invoke(qa, [("still", "image")], checks=["safety"])
    assert status == 200, body
    status, body = invoke(qa, [("still", "image")], checks=["safety", "degenerate_image"])
    assert status == 200, body
    assert sorted(c["name"] for c in body["report"]["checks"]) == ["degenerate_image", "safety"]
    gpu = qa.store.get(body["report_uri"]).metadata["gpu"]
    assert gpu["reused"] is True and gpu["load_count"] == 1 and gpu["load_s"] == 0.0


def test_prompt_adherence_needs_the_intended_prompt(qa: QA) -> None:
    status, body = invoke(qa, [("still", "image")], checks=["prompt_adherence"])
    assert status == 422 and body["error"]["field"] == "expectations.prompt"
    # By default it is simply skipped without a prompt.
    status, body = invoke(qa, [("still", "image")])
    assert status == 200 and "prompt_adherence" not in {c["name"] for c in body["report"]["checks"]}


def test_character_consistency_asks_the_model_an_image_pair_question(qa: QA) -> None:
    portrait = qa.uris["still"]  # any image stands in for the portrait: the random model's answer is nonsense
    status, body = invoke(qa, [("still", "image")], checks=["character_consistency"],
                          expectations={"prompt": "Close-up of Kit facing the camera",
                                        "characters": [{"name": "Kit", "portrait_uri": portrait}]})
    assert status == 200, body
    [check] = body["report"]["checks"]
    assert check["name"] == "character_consistency" and check["status"] == "inconclusive"
    assert "Kit" in check["metrics"]["answers"] and "raw_output" in check["metrics"]["answers"]["Kit"]
    # Not facing the camera: nothing to ask, the model is not called for it.
    status, body = invoke(qa, [("still", "image")], checks=["character_consistency"],
                          expectations={"prompt": "Kit walks off, back to the camera",
                                        "characters": [{"name": "Kit", "portrait_uri": portrait}]})
    assert status == 200 and body["report"]["checks"][0]["status"] == "passed"
    # Without portraits there is nothing to compare (production asks only when the plan has a cast).
    status, body = invoke(qa, [("still", "image")], checks=["character_consistency"],
                          expectations={"prompt": "Kit"})
    assert status == 200 and "no portraits" in body["report"]["checks"][0]["detail"]
    status, body = invoke(qa, [("still", "image")], checks=["character_consistency"])
    assert status == 422 and body["error"]["field"] == "expectations.prompt"


def test_undecodable_media_is_inconclusive_without_calling_the_model(qa: QA) -> None:
    status, body = invoke(qa, [("broken", "image")], checks=["anatomy", "artifacts"])
    assert status == 200, body
    checks = body["report"]["checks"]
    assert [c["status"] for c in checks] == ["inconclusive", "inconclusive"]
    assert all("could not be decoded" in c["detail"] for c in checks)


def test_simulated_oom_at_inference_is_typed_and_frees_the_lock(tmp_path: Path, tiny_qwen: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkle_motion.gpu_utils import device_lock_is_free

    store = ArtifactStore(tmp_path)
    media = _make_media(tmp_path)
    uri = store.put("inputs", "media", "media", *media["still"]).uri
    store.close()
    profile = write_gpu_profile(tmp_path / "oom.yaml", "qa_qwen2vl", model=str(tiny_qwen),
                                options={**TINY_OPTIONS, "simulate_oom": "inference"})
    with _start(tmp_path, profile) as running:
        reply = running.client.post("/invoke", json={"media": [{"uri": uri, "kind": "image"}],
                                                     "checks": ["safety"]}, timeout=60)
        assert reply.status_code == 507, reply.text
        error = reply.json()["error"]
        assert error["code"] == "model_oom" and error["context"]["stage"] == "inference"
        assert "frame count" in error["context"]["hint"]
        monkeypatch.setenv("SPARKLE_HOME", str(tmp_path))
        assert device_lock_is_free("cpu")
