"""Cross-field MoviePlan rules, checked on plain JSON-like data.

These rules relate fields to each other (keyframe continuity, timeline coverage,
references), so pydantic field validation cannot express them.  They read the
raw mapping rather than a model instance on purpose: when some field is already
invalid no model exists, yet the user still deserves the complete list of what
is wrong in one pass.  Every value is therefore read defensively; anything
malformed is skipped here because the field validation already reports it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

MAX_SHOTS = 200
MAX_CHARACTERS = 50
MAX_TIMELINE_ENTRIES = 2000
MAX_SHOT_DURATION_S = 60.0
MAX_RUNTIME_S = 30 * 60.0
MAX_DIALOGUE_CHARS = 1000
# Timings come from humans and LLMs writing decimals: 1 ms absorbs float
# rounding without hiding a real gap (one frame at 60 fps is ~16.7 ms).
TIMELINE_TOLERANCE_S = 0.001
_EPS = 1e-9


class Violation(TypedDict):
    """One broken rule: where (JSON path), which rule (stable code), and why."""

    path: str
    rule: str
    message: str


_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_path(loc: Sequence[str | int]) -> str:
    """``('shots', 1, 'start_base_image_id')`` → ``shots[1].start_base_image_id``; ``()`` → ``$``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT_RE.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{_quote(part)}]"
    return out or "$"


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fmt_seconds(value: float) -> str:
    """Seconds for messages: millisecond precision without trailing zeros (8.4, 0, 17.5)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _violation(path: str, rule: str, message: str) -> Violation:
    return {"path": path, "rule": rule, "message": message}


def _items(raw: Mapping[str, Any], key: str) -> list[Any] | None:
    value = raw.get(key)
    return value if isinstance(value, list) else None


def _str_field(item: Any, key: str) -> str | None:
    if isinstance(item, Mapping):
        value = item.get(key)
        if isinstance(value, str):
            return value
    return None


def _num_field(item: Any, key: str) -> float | None:
    """A finite number, read the way pydantic's lax mode reads it (numeric strings too)."""
    if not isinstance(item, Mapping):
        return None
    value = item.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def check_plan_rules(raw: Mapping[str, Any]) -> list[Violation]:
    """Every cross-field violation in ``raw`` (a plan as JSON-like data), in a stable order."""
    violations: list[Violation] = []
    characters = _items(raw, "characters")
    base_images = _items(raw, "base_images")
    shots = _items(raw, "shots")
    timeline = _items(raw, "dialogue_timeline")

    for name, items in (("characters", characters), ("base_images", base_images), ("shots", shots)):
        violations += _unique_ids(name, items or [])
    if shots is not None and base_images is not None:
        violations += _keyframe_chain(shots, base_images)
    runtime = _runtime(shots)
    if runtime is not None and runtime > MAX_RUNTIME_S + TIMELINE_TOLERANCE_S:
        violations.append(_violation(
            "shots", "runtime_limit",
            f"total runtime {fmt_seconds(runtime)} s exceeds the limit of {fmt_seconds(MAX_RUNTIME_S)} s (30 min)",
        ))
    if timeline is not None:
        violations += _timeline_coverage(timeline, runtime)
        if characters is not None:
            violations += _dialogue_speakers(timeline, characters)
    return violations


def _unique_ids(name: str, items: list[Any]) -> list[Violation]:
    out: list[Violation] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        item_id = _str_field(item, "id")
        if item_id is None:
            continue
        if item_id in first_index:
            out.append(_violation(
                f"{name}[{index}].id", "duplicate_id",
                f"duplicate id {item_id!r} (already used by {name}[{first_index[item_id]}].id); ids must be unique",
            ))
        else:
            first_index[item_id] = index
    return out


def _keyframe_chain(shots: list[Any], base_images: list[Any]) -> list[Violation]:
    """Shot i runs from keyframe i to keyframe i+1, so consecutive shots share a frame."""
    out: list[Violation] = []
    if shots and len(base_images) != len(shots) + 1:
        out.append(_violation(
            "base_images", "base_image_count",
            f"must hold len(shots) + 1 = {len(shots) + 1} images (shot i runs base_images[i] → "
            f"base_images[i+1]), got {len(base_images)}",
        ))
    known = {i for i in (_str_field(b, "id") for b in base_images) if i is not None}
    for index, shot in enumerate(shots):
        for field, frame in (("start_base_image_id", index), ("end_base_image_id", index + 1)):
            if frame >= len(base_images):
                continue  # the count violation above already says the image is missing
            expected = _str_field(base_images[frame], "id")
            actual = _str_field(shot, field)
            if expected is None or actual is None or actual == expected:
                continue
            suffix = "" if actual in known else ", which is not the id of any base image"
            out.append(_violation(
                f"shots[{index}].{field}", "keyframe_continuity",
                f"must equal base_images[{frame}].id ({expected!r}), got {actual!r}{suffix}",
            ))
    return out


def _runtime(shots: list[Any] | None) -> float | None:
    if not shots:
        return None
    durations = [_num_field(shot, "duration_sec") for shot in shots]
    if any(d is None for d in durations):
        return None
    return math.fsum(durations)  # type: ignore[arg-type]


def _timeline_coverage(timeline: list[Any], runtime: float | None) -> list[Violation]:
    """The timeline tiles [0, runtime]: starts at 0, no gaps, no overlaps, ends at the runtime."""
    out: list[Violation] = []
    if not timeline:
        if runtime is not None:
            out.append(_violation(
                "dialogue_timeline", "timeline_end",
                f"is empty but must cover the whole runtime of {fmt_seconds(runtime)} s "
                "(use a 'silence' entry where nobody speaks)",
            ))
        return out
    expected: float | None = 0.0  # where the next entry must start; None after an unreadable entry
    last_end: float | None = None
    for index, entry in enumerate(timeline):
        start = _num_field(entry, "start_time_sec")
        duration = _num_field(entry, "duration_sec")
        if start is None or duration is None:
            expected = last_end = None
            continue
        path = f"dialogue_timeline[{index}].start_time_sec"
        if expected is not None and abs(start - expected) > TIMELINE_TOLERANCE_S + _EPS:
            if index == 0:
                out.append(_violation(
                    path, "timeline_start",
                    f"the timeline must start at 0 s but starts at {fmt_seconds(start)} s "
                    f"(add a 'silence' entry covering 0–{fmt_seconds(start)} s)",
                ))
            elif start > expected:
                out.append(_violation(
                    path, "timeline_gap",
                    f"starts at {fmt_seconds(start)} s, leaving a gap of {fmt_seconds(start - expected)} s after "
                    f"dialogue_timeline[{index - 1}], which ends at {fmt_seconds(expected)} s; entries must be "
                    "contiguous (fill gaps with 'silence' entries)",
                ))
            else:
                out.append(_violation(
                    path, "timeline_overlap",
                    f"starts at {fmt_seconds(start)} s, before dialogue_timeline[{index - 1}] ends at "
                    f"{fmt_seconds(expected)} s; entries must be ordered by start time and must not overlap",
                ))
        expected = last_end = start + duration
    if runtime is not None and last_end is not None and abs(last_end - runtime) > TIMELINE_TOLERANCE_S + _EPS:
        last = len(timeline) - 1
        out.append(_violation(
            f"dialogue_timeline[{last}]", "timeline_end",
            f"the timeline ends at {fmt_seconds(last_end)} s (start_time_sec + duration_sec) but the shots run "
            f"{fmt_seconds(runtime)} s; it must end at the sum of shot durations (±1 ms)",
        ))
    return out


def _dialogue_speakers(timeline: list[Any], characters: list[Any]) -> list[Violation]:
    known = [c for c in (_str_field(ch, "id") for ch in characters) if c is not None]
    out: list[Violation] = []
    for index, entry in enumerate(timeline):
        if _str_field(entry, "type") != "dialogue":
            continue
        speaker = _str_field(entry, "character_id")
        if speaker is None or speaker in known:
            continue
        listing = ", ".join(repr(k) for k in known) if known else "none: the plan defines no characters"
        out.append(_violation(
            f"dialogue_timeline[{index}].character_id", "unknown_character",
            f"refers to unknown character {speaker!r} (known: {listing})",
        ))
    return out
