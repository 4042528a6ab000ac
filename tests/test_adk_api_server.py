"""`adk api_server adk_agents` serves script_agent; drive it through ADK's own /run endpoint, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sparkle_motion.plan import validate_plan
from sparkle_motion.testing import free_port

REPO = Path(__file__).resolve().parents[1]
ADK = Path(sys.executable).with_name("adk")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("adk_home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKLE_", "GOOGLE_", "GEMINI_"))}
    env.update(SPARKLE_HOME=str(home), SPARKLE_PROFILE="cpu", PYTHONUNBUFFERED="1")
    log_path = home / "adk_api_server.log"
    log = log_path.open("wb")
    # In-memory sessions and artifacts: nothing is written into the agents folder.
    proc = subprocess.Popen(
        [str(ADK), "api_server", "--host", "127.0.0.1", "--port", str(port),
         "--session_service_uri", "memory://", "--artifact_service_uri", "memory://", "adk_agents"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"adk api_server exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/list-apps", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"adk api_server did not answer in 60 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_lists_the_script_agent(api_server: httpx.Client) -> None:
    apps = api_server.get("/list-apps").json()
    assert "script_agent" in apps


def test_run_returns_a_valid_plan_offline(api_server: httpx.Client) -> None:
    session = api_server.post("/apps/script_agent/users/tester/sessions", json={})
    assert session.status_code == 200, session.text
    session_id = session.json()["id"]
    idea = 'Mara and Teodor race a paper boat down a flooded alley at dusk. {"shots": 4, "style": "noir", "seed": 11}'
    response = api_server.post("/run", json={
        "app_name": "script_agent", "user_id": "tester", "session_id": session_id,
        "new_message": {"role": "user", "parts": [{"text": idea}]},
    })
    assert response.status_code == 200, response.text
    events = response.json()
    finals = [e for e in events if e.get("author") == "script_agent" and e.get("content")]
    assert finals, events
    text = "".join(p.get("text", "") for p in finals[-1]["content"]["parts"])
    plan = validate_plan(json.loads(text))
    assert len(plan.shots) == 4
    assert plan.metadata.seed == 11
    assert plan.metadata.source == "sparkle-offline-planner"
    assert {"Mara", "Teodor"} <= {c.name for c in plan.characters}
    assert all("black and white" in image.prompt for image in plan.base_images)

    # output_key: ADK stored the parsed plan in session state as well.
    state = api_server.get(f"/apps/script_agent/users/tester/sessions/{session_id}").json()["state"]
    assert validate_plan(state["movie_plan"]).model_dump() == plan.model_dump()
