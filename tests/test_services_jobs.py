"""Jobs on the cheap echo tool: POST/GET/DELETE /jobs, their states, progress, cancel, and ToolClient's job path.

The echo backend holds its slot for ``hold_s`` in 50 ms steps and reports each step
through ``ctx.progress``, the way a diffusers step callback does.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from test_production_run import PLANS

from function_tools.echo.service import SPEC
from sparkle_motion.agents.production_run import ProductionRun
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import ToolProfile, load_settings
from sparkle_motion.errors import ToolCallError
from sparkle_motion.plan import validate_plan
from sparkle_motion.runs import RunRegistry
from sparkle_motion.services import ToolClient, ToolRequest, create_app
from sparkle_motion.services.jobs import MAX_FINISHED_JOBS
from sparkle_motion.testing import free_port, running_tool

ECHO = "function_tools.echo.service"
ENDED = ("succeeded", "failed", "cancelled")


def wait_for(client, job_id: str, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/jobs/{job_id}").json()
        if predicate(view):
            return view
        assert time.monotonic() < deadline, f"job never reached the condition; last view {view}"
        time.sleep(0.05)


@pytest.fixture
def echo(sparkle_home: Path):
    with running_tool(ECHO, home=sparkle_home) as tool:
        yield tool


def test_job_runs_in_the_background_with_progress_an_eta_and_its_response(echo, sparkle_home):
    submitted = echo.client.post("/jobs", json={"text": "slow hello", "hold_s": 2.0})
    assert submitted.status_code == 202, submitted.text
    view = submitted.json()
    job_id = view["job_id"]
    assert submitted.headers["Location"] == f"/jobs/{job_id}"
    assert view["state"] in ("queued", "running") and view["response"] is None

    timed = wait_for(echo.client, job_id, lambda v: (v["progress"] or {}).get("eta_s") is not None or v["state"] in ENDED)
    assert timed["state"] == "running", timed
    progress = timed["progress"]
    assert progress["phase"] == "hold" and progress["total"] == 40 and 2 <= progress["step"] <= 40
    assert progress["step_s"] > 0 and 0 <= progress["eta_s"] <= 2.0 * 5   # a loaded machine may be slow

    done = wait_for(echo.client, job_id, lambda v: v["state"] in ENDED)
    assert done["state"] == "succeeded", done
    assert done["progress"]["step"] == 40
    assert done["response"]["text"] == "slow hello" and done["response"]["tool_id"] == "echo"
    artifact = done["response"]["artifacts"][0]
    assert Path(artifact["local_path"]).read_text() == "slow hello"
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]


def test_unknown_and_malformed_job_ids(echo):
    missing = echo.client.get("/jobs/job_0123456789ab")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    assert echo.client.delete("/jobs/job_0123456789ab").status_code == 404
    for bad in ("nope", "job_../../etc", "job_0123456789abX"):
        answer = echo.client.get(f"/jobs/{bad}")
        assert answer.status_code in (404, 422), (bad, answer.status_code)
        assert answer.json()["error"]["code"] in ("invalid_input", "not_found")
    invalid = echo.client.post("/jobs", json={"text": ""})
    assert invalid.status_code == 422 and invalid.json()["error"]["field"] == "text"


def test_cancel_stops_a_running_job_at_its_next_step_and_frees_the_slot(echo, sparkle_home):
    job_id = echo.client.post("/jobs", json={"text": "doomed", "hold_s": 10.0}).json()["job_id"]
    wait_for(echo.client, job_id, lambda v: (v["progress"] or {}).get("step", 0) >= 2)
    asked = time.monotonic()
    cancel = echo.client.delete(f"/jobs/{job_id}")
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
    at_cancel = cancel.json()["progress"]["step"]
    done = wait_for(echo.client, job_id, lambda v: v["state"] in ENDED, timeout=8)
    assert time.monotonic() - asked < 8, "the job did not stop long before its 10 s hold"
    assert done["state"] == "cancelled" and done["error"]["code"] == "cancelled"
    assert done["progress"]["step"] <= at_cancel + 1, "the backend ran on past the next step"
    again = echo.client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_ended"
    # the slot is free: a sync call goes straight through (busy_wait_s is 0.5 s)
    assert echo.client.post("/invoke", json={"text": "next"}).status_code == 200
    assert not (sparkle_home / "artifacts/adhoc/echo").exists() or \
        sorted(p.read_text() for p in (sparkle_home / "artifacts/adhoc/echo").iterdir()) == ["next"]


def test_a_job_waits_for_the_slot_instead_of_503_and_a_queued_job_cancels_at_once(echo):
    first = echo.client.post("/jobs", json={"text": "first", "hold_s": 1.5}).json()["job_id"]
    wait_for(echo.client, first, lambda v: v["state"] == "running")
    # /invoke would answer 503 busy now; a job queues
    assert echo.client.post("/invoke", json={"text": "sync"}).status_code == 503
    second = echo.client.post("/jobs", json={"text": "second", "hold_s": 0.1}).json()["job_id"]
    third = echo.client.post("/jobs", json={"text": "third"}).json()["job_id"]
    assert echo.client.get(f"/jobs/{second}").json()["state"] == "queued"
    dropped = echo.client.delete(f"/jobs/{third}")
    assert dropped.status_code == 202 and dropped.json()["state"] == "cancelled"
    assert wait_for(echo.client, second, lambda v: v["state"] in ENDED)["state"] == "succeeded"
    assert echo.client.get(f"/jobs/{first}").json()["state"] == "succeeded"
    assert echo.client.get(f"/jobs/{third}").json()["state"] == "cancelled"


def test_a_failing_backend_fails_the_job_with_the_error_body(echo):
    job_id = echo.client.post("/jobs", json={"text": "x", "fail": True}).json()["job_id"]
    done = wait_for(echo.client, job_id, lambda v: v["state"] in ENDED)
    assert done["state"] == "failed" and done["error"]["code"] == "backend_error" and done["error_status"] == 500
    assert "echo asked to fail" in done["error"]["message"]


def test_profile_max_job_s_fails_an_overrunning_job_and_step_delay_slows_each_step(sparkle_home):
    settings = load_settings({"SPARKLE_HOME": str(sparkle_home)})
    profile = ToolProfile("echo", "echo", max_job_s=1.0, test_step_delay_s=0.2)
    with TestClient(create_app(SPEC, settings, profile=profile)) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job_id = client.post("/jobs", json={"text": "x", "hold_s": 5.0}).json()["job_id"]
        done = wait_for(client, job_id, lambda v: v["state"] in ENDED, timeout=20)
        assert done["state"] == "failed" and done["error"]["code"] == "job_timeout", done
        # 0.2 s delay + 0.05 s hold per step: about 4 steps fit in the 1 s limit (not the 20 of a bare hold)
        assert 1 <= done["progress"]["step"] <= 10
        assert done["progress"]["step_s"] >= 0.2


def test_finished_jobs_kept_are_bounded(sparkle_home):
    settings = load_settings({"SPARKLE_HOME": str(sparkle_home)})
    with TestClient(create_app(SPEC, settings)) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        table = client.app.state.jobs
        table.max_finished = 3
        ids = [client.post("/jobs", json={"text": f"n{i}"}).json()["job_id"] for i in range(5)]
        wait_for(client, ids[-1], lambda v: v["state"] in ENDED)
        assert client.get(f"/jobs/{ids[0]}").status_code == 404
        assert client.get(f"/jobs/{ids[-1]}").status_code == 200
        assert MAX_FINISHED_JOBS >= 100   # the documented default keeps a good while of work readable


# --------------------------------------------------------------------------- ToolClient's job path

def test_tool_client_runs_a_job_longer_than_its_read_timeout(echo):
    views: list[dict] = []
    with ToolClient("echo", base_url=echo.url, token="", timeout=0.5, use_jobs=True) as client:
        started = time.monotonic()
        out = client.invoke({"text": "patient", "hold_s": 2.0}, on_progress=views.append)
    assert time.monotonic() - started >= 2.0 > 0.5
    assert out["text"] == "patient"
    steps = [v["progress"]["step"] for v in views if v.get("progress")]
    assert steps and steps == sorted(steps) and views[-1]["state"] == "succeeded"
    with ToolClient("echo", base_url=echo.url, token="", timeout=0.5) as sync:
        with pytest.raises(ToolCallError) as timed_out:
            sync.invoke({"text": "impatient", "hold_s": 2.0})
    assert timed_out.value.code == "tool_timeout"


def test_tool_client_cancel_check_cancels_the_job(echo):
    asked = threading.Event()

    def cancel_check() -> str | None:
        return "operator said stop" if asked.is_set() else None

    def progress(view: dict) -> None:
        if (view.get("progress") or {}).get("step", 0) >= 2:
            asked.set()

    with ToolClient("echo", base_url=echo.url, token="", use_jobs=True) as client:
        started = time.monotonic()
        with pytest.raises(ToolCallError) as cancelled:
            client.invoke({"text": "x", "hold_s": 10.0}, on_progress=progress, cancel_check=cancel_check)
    assert cancelled.value.code == "job_cancelled" and "operator said stop" in cancelled.value.message
    assert time.monotonic() - started < 8


class EchoRequest(ToolRequest):
    text: str
    hold_s: float


def echo_production_run(home: Path, run_id: str, url: str) -> tuple[ProductionRun, RunRegistry]:
    """A running ProductionRun whose tool clients all call the echo process at ``url`` through jobs."""
    settings = load_settings({"SPARKLE_HOME": str(home)})
    registry = RunRegistry(settings.db_path)
    plan = validate_plan(json.loads((PLANS / "rooftop_valid.json").read_text()))
    registry.create_run(run_id, plan_id=plan.metadata.plan_id)
    registry.set_status(run_id, "running")
    run = ProductionRun(run_id, plan, settings=settings, store=ArtifactStore(home), registry=registry,
                        client_factory=lambda tool_id: ToolClient(tool_id, base_url=url, token="", use_jobs=True,
                                                                  retries=20))
    return run, registry


def test_a_job_lost_to_a_tool_restart_is_resubmitted_by_the_production_step(sparkle_home):
    """The tool process dies mid-job and comes back on its port: the step submits the work again."""
    port = free_port()
    run, registry = echo_production_run(sparkle_home, "run_lost", f"http://127.0.0.1:{port}")

    outcome: dict = {}
    first = running_tool(ECHO, home=sparkle_home, port=port)
    tool = first.__enter__()
    try:
        def work() -> None:
            with run.in_flight.working_on("video_clips", "shot_001", "echo"):
                outcome.update(run.invoke("echo", EchoRequest(text="again", hold_s=1.5), stage="video_clips"))

        worker = threading.Thread(target=work)
        worker.start()
        deadline = time.monotonic() + 30
        while not run.in_flight.snapshot() or run.in_flight.snapshot()[0].job_id is None:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.05)
    finally:
        first.__exit__(None, None, None)      # the process dies mid-job
    assert tool.proc.poll() is not None
    with running_tool(ECHO, home=sparkle_home, port=port):
        worker.join(60)
    assert not worker.is_alive()
    assert outcome.get("text") == "again", outcome
    messages = [e.message for e in registry.log_tail("run_lost", 20)]
    assert any("lost the job" in m for m in messages), messages


def test_stop_cancels_the_job_in_flight_and_pause_lets_it_finish(echo, sparkle_home):
    run, registry = echo_production_run(sparkle_home, "run_ctl", echo.url)

    def call(hold_s: float, outcome: dict) -> None:
        try:
            with run.in_flight.working_on("video_clips", "shot_001", "echo"):
                outcome["response"] = run.invoke("echo", EchoRequest(text="held", hold_s=hold_s), stage="video_clips")
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            outcome["error"] = exc

    def started_job() -> str:
        deadline = time.monotonic() + 30
        while True:
            items = run.in_flight.snapshot()
            if items and items[0].step:
                return str(items[0].job_id)
            assert time.monotonic() < deadline, items
            time.sleep(0.05)

    paused: dict = {}
    worker = threading.Thread(target=call, args=(1.5, paused))
    worker.start()
    started_job()
    registry.set_status("run_ctl", "paused")
    worker.join(30)
    assert paused.get("response", {}).get("text") == "held", paused

    registry.set_status("run_ctl", "running")
    stopped: dict = {}
    worker = threading.Thread(target=call, args=(10.0, stopped))
    worker.start()
    job_id = started_job()
    asked = time.monotonic()
    registry.set_status("run_ctl", "stopped")
    worker.join(30)
    assert time.monotonic() - asked < 8
    assert type(stopped.get("error")).__name__ == "RunStopped", stopped
    job = echo.client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and "DELETE /jobs" in job["error"]["context"]["reason"]
