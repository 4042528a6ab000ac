"""A plan's user files (portraits, voice clips, music) are checked at intake: missing or wrong kind is a 422 naming
the field, and no run is created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sparkle_motion.agents.plan_artifacts import check_plan_artifacts
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.plan import validate_plan
from sparkle_motion.runs import RunRegistry
from sparkle_motion.testing import running_tool

PLANS = Path(__file__).parent / "data" / "plans"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def plan(**character_fields: Any) -> dict[str, Any]:
    data = json.loads((PLANS / "rooftop_valid.json").read_text())
    data["characters"][1].update(character_fields)
    return data


@pytest.fixture
def store(tmp_path: Path):
    store = ArtifactStore(tmp_path / "home")
    yield store
    store.close()


def test_a_portrait_the_store_holds_passes_and_one_it_does_not_is_named(store: ArtifactStore) -> None:
    photo = store.put("uploads", "uploads", "reference_image", PNG, "image/png", ext=".png")
    check_plan_artifacts(validate_plan(plan(reference_image_id=photo.artifact_id)), store)
    with pytest.raises(InvalidInputError) as missing:
        check_plan_artifacts(validate_plan(plan(reference_image_id="art_nothing_here")), store)
    assert missing.value.field == "characters[1].reference_image_id"


def test_an_artifact_of_the_wrong_kind_is_refused(store: ArtifactStore) -> None:
    text = store.put("uploads", "uploads", "notes", b"not a picture", "text/plain", ext=".txt")
    with pytest.raises(InvalidInputError) as wrong:
        check_plan_artifacts(validate_plan(plan(reference_image_id=text.artifact_id)), store)
    assert wrong.value.field == "characters[1].reference_image_id" and "text/plain" in wrong.value.message


def test_production_agent_refuses_a_missing_portrait_with_a_422_and_creates_no_run(tmp_path: Path) -> None:
    env = {"SPARKLE_PROFILE": "cpu", "SPARKLE_TOKEN": None}
    with running_tool("production_agent", home=tmp_path, env=env, ready_timeout=120) as agent:
        refused = agent.client.post("/invoke", json={"plan": plan(reference_image_id="art_nothing_here")},
                                    timeout=60)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "characters[1].reference_image_id"
    assert RunRegistry(tmp_path / "sparkle.db").list_runs() == []
