"""validate_plan / plan_violations / load_plan_file / read_plan_json / plan_hash.

The report is complete in one pass: pydantic's field errors and the cross-field
rules are both collected, each as ``{"path", "rule", "message"}`` with a
JSON-path style ``path`` (``shots[1].start_base_image_id``; ``$`` is the root).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sparkle_motion.errors import PlanValidationError
from sparkle_motion.plan.models import MoviePlan, canonical_plan_json
from sparkle_motion.plan.rules import Violation, check_plan_rules, format_path

MAX_PLAN_FILE_BYTES = 5 * 1024 * 1024
# Key under which script_agent's plan artifact stores the plan, next to the request.
PLAN_ARTIFACT_KEY = "validated_plan"
_SUMMARY_ITEMS = 10  # enough for a typical bad plan; details always has everything


# -- pydantic errors → violations -------------------------------------------------------------

def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that holds fields or items."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


def _union_members(node: Any) -> list[type[BaseModel]]:
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        return [m for m in typing.get_args(node) if _is_model(m)]
    return []


def _tag_of(model: type[BaseModel], discriminator: str = "type") -> Any:
    field = model.model_fields.get(discriminator)
    return field.default if field is not None else None


def _walk(loc: Sequence[str | int], root: type[BaseModel]) -> tuple[list[str | int], Any, Any]:
    """Follow ``loc`` through the model tree.

    Returns the location without discriminated-union tags (pydantic puts the tag,
    e.g. 'dialogue', into ``loc``; users never wrote it), the node the last part
    was looked up in (a model class, for extra-field hints) and the final node.
    """
    cleaned: list[str | int] = []
    node: Any = root
    parent: Any = None
    for part in loc:
        node = _unwrap(node) if node is not None else None
        members = _union_members(node)
        if members and isinstance(part, str):
            chosen = next((m for m in members if _tag_of(m) == part), None)
            if chosen is not None:
                node = chosen
                continue
        parent = node
        cleaned.append(part)
        if _is_model(node) and isinstance(part, str):
            field = node.model_fields.get(part)
            node = field.annotation if field is not None else None
        elif typing.get_origin(node) is list and isinstance(part, int):
            node = typing.get_args(node)[0]
        else:
            node = None
    return cleaned, parent, (_unwrap(node) if node is not None else None)


def _scalar_repr(value: Any) -> str | None:
    # Strings and numbers as Python reprs (like the rule messages); true/false/null as the JSON the user wrote.
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (str, int, float)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return None


def _message(error: Mapping[str, Any], parent: Any, final: Any) -> tuple[str, str | None]:
    """(message, extra path part) for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required", None
    if kind == "extra_forbidden":
        name = str(error["loc"][-1]) if error["loc"] else ""
        if _is_model(parent):
            allowed = list(parent.model_fields)
            hint = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
            suffix = f"; did you mean {hint[0]!r}?" if hint else ""
            return f"unknown field (allowed here: {', '.join(allowed)}){suffix}", None
        return "unknown field", None
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        field = str(ctx.get("discriminator", "'type'")).strip("'")
        tags = ", ".join(repr(_tag_of(m, field)) for m in _union_members(final)) or ctx.get("expected_tags", "")
        if kind == "union_tag_not_found":
            return f"is required: says which kind of entry this is (one of {tags})", field
        return f"must be one of {tags} (got {ctx.get('tag')!r})", field
    message = error["msg"]
    if kind == "value_error" and message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind not in ("invalid_id", "invalid_language") and "(got" not in message:
        shown = _scalar_repr(error.get("input"))
        if shown is not None:
            message = f"{message} (got {shown})"
    return message, None


def _join(prefix: str, path: str) -> str:
    if prefix == "$":
        return path
    if path == "$":
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def violations_from_validation_error(exc: ValidationError, model: type[BaseModel] = MoviePlan,
                                     ) -> list[Violation]:
    """Convert pydantic's errors for ``model`` (MoviePlan or a model containing one) into violations."""
    out: list[Violation] = []
    for error in exc.errors(include_url=False):
        cleaned, parent, final = _walk(error["loc"], model)
        where = format_path(cleaned)
        if error["type"] == "plan_rules":
            for violation in (error.get("ctx") or {}).get("violations", []):
                out.append({"path": _join(where, violation["path"]), "rule": violation["rule"],
                            "message": violation["message"]})
            continue
        message, extra_part = _message(error, parent, final)
        if extra_part is not None:
            where = format_path([*cleaned, extra_part])
        out.append({"path": where, "rule": error["type"], "message": message})
    return out


def _field_error_locs(exc: ValidationError) -> list[list[str | int]]:
    return [_walk(error["loc"], MoviePlan)[0] for error in exc.errors(include_url=False)]


_INVALID = object()  # stands in for a value pydantic rejected, so the rules skip it


def _mask(raw: Any, loc: Sequence[str | int]) -> Any:
    if not loc:
        return _INVALID
    head, rest = loc[0], loc[1:]
    if isinstance(raw, Mapping) and isinstance(head, str) and head in raw:
        copy = dict(raw)
        copy[head] = _mask(raw[head], rest)
        return copy
    if isinstance(raw, list) and isinstance(head, int) and 0 <= head < len(raw):
        copy_list = list(raw)
        copy_list[head] = _mask(raw[head], rest)
        return copy_list
    return raw


def _dedupe(violations: list[Violation]) -> list[Violation]:
    seen: set[tuple[str, str]] = set()
    out: list[Violation] = []
    for violation in violations:
        key = (violation["path"], violation["message"])
        if key not in seen:
            seen.add(key)
            out.append(violation)
    return out


# -- public API --------------------------------------------------------------------------------

def _validate(data: Any) -> tuple[MoviePlan | None, list[Violation]]:
    if isinstance(data, MoviePlan):
        # Re-validate from a dump: the instance may come from model_construct or a mutated list.
        data = data.model_dump()
    if not isinstance(data, Mapping):
        return None, [{"path": "$", "rule": "model_type",
                       "message": f"must be a JSON object holding a MoviePlan (got {type(data).__name__})"}]
    try:
        return MoviePlan.model_validate(data), []
    except ValidationError as exc:
        violations = violations_from_validation_error(exc)
        if not any(error["type"] == "plan_rules" for error in exc.errors(include_url=False)):
            # Field errors stop pydantic before the model validator runs the cross-field
            # rules; run them here on the data minus the rejected values.
            masked: Any = data
            for loc in _field_error_locs(exc):
                masked = _mask(masked, loc)
            if isinstance(masked, Mapping):
                violations += check_plan_rules(masked)
        return None, _dedupe(violations)


def summarize(violations: Sequence[Violation]) -> str:
    count = len(violations)
    shown = "; ".join(f"{v['path']}: {v['message']}" for v in violations[:_SUMMARY_ITEMS])
    more = f"; … and {count - _SUMMARY_ITEMS} more" if count > _SUMMARY_ITEMS else ""
    return f"MoviePlan is invalid ({count} violation{'s' if count != 1 else ''}): {shown}{more}"


def _raise(violations: list[Violation], **context: Any) -> typing.NoReturn:
    raise PlanValidationError(summarize(violations), details=[dict(v) for v in violations],
                              context={"violation_count": len(violations), **context})


def plan_violations(data: Mapping[str, Any] | MoviePlan | Any) -> list[dict[str, str]]:
    """Every violation in ``data`` as ``{"path", "rule", "message"}``; empty when the plan is valid."""
    return [dict(v) for v in _validate(data)[1]]


def validate_plan(data: Mapping[str, Any] | MoviePlan) -> MoviePlan:
    """The validated plan, or PlanValidationError whose ``details`` lists every violation."""
    plan, violations = _validate(data)
    if plan is None:
        _raise(violations)
    return plan


def plan_hash(plan: MoviePlan | Mapping[str, Any]) -> str:
    """sha256 (hex) of the plan's canonical JSON; equal plans hash equal whatever their key order."""
    if not isinstance(plan, MoviePlan):
        plan = validate_plan(plan)
    return hashlib.sha256(canonical_plan_json(plan)).hexdigest()


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate keys silently; an edited plan with two
    # "shots" keys would lose one of them without a word.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _file_violation(message: str, rule: str, path: str = "$") -> list[Violation]:
    return [{"path": path, "rule": rule, "message": message}]


def unwrap_plan_artifact(data: Any) -> Any:
    """The MoviePlan inside script_agent's plan artifact ``{"request": ..., "validated_plan": {...}, ...}``;
    anything else (a bare plan, or not a plan at all) as it is."""
    if isinstance(data, dict) and PLAN_ARTIFACT_KEY in data and "shots" not in data:
        return data[PLAN_ARTIFACT_KEY]
    return data


def _read_json(file: Path) -> Any:
    """A plan file's JSON: bounded in size, UTF-8, no duplicate keys, no NaN; PlanValidationError otherwise."""
    context = {"file": str(file)}
    try:
        with file.open("rb") as handle:
            blob = handle.read(MAX_PLAN_FILE_BYTES + 1)  # never read an oversized file whole
    except OSError as exc:
        _raise(_file_violation(f"cannot read plan file: {exc.strerror or exc}", "file_unreadable"), **context)
    if len(blob) > MAX_PLAN_FILE_BYTES:
        _raise(_file_violation(f"plan file is larger than the {MAX_PLAN_FILE_BYTES} byte (5 MiB) limit",
                               "file_too_large"), **context)
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _raise(_file_violation(f"plan file is not UTF-8 text (invalid byte at offset {exc.start})",
                               "invalid_json"), **context)
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _raise(_file_violation(f"invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}",
                               "invalid_json"), **context)
    except _DuplicateKeyError as exc:
        _raise(_file_violation(f"invalid JSON: duplicate key {exc.key!r} in an object", "invalid_json"), **context)
    except ValueError as exc:
        _raise(_file_violation(f"invalid JSON: {exc}", "invalid_json"), **context)


def read_plan_json(path: str | os.PathLike[str]) -> Any:
    """The plan-artifact loader: the plan JSON in a file, taken out of script_agent's plan artifact when
    wrapped in one, **not** validated — for callers that copy a plan verbatim or show an invalid one for
    repair. The file itself is checked as by :func:`load_plan_file` (PlanValidationError with a file rule)."""
    return unwrap_plan_artifact(_read_json(Path(path)))


def load_plan_file(path: str | os.PathLike[str]) -> MoviePlan:
    """Read and validate a plan from a JSON file: a MoviePlan, or script_agent's plan artifact
    ``{"request": ..., "validated_plan": {...}, ...}`` (violations then start with ``validated_plan``)."""
    file = Path(path)
    raw = _read_json(file)
    data = unwrap_plan_artifact(raw)
    prefix = "$" if data is raw else PLAN_ARTIFACT_KEY
    plan, violations = _validate(data)
    if plan is None:
        violations = [{"path": _join(prefix, v["path"]), "rule": v["rule"], "message": v["message"]}
                      for v in violations]
        _raise(violations, file=str(file))
    return plan
