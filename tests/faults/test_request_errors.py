"""Every request error is a 4xx naming the field: out-of-range numbers sent to every numeric field.

The numeric fields are read from each service's published /openapi.json (the
request body schema, nested objects and arrays included), so a field added
later is covered without touching this test.  Each gets an integer literal over
Python's 4,300-digit int-string limit and ``1e308`` (and ``-1e308``); the
answer must be a 422 whose ``error.field`` (or one of its ``details``) is that
field's JSON path.  The services run in-process (FastAPI TestClient) with their
cpu backends loaded.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sparkle_motion.services import create_app

BIG_INT = "9" * 4301
TOOLS = ["echo", "images_sdxl", "videos_wan", "tts_chatterbox", "lipsync_wav2lip", "assemble_ffmpeg", "qa_qwen2vl"]
AGENTS = {"script_agent": "sparkle_motion.agents.script_service",
          "production_agent": "sparkle_motion.agents.production_service"}


def build_app(name: str) -> FastAPI:
    if name in AGENTS:
        return importlib.import_module(AGENTS[name]).create_app()  # type: ignore[no-any-return]
    return create_app(importlib.import_module(f"function_tools.{name}.service").SPEC)


@pytest.fixture(params=TOOLS + list(AGENTS))
def service(request: pytest.FixtureRequest, sparkle_home: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("SPARKLE_PROFILE", "cpu")
    with TestClient(build_app(request.param)) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.1)
        yield client


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def numeric_paths(schema: dict[str, Any], doc: dict[str, Any], path: tuple[Any, ...] = (),
                  seen: frozenset[str] = frozenset()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path, 'integer'|'number') of every numeric field; a list index is 0."""
    ref = schema.get("$ref")
    if ref in seen:
        return
    seen = seen | {ref} if ref else seen
    schema = _resolve(schema, doc)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from numeric_paths(sub, doc, path, seen)
    if schema.get("type") in ("integer", "number"):
        yield path, schema["type"]
    for name, sub in schema.get("properties", {}).items():
        yield from numeric_paths(sub, doc, (*path, name), seen)
    if isinstance(schema.get("items"), dict):
        yield from numeric_paths(schema["items"], doc, (*path, 0), seen)
    for i, sub in enumerate(schema.get("prefixItems", [])):
        yield from numeric_paths(sub, doc, (*path, i), seen)


def body_with(path: tuple[Any, ...], literal: str) -> str:
    """A JSON body holding ``literal`` (raw, unquoted) at ``path``; everything else absent."""
    text = literal
    for part in reversed(path):
        if isinstance(part, int):
            text = "[" + ", ".join(["0"] * part + [text]) + "]"
        else:
            text = f'{{"{part}": {text}}}'
    return text


def json_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def named_fields(body: dict[str, Any]) -> set[str]:
    error = body["error"]
    return {error.get("field")} | {d.get("field") for d in error.get("details", [])}


def test_out_of_range_numbers_are_422_naming_the_field(service: TestClient) -> None:
    doc = service.get("/openapi.json").json()
    checked = 0
    for route, item in doc["paths"].items():
        operation = item.get("post")
        if not operation or "requestBody" not in operation:
            continue
        if "application/json" not in operation["requestBody"]["content"]:
            continue  # a raw body (the artifact upload, application/octet-stream) has no JSON numbers
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        for path, _kind in numeric_paths(schema, doc):
            field = json_path(path)
            for literal in (BIG_INT, f"-{BIG_INT}", "1e308", "-1e308", "1e400"):
                response = service.post(route, content=body_with(path, literal),
                                        headers={"content-type": "application/json"})
                assert response.status_code == 422, (route, field, literal[:8], response.text[:300])
                assert field in named_fields(response.json()), (route, field, literal[:8], response.json())
                checked += 1
    if service.app.title == "production_agent":  # type: ignore[attr-defined]
        # The plan travels as a free-form object: its numbers meet the same parser.
        response = service.post("/invoke", content=body_with(("plan", "metadata", "seed"), BIG_INT),
                                headers={"content-type": "application/json"})
        assert response.status_code == 422 and response.json()["error"]["field"] == "plan.metadata.seed"
        response = service.get("/runs", params={"limit": BIG_INT})
        assert response.status_code == 422 and "limit" in response.json()["error"]["field"]
        checked += 2
    assert checked > 0


def test_seed_and_duration_are_bounded_in_every_schema() -> None:
    """The fields the issue names: seeds and durations have a finite maximum in the published schema."""
    from function_tools.images_sdxl.models import ImagesSdxlRequest
    from function_tools.videos_wan.models import VideosWanRequest
    from sparkle_motion.agents.script_service import ScriptAgentRequest

    for model, fields in ((ImagesSdxlRequest, ["seed"]), (VideosWanRequest, ["seed", "duration_s"]),
                          (ScriptAgentRequest, ["seed", "duration_s"])):
        props = model.model_json_schema()["properties"]
        for field in fields:
            numeric = next(s for s in props[field].get("anyOf", [props[field]]) if s.get("type") != "null")
            assert "maximum" in numeric or "exclusiveMaximum" in numeric, (model.__name__, field, numeric)


def test_json_string_is_not_an_integer_and_2_0_is(service: TestClient) -> None:
    doc = service.get("/openapi.json").json()
    operation = doc["paths"]["/invoke"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    ints = [p for p, kind in numeric_paths(schema, doc) if kind == "integer" and len(p) == 1]
    for path in ints:
        response = service.post("/invoke", content=body_with(path, '"5"'), headers={"content-type": "application/json"})
        assert response.status_code == 422 and json_path(path) in named_fields(response.json()), response.text


def test_with_a_token_the_contract_needs_it_and_says_so(sparkle_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "t" * 32
    monkeypatch.setenv("SPARKLE_TOKEN", token)
    with TestClient(build_app("echo")) as client:
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/docs").status_code == 401
        assert client.get("/health").status_code == 200
        doc = client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in doc["paths"]["/invoke"]["post"]["responses"]
    assert doc["paths"]["/health"]["get"]["security"] == [] and "401" not in doc["paths"]["/health"]["get"]["responses"]
