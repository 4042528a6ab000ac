"""Background stages of a run: they run beside the caller, hand back their result or error, and settle."""

from __future__ import annotations

import threading

import pytest

from sparkle_motion.agents.stage_overlap import BackgroundStages
from sparkle_motion.errors import BackendError


def test_a_background_stage_runs_beside_the_caller_and_hands_back_its_result():
    release = threading.Event()
    entered = threading.Event()

    def speech() -> dict:
        entered.set()
        assert release.wait(30), "the caller never let the background stage finish"
        return {"timeline_uri": "artifact+fs://run/dialogue_audio/x"}

    stages = BackgroundStages("run_a")
    stages.start("dialogue_audio", speech)
    # The caller goes on (the picture stages) while the stage is still inside its work.
    assert entered.wait(30) and stages.started("dialogue_audio")
    release.set()
    assert stages.result("dialogue_audio") == {"timeline_uri": "artifact+fs://run/dialogue_audio/x"}
    assert not stages.started("dialogue_audio")


def test_its_error_is_raised_where_it_is_awaited():
    def speech() -> dict:
        raise BackendError("tts_chatterbox failed in stage dialogue_audio", context={"stage": "dialogue_audio"})

    stages = BackgroundStages("run_b")
    stages.start("dialogue_audio", speech)
    with pytest.raises(BackendError) as info:
        stages.result("dialogue_audio")
    assert info.value.context["stage"] == "dialogue_audio"


def test_settle_waits_for_the_stage_and_keeps_its_error_from_the_failing_run():
    finished = threading.Event()

    def speech() -> None:
        finished.wait(0.2)
        finished.set()
        raise RuntimeError("beside a failing run")

    stages = BackgroundStages("run_c")
    stages.start("dialogue_audio", speech)
    stages.settle()
    assert finished.is_set() and not stages.started("dialogue_audio")


def test_one_stage_cannot_be_started_twice():
    gate = threading.Event()
    stages = BackgroundStages("run_d")
    stages.start("dialogue_audio", lambda: gate.wait(30))
    with pytest.raises(RuntimeError, match="already running"):
        stages.start("dialogue_audio", lambda: None)
    gate.set()
    assert stages.result("dialogue_audio") is True
