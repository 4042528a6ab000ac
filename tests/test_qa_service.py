"""qa_qwen2vl over HTTP against the real process, with small real media made here.

One tool process serves the whole module; every request uses its own run_id so
the stored reports of one test never mix with another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import load_settings
from sparkle_motion.media import VideoWriter, probe, run_ffmpeg, write_wav
from sparkle_motion.testing import RunningTool, running_tool

FPS = 12
W, H = 64, 48
SR = 16000


# ---------------------------------------------------------------- media makers

def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (H // 4, 2 * W // 4, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((4, 4, 1), dtype=np.uint8))


def _moving(texture: np.ndarray, i: int) -> np.ndarray:
    # A pan: every frame shows the texture 3 px further along.
    return np.ascontiguousarray(np.roll(texture, -3 * i, axis=1)[:, :W])


def _video(path: Path, segments: list[tuple[str, int]], seed: int = 1) -> Path:
    """segments: ("motion" | "black" | "frozen", frames)."""
    texture = _texture(seed)
    i = 0
    with VideoWriter(path, W, H, FPS, crf=20) as writer:
        last = _moving(texture, 0)
        for kind, count in segments:
            for _ in range(count):
                if kind == "motion":
                    last = _moving(texture, i)
                    writer.write(last)
                elif kind == "black":
                    writer.write(np.zeros((H, W, 3), dtype=np.uint8))
                else:
                    writer.write(last)
                i += 1
    return path


def _burst(seconds: float, seed: int, amplitude: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    # Syllable-rate wobble that never falls silent; peaks stay far below full scale (no clipping).
    envelope = 0.7 + 0.3 * np.sin(2 * np.pi * 3 * t)
    return (amplitude * envelope * rng.standard_normal(t.size)).astype(np.float32)


def _wav(path: Path, parts: list[tuple[str, float]], seed: int = 0) -> Path:
    chunks = [np.zeros(int(s * SR), np.float32) if kind == "silence" else _burst(s, seed + n)
              for n, (kind, s) in enumerate(parts)]
    write_wav(path, np.concatenate(chunks), SR)
    return path


def _png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def _scene(seed: int, size: tuple[int, int] = (160, 90)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 10 + 1, size[0] // 10 + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((10, 10, 1), dtype=np.uint8))[: size[1], : size[0]]


@dataclass
class Media:
    uris: dict[str, str]
    store: ArtifactStore
    tool: RunningTool


@pytest.fixture(scope="module")
def qa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Media]:
    home = tmp_path_factory.mktemp("qa-home")
    work = tmp_path_factory.mktemp("qa-media")
    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, path: Path, media_type: str) -> None:
        files[name] = (path, media_type)

    add("clean_video", _video(work / "clean.mp4", [("motion", 36)]), "video/mp4")
    add("black_video", _video(work / "black.mp4", [("motion", 12), ("black", 12), ("motion", 12)]), "video/mp4")
    add("frozen_video", _video(work / "frozen.mp4", [("motion", 12), ("frozen", 24), ("motion", 12)]), "video/mp4")
    # A slow cross-fade: every frame changes by far less than diff_max from the one before,
    # but the picture keeps moving — slow motion, not a still.
    a_img = _moving(_texture(1), 0).astype(np.float32)
    b_img = a_img * 0.8 + 20  # a gentle change of light over 8 s
    with VideoWriter(work / "fade.mp4", W, H, FPS, crf=20) as writer:
        for i in range(96):
            w = i / 95
            writer.write(np.clip((1 - w) * a_img + w * b_img, 0, 255).astype(np.uint8))
    add("fade_video", work / "fade.mp4", "video/mp4")
    add("speech_wav", _wav(work / "speech.wav", [("silence", 1.0), ("burst", 1.0), ("silence", 1.0)]), "audio/wav")
    t = np.arange(2 * SR) / SR
    clipped = np.clip(2.0 * np.sin(2 * np.pi * 440 * t), -1, 1)
    write_wav(work / "clipped.wav", clipped, SR)
    add("clipped_wav", work / "clipped.wav", "audio/wav")
    # A -20 dBFS-peak 1 kHz tone: about -23 LUFS integrated.
    write_wav(work / "tone.wav", 0.1 * np.sin(2 * np.pi * 1000 * t), SR)
    add("tone_wav", work / "tone.wav", "audio/wav")
    for name, audio_s in (("muxed_video", 3.0), ("short_audio_video", 2.0)):
        wav = _wav(work / f"{name}.wav", [("burst", audio_s)], seed=7)
        out = work / f"{name}.mp4"
        run_ffmpeg(["-i", str(work / "clean.mp4"), "-i", str(wav), "-c:v", "copy", "-c:a", "aac", "-b:a", "64k",
                    "-ar", "48000", str(out)])
        add(name, out, "video/mp4")
    add("uniform_png", _png(work / "uniform.png", np.full((48, 64, 3), (30, 120, 200), np.uint8)), "image/png")
    reference = _scene(11)
    add("reference_png", _png(work / "reference.png", reference), "image/png")
    noise = np.random.default_rng(3).normal(0, 6, reference.shape)
    add("similar_png", _png(work / "similar.png", np.clip(reference + noise, 0, 255).astype(np.uint8)), "image/png")
    add("different_png", _png(work / "different.png", _scene(12)), "image/png")
    (work / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    add("corrupt_video", work / "corrupt.mp4", "video/mp4")
    (work / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 40)
    add("corrupt_png", work / "corrupt.png", "image/png")

    store = ArtifactStore(home)
    uris = {name: store.put("inputs", "media", name, path, media_type).uri
            for name, (path, media_type) in files.items()}
    with running_tool("qa_qwen2vl", home=home) as tool:
        yield Media(uris, store, tool)
    store.close()


def invoke(qa: Media, run_id: str, media: list[tuple[str, str]], **body: Any) -> tuple[int, dict[str, Any]]:
    payload = {"run_id": run_id, "media": [{"uri": qa.uris[name], "kind": kind} for name, kind in media], **body}
    response = qa.tool.client.post("/invoke", json=payload, timeout=120)
    return response.status_code, response.json()


def results(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c for c in body["report"]["checks"] if c["name"] == name]


def only(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = results(body, name)
    assert len(found) == 1, f"expected one {name} result, got {found}"
    return found[0]


# ---------------------------------------------------------------- success paths

def test_clean_video_passes_default_checks_and_report_is_stored(qa: Media) -> None:
    status, body = invoke(qa, "clean", [("clean_video", "video")], expectations={"duration_s": 3.0})
    assert status == 200, body
    report = body["report"]
    assert report["verdict"] == "pass", report
    assert {c["name"] for c in report["checks"]} == {"black_frames", "frozen_frames", "duration_mismatch"}
    assert all(c["status"] == "passed" and c["media_uri"] == qa.uris["clean_video"] for c in report["checks"])
    # The stored artifact holds the same report, with provenance.
    stored = qa.store.list("clean", stage="qa_qwen2vl")
    assert [m.uri for m in stored] == [body["report_uri"]] == [a["uri"] for a in body["artifacts"]]
    assert json.loads(qa.store.path_for(body["report_uri"]).read_bytes()) == report
    assert stored[0].metadata["backend"] == "signal" and stored[0].metadata["verdict"] == "pass"


def test_black_segment_is_flagged_where_it_is(qa: Media) -> None:
    status, body = invoke(qa, "black", [("black_video", "video")], checks=["black_frames"])
    assert status == 200, body
    black = only(body, "black_frames")
    assert black["status"] == "failed" and black["score"] == 12
    assert black["frame"] == 12 and black["time_s"] == pytest.approx(1.0)
    assert black["segments"] == [{"start_s": pytest.approx(1.0), "end_s": pytest.approx(2.0)}]
    assert body["report"]["verdict"] == "fail"
    assert body["report"]["reasons"][0].startswith("black_frames")


def test_frozen_segment_is_flagged_unless_it_is_an_intended_hold(qa: Media) -> None:
    status, body = invoke(qa, "frozen", [("frozen_video", "video")], checks=["frozen_frames", "black_frames"])
    assert status == 200, body
    frozen = only(body, "frozen_frames")
    assert frozen["status"] == "failed"
    # Frames 11..35 show the same picture (the hold repeats frame 11): 25 frames.
    assert frozen["score"] == pytest.approx(25 / FPS, abs=1 / FPS)
    assert frozen["time_s"] == pytest.approx(11 / FPS, abs=1 / FPS)
    assert only(body, "black_frames")["status"] == "passed"
    status, body = invoke(qa, "frozen-held", [("frozen_video", "video")], checks=["frozen_frames"],
                          expectations={"allow_holds": [{"start_s": 0.9, "end_s": 3.1}]})
    assert status == 200 and only(body, "frozen_frames")["status"] == "passed"
    assert body["report"]["verdict"] == "pass"


def test_slow_fade_is_not_a_frozen_frame(qa: Media) -> None:
    status, body = invoke(qa, "fade", [("fade_video", "video")], checks=["frozen_frames"])
    assert status == 200
    frozen = only(body, "frozen_frames")
    assert frozen["status"] == "passed", frozen["detail"]
    assert frozen["score"] < 1.0


def test_speech_where_expected_passes_and_misplaced_speech_fails_both_ways(qa: Media) -> None:
    status, body = invoke(qa, "speech-ok", [("speech_wav", "audio")],
                          expectations={"speech_intervals": [{"start_s": 1.0, "end_s": 2.0}]})
    assert status == 200, body
    assert only(body, "missing_speech")["status"] == "passed"
    assert only(body, "unexpected_speech")["status"] == "passed"
    assert only(body, "clipping")["status"] == "passed"
    assert body["report"]["verdict"] == "pass"

    status, body = invoke(qa, "speech-bad", [("speech_wav", "audio")],
                          checks=["missing_speech", "unexpected_speech"],
                          expectations={"speech_intervals": [{"start_s": 0.0, "end_s": 0.8}]})
    assert status == 200, body
    missing = only(body, "missing_speech")
    assert missing["status"] == "failed" and missing["score"] == 0
    assert missing["segments"] == [{"start_s": 0.0, "end_s": 0.8}]
    unexpected = only(body, "unexpected_speech")
    assert unexpected["status"] == "failed"
    assert unexpected["time_s"] == pytest.approx(1.0, abs=0.05)
    assert unexpected["score"] == pytest.approx(1.0, abs=0.1)
    assert len(body["report"]["reasons"]) == 2


def test_clipped_audio_fails_clipping(qa: Media) -> None:
    status, body = invoke(qa, "clip", [("clipped_wav", "audio"), ("tone_wav", "audio")], checks=["clipping"])
    assert status == 200, body
    by_uri = {c["media_uri"]: c for c in results(body, "clipping")}
    assert by_uri[qa.uris["clipped_wav"]]["status"] == "failed"
    assert by_uri[qa.uris["clipped_wav"]]["score"] > 0.5
    assert by_uri[qa.uris["tone_wav"]]["status"] == "passed" and by_uri[qa.uris["tone_wav"]]["score"] == 0


def test_loudness_measured_against_the_target(qa: Media) -> None:
    status, body = invoke(qa, "loud", [("tone_wav", "audio")],
                          expectations={"loudness_lufs": -23.0, "loudness_tolerance_lu": 1.5})
    assert status == 200, body
    loud = only(body, "loudness")
    assert loud["status"] == "passed", loud
    assert loud["metrics"]["measured_lufs"] == pytest.approx(-23.0, abs=1.5)
    status, body = invoke(qa, "loud-bad", [("tone_wav", "audio")], checks=["loudness"],
                          expectations={"loudness_lufs": -12.0})
    loud = only(body, "loudness")
    assert loud["status"] == "failed" and loud["score"] > 8 and loud["threshold"] == 2.0


def test_duration_and_av_mismatch(qa: Media) -> None:
    status, body = invoke(qa, "dur-ok", [("muxed_video", "video")], checks=["duration_mismatch"],
                          expectations={"duration_s": 3.0})
    assert status == 200, body
    ok = only(body, "duration_mismatch")
    assert ok["status"] == "passed", ok
    assert set(ok["metrics"]) == {"video vs expected", "audio vs expected", "audio vs video"}

    status, body = invoke(qa, "dur-av", [("short_audio_video", "video")], checks=["duration_mismatch"])
    bad = only(body, "duration_mismatch")
    assert bad["status"] == "failed" and "audio vs video" in bad["detail"]
    assert bad["score"] == pytest.approx(1.0, abs=0.05)

    status, body = invoke(qa, "dur-exp", [("clean_video", "video")], checks=["duration_mismatch"],
                          expectations={"duration_s": 3.5})
    bad = only(body, "duration_mismatch")
    assert bad["status"] == "failed" and bad["score"] == pytest.approx(0.5, abs=1e-3)
    assert bad["threshold"] == pytest.approx(1 / FPS, abs=1e-3)

    # A silent clip checked with its separate dialogue track: 3 s of video vs 3 s of audio.
    status, body = invoke(qa, "dur-pair", [("clean_video", "video"), ("speech_wav", "audio")],
                          checks=["duration_mismatch"])
    by_uri = {c["media_uri"]: c for c in results(body, "duration_mismatch")}
    assert by_uri[qa.uris["speech_wav"]]["status"] == "passed"
    assert "audio vs video media[0]" in by_uri[qa.uris["speech_wav"]]["metrics"]


def test_continuity_similar_passes_different_fails(qa: Media) -> None:
    status, body = invoke(qa, "cont", [("similar_png", "image"), ("different_png", "image")],
                          checks=["continuity"], expectations={"reference_frame_uri": qa.uris["reference_png"]})
    assert status == 200, body
    by_uri = {c["media_uri"]: c for c in results(body, "continuity")}
    similar, different = by_uri[qa.uris["similar_png"]], by_uri[qa.uris["different_png"]]
    assert similar["status"] == "passed" and similar["score"] > 0.6
    assert different["status"] == "failed" and different["score"] < 0.3
    # A video's first frame against a reference made from the same texture, and against an unrelated one.
    status, body = invoke(qa, "cont-video", [("clean_video", "video")], checks=["continuity"],
                          expectations={"reference_frame_uri": qa.uris["black_video"]})
    same_start = only(body, "continuity")
    assert same_start["status"] == "passed" and same_start["frame"] == 0
    status, body = invoke(qa, "cont-video-2", [("clean_video", "video")], checks=["continuity"],
                          expectations={"reference_frame_uri": qa.uris["different_png"]})
    assert only(body, "continuity")["status"] == "failed"


def test_degenerate_image_flags_uniform_and_passes_detailed(qa: Media) -> None:
    status, body = invoke(qa, "degen", [("uniform_png", "image"), ("reference_png", "image")])
    assert status == 200, body
    by_uri = {c["media_uri"]: c for c in results(body, "degenerate_image")}
    assert by_uri[qa.uris["uniform_png"]]["status"] == "failed"
    assert "uniform" in by_uri[qa.uris["uniform_png"]]["detail"]
    assert by_uri[qa.uris["reference_png"]]["status"] == "passed"
    assert body["report"]["verdict"] == "fail"


def test_text_policy_blocks_a_term_and_passes_clean_prompt(qa: Media) -> None:
    status, body = invoke(qa, "text", [], expectations={"prompt": "A quiet harbour, then GORE everywhere"})
    assert status == 200, body
    policy = only(body, "text_policy")
    assert policy["status"] == "failed" and policy["metrics"]["hits"][0]["term"] == "gore"
    assert body["report"]["verdict"] == "fail"
    status, body = invoke(qa, "text-ok", [], expectations={"prompt": "A gorgeous quiet harbour at dawn"})
    assert only(body, "text_policy")["status"] == "passed" and body["report"]["verdict"] == "pass"


# ---------------------------------------------------------------- inconclusive

def test_audio_check_on_video_without_audio_is_inconclusive(qa: Media) -> None:
    status, body = invoke(qa, "no-audio", [("clean_video", "video")], checks=["clipping", "black_frames"])
    assert status == 200, body
    clipping = only(body, "clipping")
    assert clipping["status"] == "inconclusive" and "no media with an audio stream" in clipping["detail"]
    assert only(body, "black_frames")["status"] == "passed"
    assert body["report"]["verdict"] == "inconclusive"
    assert body["report"]["reasons"] == [f"inconclusive: clipping: {clipping['detail']}"]


def test_expectation_without_media_to_check_it_is_inconclusive_by_default(qa: Media) -> None:
    # No checks named: giving an expectation asks for its check, so it must answer.
    status, body = invoke(qa, "no-audio-default", [("clean_video", "video")],
                          expectations={"loudness_lufs": -16.0, "speech_intervals": []})
    assert status == 200, body
    assert only(body, "loudness")["status"] == "inconclusive"
    assert only(body, "unexpected_speech")["status"] == "inconclusive"
    assert results(body, "missing_speech") == []  # nothing expected, nothing can be missing
    assert body["report"]["verdict"] == "inconclusive"


def test_corrupt_media_makes_its_checks_inconclusive(qa: Media) -> None:
    status, body = invoke(qa, "corrupt", [("corrupt_video", "video"), ("corrupt_png", "image"),
                                          ("clean_video", "video")])
    assert status == 200, body
    report = body["report"]
    broken = [c for c in report["checks"] if c["media_uri"] in (qa.uris["corrupt_video"], qa.uris["corrupt_png"])]
    assert {(c["name"], c["media_uri"]) for c in broken} == {
        ("black_frames", qa.uris["corrupt_video"]), ("frozen_frames", qa.uris["corrupt_video"]),
        ("degenerate_image", qa.uris["corrupt_png"])}
    assert all(c["status"] == "inconclusive" and "could not be decoded" in c["detail"] for c in broken)
    healthy = [c for c in report["checks"] if c["media_uri"] == qa.uris["clean_video"]]
    assert healthy and all(c["status"] == "passed" for c in healthy)
    assert report["verdict"] == "inconclusive" and len(report["reasons"]) == 3


def test_failure_outranks_inconclusive(qa: Media) -> None:
    status, body = invoke(qa, "mixed", [("black_video", "video"), ("corrupt_video", "video")],
                          checks=["black_frames"])
    assert status == 200, body
    assert sorted(c["status"] for c in body["report"]["checks"]) == ["failed", "inconclusive"]
    assert body["report"]["verdict"] == "fail"
    assert len(body["report"]["reasons"]) == 1 and body["report"]["reasons"][0].startswith("black_frames")


# ---------------------------------------------------------------- bad input

def _post(qa: Media, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = qa.tool.client.post("/invoke", json=payload)
    return response.status_code, response.json()


@pytest.mark.parametrize(("case", "field"), [
    ("unknown_check", "checks[1]"),
    ("vlm_check_on_signal", "checks[1]"),
    ("missing_kind", "media[0].kind"),
    ("bad_kind", "media[0].kind"),
    ("outside_store", "media[0].uri"),
    ("not_found", "media[0].uri"),
    ("bad_interval", "expectations.speech_intervals[0]"),
    ("needs_intervals", "expectations.speech_intervals"),
    ("needs_reference", "expectations.reference_frame_uri"),
    ("missing_reference", "expectations.reference_frame_uri"),
    ("too_many_media", "media"),
    ("unknown_field", "expectations.duration"),
])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(qa: Media, case: str, field: str) -> None:
    run_id = f"bad-{case.replace('_', '-')}"
    clean = {"uri": qa.uris["clean_video"], "kind": "video"}
    payloads: dict[str, dict[str, Any]] = {
        "unknown_check": {"media": [clean], "checks": ["black_frames", "lens_flare"]},
        "vlm_check_on_signal": {"media": [clean], "checks": ["black_frames", "anatomy"]},
        "missing_kind": {"media": [{"uri": qa.uris["clean_video"]}]},
        "bad_kind": {"media": [{"uri": qa.uris["clean_video"], "kind": "hologram"}]},
        "outside_store": {"media": [{"uri": "artifact+fs://../../etc/passwd", "kind": "video"}]},
        "not_found": {"media": [{"uri": "artifact+fs://inputs/media/nope0000", "kind": "video"}]},
        "bad_interval": {"media": [clean], "expectations": {"speech_intervals": [{"start_s": 2, "end_s": 1}]}},
        "needs_intervals": {"media": [clean], "checks": ["missing_speech"]},
        "needs_reference": {"media": [clean], "checks": ["continuity"]},
        "missing_reference": {"media": [clean], "checks": ["continuity"],
                              "expectations": {"reference_frame_uri": "artifact+fs://inputs/media/gone0000"}},
        "too_many_media": {"media": [clean] * 17},
        "unknown_field": {"media": [clean], "expectations": {"duration": 3}},
    }
    status, body = _post(qa, {"run_id": run_id, **payloads[case]})
    assert status == 422, body
    assert body["error"]["field"] == field, body
    assert body["error"]["message"]
    assert qa.store.list(run_id) == []
    assert qa.tool.client.get("/ready").status_code == 200


def test_service_keeps_serving_after_bad_input(qa: Media) -> None:
    assert _post(qa, {"media": [{"uri": "../x", "kind": "image"}]})[0] == 422
    status, body = invoke(qa, "after-bad", [("reference_png", "image")])
    assert status == 200 and body["report"]["verdict"] == "pass"


def test_metadata_describes_the_signal_backend(qa: Media) -> None:
    meta = qa.tool.client.get("/metadata").json()
    assert meta["tool_id"] == "qa_qwen2vl"
    assert meta["active_backend"] == "signal" and meta["model"] == "signal-v1"
    checks_schema = json.dumps(meta["request_schema"])
    assert "frozen_frames" in checks_schema and "reference_frame_uri" in checks_schema


def test_module_entry_point_serves_on_the_registry_port(tmp_path: Path) -> None:
    # The profile moves the tool to a free port, so this never collides with a running mesh;
    # the entry point still has to find its port through the registry + profile.
    from mesh_harness import write_test_profile

    profile = write_test_profile(tmp_path)
    env = {**os.environ, "SPARKLE_HOME": str(tmp_path), "SPARKLE_PROFILE": str(profile)}
    env.pop("SPARKLE_TOKEN", None)
    port = load_settings(env).tool("qa_qwen2vl").port
    proc = subprocess.Popen([sys.executable, "-m", "function_tools.qa_qwen2vl"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.1)
            assert client.get("/metadata").json()["tool_id"] == "qa_qwen2vl"
    finally:
        proc.terminate()
        proc.wait(timeout=15)



def test_inputs_are_real_media(qa: Media) -> None:
    # Guard against the fixtures silently degrading: decode them with PyAV.
    info = probe(qa.store.path_for(qa.uris["muxed_video"]))
    assert info.first("video").frames == 36 and info.first("audio") is not None
    assert probe(qa.store.path_for(qa.uris["black_video"])).first("video").frames == 36
