"""ProductionClient against a real production_agent process: typed answers, typed errors with their endpoint.

Only production_agent runs; the profile points every other tool at a free port, so a real run
fails fast in its first tool stage. The whole-mesh paths (a film, its final entry) are covered
by the CLI, notebook and e2e tests, which drive runs through this client.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkle_motion.agents.production_client import (
    ENDED_STATUSES,
    FINAL_FILM_TYPE,
    ProductionClient,
    RunWaitTimeout,
    find_artifact,
)
from sparkle_motion.agents.production_models import ArtifactsView, ProductionAccepted, RunStatus
from sparkle_motion.errors import ToolCallError
from sparkle_motion.runs.models import RunRecord
from sparkle_motion.testing import RunningTool, free_port, running_tool, write_test_profile

PLANS = Path(__file__).parent / "data" / "plans"


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> RunningTool:
    home = tmp_path_factory.mktemp("production-client")
    profile = write_test_profile(home)
    with running_tool("production_agent", home=home,
                      env={"SPARKLE_PROFILE": str(profile), "SPARKLE_TOKEN": None}) as tool:
        yield tool


@pytest.fixture
def client(production: RunningTool) -> ProductionClient:
    with ProductionClient(base_url=production.url, token="", retries=0) as production_client:
        yield production_client


@pytest.fixture(scope="module")
def plan() -> dict:
    return json.loads((PLANS / "rooftop_valid.json").read_text())


def test_dry_run_status_artifacts_and_listing_are_models(client, plan):
    accepted = client.plan(plan=plan, qa_mode="skip")
    assert isinstance(accepted, ProductionAccepted)
    assert accepted.mode == "dry" and accepted.status == "succeeded" and accepted.qa_mode == "skip"
    assert accepted.invocation_graph and accepted.resource_estimate

    status = client.status(accepted.run_id)
    assert isinstance(status, RunStatus) and status.status == "succeeded" and status.mode == "dry"
    assert client.wait_for_status(accepted.run_id, ENDED_STATUSES, timeout=5).run_id == accepted.run_id

    view = client.artifacts(accepted.run_id)
    assert isinstance(view, ArtifactsView) and view.run_id == accepted.run_id and view.artifacts == []
    assert client.final_film(accepted.run_id) is None  # a dry run renders nothing

    runs = client.runs(limit=500)
    assert all(isinstance(r, RunRecord) for r in runs)
    assert accepted.run_id in {r.run_id for r in runs}


def test_a_real_run_is_started_watched_and_fails_with_its_stage(client, plan):
    accepted = client.start(plan=plan, qa_mode="full")
    assert accepted.mode == "run" and accepted.status == "running"
    seen = list(client.watch(accepted.run_id, interval=0.1, timeout=120))
    assert seen[-1].status == "failed" and all(s.status not in ENDED_STATUSES for s in seen[:-1])
    assert seen[-1].error["stage"] not in (None, "plan_intake")  # the first tool stage: no tool is up
    # The stored plan is the run's intake artifact; the run has no final film.
    view = client.artifacts(accepted.run_id, "plan_intake")
    assert [s.stage for s in view.stages] == ["plan_intake"]
    assert find_artifact(view, "movie_plan_request") is not None
    assert find_artifact(view, FINAL_FILM_TYPE) is None


def test_errors_are_typed_and_name_their_endpoint(client, production, plan):
    with pytest.raises(ToolCallError) as missing:
        client.status("run_doesnotexist")
    assert missing.value.status == 404 and missing.value.remote_error["code"] == "not_found"
    assert missing.value.context["endpoint"] == f"GET {production.url}/status"

    with pytest.raises(ToolCallError) as invalid:
        client.start()  # no plan, no plan_uri, no run_id: the service's validation answers
    assert invalid.value.status == 422 and invalid.value.context["endpoint"] == f"POST {production.url}/invoke"

    dry = client.plan(plan=plan)
    with pytest.raises(ToolCallError) as refused:
        client.control("pause", dry.run_id)
    assert refused.value.status == 409 and refused.value.remote_error["code"] == "invalid_state"
    assert refused.value.context["endpoint"] == f"POST {production.url}/control/pause"

    with pytest.raises(RunWaitTimeout) as late:
        client.wait_for_status(dry.run_id, {"paused"}, timeout=0.3, interval=0.05)
    assert late.value.context["status"] == "succeeded"


def test_unreachable_service_is_a_typed_error():
    with ProductionClient(base_url=f"http://127.0.0.1:{free_port()}", token="", retries=0) as client:
        with pytest.raises(ToolCallError) as info:
            client.artifacts("run_x")
    assert info.value.code == "tool_unreachable"
    assert info.value.context["endpoint"].startswith("GET http://127.0.0.1:") and \
        info.value.context["endpoint"].endswith("/artifacts")
