"""Which QA checks production asks (issue 13, point 5): what the QA backend answers, vision checks named.

The QA tool says in /metadata which checks its backend answers; production asks
keyframes and clips for the vision checks the backend has plus its signal
checks, and lists the vision checks it lacks as ``not_available``.  The tool
side runs as a real process (the cpu profile's ``signal`` backend); the
``qwen2-vl`` side is in tests/test_qa_qwen2vl_tiny.py and the gpu-profile e2e.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from function_tools.qa_qwen2vl.models import ALL_CHECKS, CHECK_NAMES, VLM_CHECKS, QAMedia, QARequest
from sparkle_motion.agents.qa_checks import VISION_CHECKS, RunQaChecks, answered_checks, select_checks
from sparkle_motion.services import ToolClient
from sparkle_motion.testing import free_port, running_tool

SIGNAL = frozenset(ALL_CHECKS)
QWEN2VL = frozenset(CHECK_NAMES)


def test_every_vision_check_the_qa_tool_knows_is_named_in_one_place() -> None:
    assert set(VLM_CHECKS) <= set(VISION_CHECKS)
    assert "character_consistency" in VISION_CHECKS     # the cast stage's check, asked once the tool has it


def test_on_signal_the_signal_checks_are_asked_and_every_vision_check_is_not_available() -> None:
    keyframe, clip = select_checks("keyframe", SIGNAL), select_checks("clip", SIGNAL)
    assert keyframe.checks == ["degenerate_image", "text_policy"]
    assert keyframe.not_available == list(VISION_CHECKS)
    assert clip.checks == ["black_frames", "frozen_frames", "duration_mismatch", "continuity", "text_policy"]
    # character_consistency is a keyframe check: a character facing away in a clip is no failure.
    assert clip.not_available == [c for c in VISION_CHECKS if c != "character_consistency"]


def test_on_qwen2vl_the_vision_checks_and_the_signal_checks_are_asked() -> None:
    keyframe, clip = select_checks("keyframe", QWEN2VL), select_checks("clip", QWEN2VL)
    vision_known = [c for c in VISION_CHECKS if c in CHECK_NAMES]
    assert keyframe.checks == ["degenerate_image", "text_policy", *vision_known]
    assert {"prompt_adherence", "anatomy", "artifacts", "safety"} <= set(clip.checks)
    assert clip.checks[:5] == ["black_frames", "frozen_frames", "duration_mismatch", "continuity", "text_policy"]
    assert keyframe.not_available == [c for c in VISION_CHECKS if c not in CHECK_NAMES]
    # Every selection is a valid request (the check names are the tool's own).
    for selection, kind in ((keyframe, "image"), (clip, "video")):
        QARequest(media=[QAMedia(uri="artifact+fs://r/s/a", kind=kind)], checks=selection.checks)


def test_the_signal_tool_says_what_it_answers_and_a_run_logs_the_missing_vision_checks_once(
        tmp_path: Path) -> None:
    env = {"SPARKLE_PROFILE": "cpu", "SPARKLE_TOKEN": None, "SPARKLE_QA_QWEN2VL_BACKEND": None}
    with running_tool("qa_qwen2vl", home=tmp_path, env=env) as tool:
        meta = tool.client.get("/metadata").json()
        assert meta["active_backend"] == "signal"
        assert meta["capabilities"] == {"checks": list(ALL_CHECKS), "vision_checks": []}
        client = ToolClient("qa_qwen2vl", base_url=tool.url, token="")
        assert answered_checks(client) == SIGNAL
        warnings: list[tuple[str, list[str]]] = []
        calls: list[int] = []

        def client_once() -> ToolClient:
            calls.append(1)
            return client

        run = RunQaChecks(client_once, lambda message, checks: warnings.append((message, checks)))
        for _ in range(3):
            run.select("clip")
        run.select("keyframe")
    assert len(calls) == 1                                       # /metadata asked once per run
    assert [checks for _, checks in warnings] == [
        sorted(c for c in VISION_CHECKS if c != "character_consistency"), ["character_consistency"]]
    assert run.not_available == set(VISION_CHECKS)


def test_a_qa_tool_that_cannot_say_is_taken_for_signal() -> None:
    dead = ToolClient("qa_qwen2vl", base_url=f"http://127.0.0.1:{free_port()}", token="", retries=0, timeout=2)
    assert answered_checks(dead) == SIGNAL


@pytest.mark.parametrize("capabilities", [{}, {"checks": "anatomy"}, {"checks": [1, 2]}])
def test_malformed_capabilities_fall_back_to_signal(capabilities: dict) -> None:
    class Reports:   # a tool's /metadata body as ToolClient.metadata() returns it
        tool_id = "qa_qwen2vl"

        def metadata(self) -> dict:
            return {"capabilities": capabilities}

    assert answered_checks(Reports()) == SIGNAL  # type: ignore[arg-type]
