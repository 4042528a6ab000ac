"""schemas_export: the committed schemas/ matches the models; export is deterministic; tool discovery."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from sparkle_motion.config import ToolEntry
from sparkle_motion.errors import ConfigError
from sparkle_motion.plan import MoviePlan
from sparkle_motion.schemas_export import check_schemas, export_schemas, render_schema, schema_models

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def test_committed_schemas_match_the_models() -> None:
    out_of_date = check_schemas(REPO_SCHEMAS)
    assert out_of_date == [], (
        f"schemas/ is out of date for {out_of_date}; run `sparkle-motion schemas export` and commit schemas/")


def test_committed_movieplan_schema_matches_the_model() -> None:
    # Separate from the whole-folder check so a stale tool envelope cannot hide a MoviePlan change.
    assert (REPO_SCHEMAS / "MoviePlan.schema.json").read_bytes() == render_schema(MoviePlan)


def test_movieplan_schema_describes_the_contract() -> None:
    schema = json.loads((REPO_SCHEMAS / "MoviePlan.schema.json").read_text())
    assert schema["title"] == "MoviePlan"
    assert set(schema["required"]) == {"title", "base_images", "shots", "dialogue_timeline", "render_profile"}
    defs = schema["$defs"]
    assert defs["VideoProfile"]["required"] == ["model_id"]
    assert defs["VideoProfile"]["additionalProperties"] is False
    assert defs["PlanMetadata"]["additionalProperties"] is True
    timeline = schema["properties"]["dialogue_timeline"]["items"]
    assert timeline["discriminator"]["propertyName"] == "type"
    assert set(timeline["discriminator"]["mapping"]) == {"dialogue", "silence"}
    assert "type" in defs["SilenceEntry"]["required"]


def test_export_is_deterministic_and_removes_stale_files(tmp_path: Path) -> None:
    class Extra(BaseModel):
        name: str

    models = {"MoviePlan": MoviePlan, "extra.request": Extra}
    (tmp_path / "gone.schema.json").write_text("{}")
    (tmp_path / "README.md").write_text("kept")
    paths = export_schemas(tmp_path, models)
    assert [p.name for p in paths] == ["MoviePlan.schema.json", "extra.request.schema.json"]
    assert not (tmp_path / "gone.schema.json").exists() and (tmp_path / "README.md").exists()
    first = {p.name: p.read_bytes() for p in paths}
    assert first["MoviePlan.schema.json"] == render_schema(MoviePlan)
    assert first["MoviePlan.schema.json"].endswith(b"}\n")
    text = first["extra.request.schema.json"].decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    export_schemas(tmp_path, models)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.schema.json")} == first
    assert check_schemas(tmp_path, models) == []


def test_check_reports_changed_missing_and_stale(tmp_path: Path) -> None:
    class Extra(BaseModel):
        name: str

    models = {"MoviePlan": MoviePlan, "extra.request": Extra}
    assert check_schemas(tmp_path / "absent", models) == ["MoviePlan", "extra.request"]
    export_schemas(tmp_path, models)
    (tmp_path / "MoviePlan.schema.json").write_text((tmp_path / "MoviePlan.schema.json").read_text() + " ")
    (tmp_path / "extra.request.schema.json").unlink()
    (tmp_path / "old.response.schema.json").write_text("{}")
    assert check_schemas(tmp_path, models) == ["MoviePlan", "extra.request", "old.response"]


@pytest.fixture()
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real package of tool modules on sys.path, the shape schema_models imports."""
    pkg = tmp_path / "fake_mesh"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "with_spec.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from pydantic import BaseModel

        class PingRequest(BaseModel):
            text: str

        class PingResponse(BaseModel):
            echoed: str

        @dataclass
        class Spec:
            tool_id: str
            request_model: type
            response_model: type

        SPEC = Spec("ping", PingRequest, PingResponse)
    """))
    (pkg / "with_models.py").write_text(textwrap.dedent("""
        from pydantic import BaseModel

        class StatusResponse(BaseModel):
            run_id: str

        SCHEMA_MODELS = {"agent.status": StatusResponse}
    """))
    (pkg / "broken.py").write_text("import a_dependency_nobody_installed\n")
    (pkg / "bad_spec.py").write_text("class SPEC:\n    request_model = dict\n    response_model = dict\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def entry(tool_id: str, module: str) -> ToolEntry:
    return ToolEntry(tool_id=tool_id, port=1, module=module, backends=())


def test_schema_models_reads_spec_and_schema_models(fake_tools: Path) -> None:
    models = schema_models({
        "ping": entry("ping", "fake_mesh.with_spec"),
        "agent": entry("agent", "fake_mesh.with_models"),
        "later": entry("later", "fake_mesh.not_written_yet"),
        "later_pkg": entry("later_pkg", "fake_mesh_missing_pkg.service"),
    })
    assert list(models) == ["MoviePlan", "agent.status", "ping.request", "ping.response"]
    assert models["ping.request"].__name__ == "PingRequest"
    assert models["agent.status"].__name__ == "StatusResponse"


def test_schema_models_raises_when_a_written_module_fails_to_import(fake_tools: Path) -> None:
    with pytest.raises(ConfigError) as info:
        schema_models({"broken": entry("broken", "fake_mesh.broken")})
    assert "fake_mesh.broken" in info.value.message
    assert "a_dependency_nobody_installed" in info.value.context["cause"]
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_schema_models_refuses_a_spec_without_pydantic_models(fake_tools: Path) -> None:
    with pytest.raises(ConfigError, match="must be a pydantic model class"):
        schema_models({"bad": entry("bad", "fake_mesh.bad_spec")})


def test_schema_models_for_the_registry_includes_movieplan() -> None:
    assert schema_models()["MoviePlan"] is MoviePlan
