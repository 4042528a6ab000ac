"""Export the JSON Schema of MoviePlan and of every tool's request/response envelope.

``schemas/`` is committed so that clients (notebooks, other languages, LLM
output schemas) can use the contract without importing Python; a test compares
it with what the models export, and ``sparkle-motion schemas export`` rewrites it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sparkle_motion.config import ToolEntry, load_settings
from sparkle_motion.errors import ConfigError
from sparkle_motion.ids import is_valid_id
from sparkle_motion.plan import MoviePlan

SCHEMA_SUFFIX = ".schema.json"


def _module_exists(module: str) -> bool:
    """False when ``module`` (or a parent package) is not written yet; True when it can be imported.

    ``find_spec`` imports parent packages, so a missing parent raises instead of
    returning None; only a missing piece of ``module``'s own dotted path counts as
    "not written yet" — a missing third-party import inside it is a real error.
    """
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return False
        raise


def _as_model(value: Any, where: str) -> type[BaseModel]:
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        raise ConfigError(f"{where} must be a pydantic model class, got {value!r:.80}")
    return value


def _add(models: dict[str, type[BaseModel]], name: str, model: type[BaseModel], where: str) -> None:
    if not is_valid_id(name):
        raise ConfigError(f"{where}: schema name {name!r} is not usable as a file name")
    if name in models and models[name] is not model:
        raise ConfigError(f"{where}: schema name {name!r} is already taken by {models[name].__qualname__}")
    models[name] = model


def schema_models(tools: Mapping[str, ToolEntry] | None = None) -> dict[str, type[BaseModel]]:
    """MoviePlan plus every envelope the registry's tool modules declare, by schema name.

    For each tool: ``SPEC.request_model`` / ``SPEC.response_model`` become
    ``<tool_id>.request`` / ``<tool_id>.response``, and a module-level
    ``SCHEMA_MODELS`` dict adds its own names.  A module that does not exist yet
    is skipped; one that exists but fails to import raises ConfigError.
    """
    if tools is None:
        tools = load_settings().tools
    models: dict[str, type[BaseModel]] = {"MoviePlan": MoviePlan}
    for tool_id, entry in sorted(tools.items()):
        if not _module_exists(entry.module):
            continue
        try:
            module = importlib.import_module(entry.module)
        except Exception as exc:
            raise ConfigError(f"cannot import {entry.module} (tool {tool_id!r}) to export its schemas: {exc}",
                              context={"tool_id": tool_id, "module": entry.module,
                                       "cause": f"{type(exc).__name__}: {exc}"}) from exc
        spec = getattr(module, "SPEC", None)
        if spec is not None:
            where = f"{entry.module}.SPEC"
            _add(models, f"{tool_id}.request", _as_model(getattr(spec, "request_model", None),
                                                         f"{where}.request_model"), where)
            _add(models, f"{tool_id}.response", _as_model(getattr(spec, "response_model", None),
                                                          f"{where}.response_model"), where)
        extra = getattr(module, "SCHEMA_MODELS", None)
        if extra is not None:
            where = f"{entry.module}.SCHEMA_MODELS"
            if not isinstance(extra, Mapping):
                raise ConfigError(f"{where} must be a dict of name → pydantic model")
            for name, model in sorted(extra.items()):
                _add(models, str(name), _as_model(model, f"{where}[{name!r}]"), where)
    return dict(sorted(models.items()))


def render_schema(model: type[BaseModel]) -> bytes:
    """Deterministic bytes: sorted keys, indent 2, UTF-8, trailing newline."""
    schema = model.model_json_schema(mode="validation")
    return (json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _expected(models: Mapping[str, type[BaseModel]] | None) -> dict[str, bytes]:
    chosen = schema_models() if models is None else models
    return {f"{name}{SCHEMA_SUFFIX}": render_schema(model) for name, model in chosen.items()}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_schemas(out_dir: Path, models: Mapping[str, type[BaseModel]] | None = None) -> list[Path]:
    """Write ``<name>.schema.json`` for every model into ``out_dir`` and delete stale ones.

    Returns the schema files, sorted.  Unchanged files are not rewritten.
    """
    out_dir = Path(out_dir)
    expected = _expected(models)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"*{SCHEMA_SUFFIX}"):
        if stale.name not in expected:
            stale.unlink()
    paths = []
    for file_name, data in sorted(expected.items()):
        path = out_dir / file_name
        if not path.is_file() or path.read_bytes() != data:
            _write_atomic(path, data)
        paths.append(path)
    return paths


def check_schemas(out_dir: Path, models: Mapping[str, type[BaseModel]] | None = None) -> list[str]:
    """Schema names whose file in ``out_dir`` differs, is missing or is stale (no model); empty when in sync."""
    out_dir = Path(out_dir)
    expected = _expected(models)
    present = {p.name: p for p in out_dir.glob(f"*{SCHEMA_SUFFIX}")} if out_dir.is_dir() else {}
    problems = [name for name, data in expected.items()
                if name not in present or present[name].read_bytes() != data]
    problems += [name for name in present if name not in expected]
    return sorted(name[: -len(SCHEMA_SUFFIX)] for name in problems)
