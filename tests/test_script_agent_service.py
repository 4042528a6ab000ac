"""script_agent's HTTP service: a real process on a free port, the plan artifact, errors in the mesh format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sparkle_motion.agents.script_protocol import PLANNER_MODEL
from sparkle_motion.agents.script_service import SCHEMA_MODELS, SCHEMA_URI, ScriptAgentRequest, create_app
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import load_settings, project_path
from sparkle_motion.plan import validate_plan
from sparkle_motion.testing import running_tool

NO_KEYS = {"GOOGLE_API_KEY": None, "GEMINI_API_KEY": None, "GOOGLE_GENAI_USE_VERTEXAI": None,
           "GOOGLE_CLOUD_PROJECT": None}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("script_home")
    with running_tool("script_agent", home=home, env={"SPARKLE_PROFILE": "cpu", **NO_KEYS}) as tool:
        yield tool, home


def test_invoke_stores_a_validated_plan_artifact(service) -> None:
    tool, home = service
    body = {"prompt": "Zara and Kofi chase a runaway kite across a windy beach at sunset.",
            "shots": 4, "duration_s": 21, "seed": 5, "style": "anime", "run_id": "run_script_1"}
    response = tool.client.post("/invoke", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ok"
    assert answer["request_id"] and answer["request_id"] == response.headers["X-Request-ID"]
    assert answer["schema_uri"] == SCHEMA_URI == "schemas/MoviePlan.schema.json"
    assert project_path(SCHEMA_URI).is_file()  # the file `sparkle-motion schemas export` writes
    assert answer["artifact_uri"].startswith("artifact+fs://run_script_1/plan/")
    summary = answer["plan_summary"]
    assert summary["shots"] == 4 and summary["runtime_s"] == pytest.approx(21)
    assert summary["model"] == PLANNER_MODEL and summary["planned_offline"] is True and summary["attempts"] == 1
    assert {"Zara", "Kofi"} <= set(summary["characters"])

    store = ArtifactStore(home)
    manifest = store.verify(answer["artifact_uri"])
    assert manifest.artifact_type == "movie_plan" and manifest.stage == "plan"
    assert manifest.media_type == "application/json"
    assert manifest.metadata["tool"] == "script_agent" and manifest.metadata["seed"] == 5
    assert manifest.metadata["request_id"] == answer["request_id"]
    record = json.loads(Path(manifest.local_path).read_text())
    assert set(record) == {"request", "validated_plan", "raw_model_output", "generated_at", "metadata", "schema_uri"}
    assert record["request"] == {**body, "title": None, "aspect": None, "fps": None}
    plan = validate_plan(record["validated_plan"])
    assert plan.plan_id == answer["plan_id"]
    assert validate_plan(json.loads(record["raw_model_output"])) == plan
    assert record["metadata"]["model"] == PLANNER_MODEL and record["metadata"]["attempts"] == 1
    assert record["schema_uri"] == SCHEMA_URI
    assert record["generated_at"].endswith("+00:00")


@pytest.mark.parametrize(("body", "field"), [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "idea", "shots": 50}, "shots"),
    ({"prompt": "idea", "duration_s": 1}, "duration_s"),
    ({"prompt": "idea", "shots": 1, "duration_s": 90}, "duration_s"),
    ({"prompt": "idea", "run_id": "../escape"}, "run_id"),
    ({"prompt": "idea", "colour": "red"}, "colour"),
])
def test_bad_requests_are_422_naming_the_field(service, body: dict, field: str) -> None:
    tool, _ = service
    response = tool.client.post("/invoke", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field
    assert response.json()["request_id"]


def test_common_endpoints(service) -> None:
    tool, _ = service
    assert tool.client.get("/health").json()["status"] == "ok"
    assert tool.client.get("/ready").json()["status"] == "ready"
    meta = tool.client.get("/metadata").json()
    assert meta["tool_id"] == "script_agent" and meta["model"] == PLANNER_MODEL
    assert meta["active_backend"] == "sparkle-offline-planner"
    assert meta["request_schema"]["properties"]["shots"]["anyOf"][0]["maximum"] == 12
    oversized = tool.client.post("/invoke", content=b'{"prompt": "' + b"x" * 70_000 + b'"}',
                                 headers={"Content-Type": "application/json"})
    assert oversized.status_code == 413
    garbage = tool.client.post("/invoke", content=b"{not json", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 422
    assert garbage.json()["error"]["code"] == "invalid_json" and garbage.json()["error"]["field"] == "body"
    undecodable = tool.client.post("/invoke", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert undecodable.status_code in (400, 422) and undecodable.json()["error"]["code"] and \
        undecodable.json()["request_id"]


def test_gemini_profile_without_a_key_is_not_ready_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    for name in NO_KEYS:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings({"SPARKLE_HOME": str(tmp_path)}, profile="gpu")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and "GOOGLE_API_KEY" in ready.json()["error"]["message"]
        response = client.post("/invoke", json={"prompt": "A quiet idea."})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "config_error"
        assert "GOOGLE_API_KEY" in response.json()["error"]["message"]
    assert not any(tmp_path.rglob("*.json"))  # nothing was planned or stored


def test_schema_models_are_the_http_envelopes() -> None:
    assert SCHEMA_MODELS["script_agent.request"] is ScriptAgentRequest
    assert set(SCHEMA_MODELS["script_agent.response"].model_fields) == {
        "status", "artifact_uri", "request_id", "schema_uri", "plan_id", "plan_summary"}
