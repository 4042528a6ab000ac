"""Inline previews of production artifacts: image, audio and video widgets built from local bytes.

The rows come from production_agent's ``GET /artifacts``; their ``local_path``
is only trusted after it resolves inside the artifact root (a response must not
make the notebook read arbitrary files), the file is smaller than the preview
limit for its kind, and its bytes match the row's sha256.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from sparkle_motion.errors import IntegrityError, InvalidInputError, PathEscapeError, PayloadTooLargeError

__all__ = [
    "MAX_PREVIEW_BYTES", "MAX_TEXT_PREVIEW_BYTES", "artifact_row", "media_kind", "preview_widget",
    "read_artifact_bytes", "resolve_local_path", "stage_section",
]

# Widget values travel to the browser over the kernel's comm channel and are saved
# into the notebook's widget state; beyond these sizes a link is the better offer.
MAX_PREVIEW_BYTES: dict[str, int] = {"image": 20 << 20, "audio": 50 << 20, "video": 200 << 20}
MAX_TEXT_PREVIEW_BYTES = 64 << 10
TEXT_SNIPPET_CHARS = 1500
IMAGE_WIDTH_PX = 240
VIDEO_WIDTH_PX = 480

# ipywidgets' Image/Audio/Video ``format`` is the subtype the browser is told.
_WIDGET_FORMATS = {
    "image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/gif": "gif",
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mpeg": "mp3", "audio/aac": "aac",
    "audio/ogg": "ogg", "audio/flac": "flac",
    "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov",
}


def media_kind(media_type: str) -> str | None:
    """'image', 'audio' or 'video' for the media types a widget can play, else None."""
    kind = media_type.split("/", 1)[0]
    return kind if kind in MAX_PREVIEW_BYTES and media_type in _WIDGET_FORMATS else None


def resolve_local_path(entry: Mapping[str, Any], root: Path) -> Path:
    """The row's ``local_path``, resolved, refused unless it lies inside ``root`` and is a file."""
    raw = entry.get("local_path")
    if not raw or not isinstance(raw, str):
        raise InvalidInputError(f"artifact {entry.get('uri', '?')} has no local_path", field="local_path")
    root = root.resolve()
    path = Path(raw).resolve()
    if path != root and root not in path.parents:
        raise PathEscapeError(f"local_path {raw!r} is outside the artifact root {root}", field="local_path",
                              context={"uri": entry.get("uri")})
    if not path.is_file():
        raise InvalidInputError(f"local_path {raw!r} does not exist (pruned?)", field="local_path",
                                context={"uri": entry.get("uri")})
    return path


def read_artifact_bytes(entry: Mapping[str, Any], root: Path, limit: int) -> bytes:
    """The artifact's bytes from ``local_path``, size-capped and checked against the row's sha256."""
    path = resolve_local_path(entry, root)
    size = path.stat().st_size
    if size > limit:
        raise PayloadTooLargeError(f"{path.name} is {size} bytes; inline previews stop at {limit}",
                                   field="local_path", context={"uri": entry.get("uri"), "size_bytes": size})
    data = path.read_bytes()
    expected = entry.get("sha256") or str(entry.get("checksum", "")).removeprefix("sha256:")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise IntegrityError(f"{path.name} does not match its recorded sha256", field="local_path",
                             context={"uri": entry.get("uri"), "expected": expected})
    return data


def preview_widget(entry: Mapping[str, Any], root: Path) -> widgets.Widget | None:
    """An Image/Audio/Video widget for a media row, a text snippet for small JSON/text, else None.

    Errors (missing file, too large, checksum) raise: the caller shows them next to the row.
    """
    media_type = str(entry.get("media_type", ""))
    kind = media_kind(media_type)
    if kind is not None:
        data = read_artifact_bytes(entry, root, MAX_PREVIEW_BYTES[kind])
        fmt = _WIDGET_FORMATS[media_type]
        if kind == "image":
            return widgets.Image(value=data, format=fmt, width=IMAGE_WIDTH_PX)
        if kind == "audio":
            return widgets.Audio(value=data, format=fmt, autoplay=False, loop=False, controls=True)
        return widgets.Video(value=data, format=fmt, width=VIDEO_WIDTH_PX, autoplay=False, loop=False,
                             controls=True)
    if media_type in ("application/json", "application/x-subrip") or media_type.startswith("text/"):
        data = read_artifact_bytes(entry, root, MAX_TEXT_PREVIEW_BYTES)
        text = data.decode("utf-8", errors="replace")
        if media_type == "application/json":
            try:
                text = json.dumps(json.loads(text), indent=1, ensure_ascii=False)
            except json.JSONDecodeError:
                pass  # shown as stored
        if len(text) > TEXT_SNIPPET_CHARS:
            text = text[:TEXT_SNIPPET_CHARS] + "\n…"
        return widgets.HTML(f"<details><summary>contents</summary><pre style='max-height:16em;overflow:auto'>"
                            f"{html.escape(text)}</pre></details>")
    return None


def describe(entry: Mapping[str, Any]) -> str:
    parts = [f"<b>{html.escape(str(entry.get('artifact_type', '?')))}</b>",
             html.escape(str(entry.get("media_type", "?")))]
    size = entry.get("size_bytes")
    if isinstance(size, int):
        parts.append(f"{size / 1024:.1f} KiB")
    duration = entry.get("duration_s")
    if isinstance(duration, (int, float)):
        parts.append(f"{duration:.2f} s")
    if entry.get("width") and entry.get("height"):
        parts.append(f"{entry['width']}×{entry['height']}")
    shot = (entry.get("metadata") or {}).get("shot_id")
    if shot:
        parts.append(f"shot {html.escape(str(shot))}")
    return " · ".join(parts) + f"<br><code style='font-size:85%'>{html.escape(str(entry.get('uri', '')))}</code>"


def artifact_row(entry: Mapping[str, Any], root: Path) -> widgets.Widget:
    """One artifact: its description, then its preview (or why there is none)."""
    label = widgets.HTML(describe(entry))
    try:
        preview = preview_widget(entry, root)
    except (InvalidInputError, PayloadTooLargeError, IntegrityError) as exc:
        preview = widgets.HTML(f"<span style='color:#b45309'>no preview: {html.escape(exc.message)}</span>")
    children = [label] if preview is None else [label, preview]
    return widgets.VBox(children, layout=widgets.Layout(border="1px solid #ddd", padding="4px", margin="2px"))


def stage_section(stage: Mapping[str, Any], root: Path, *, max_items: int) -> widgets.Widget:
    """A stage's header (count, types) and up to ``max_items`` rows, media first."""
    entries: Sequence[Mapping[str, Any]] = stage.get("artifacts") or []
    ordered = sorted(entries, key=lambda e: media_kind(str(e.get("media_type", ""))) is None)
    shown = ordered[:max_items]
    header = (f"<h4 style='margin:6px 0'>{html.escape(str(stage.get('stage')))} — {stage.get('count', len(entries))} "
              f"artifact(s): {html.escape(', '.join(stage.get('artifact_types') or []))}</h4>")
    rows: list[widgets.Widget] = [widgets.HTML(header)]
    rows += [artifact_row(e, root) for e in shown]
    if len(ordered) > len(shown):
        rows.append(widgets.HTML(f"<i>… and {len(ordered) - len(shown)} more (filter by stage to see them)</i>"))
    return widgets.VBox(rows)
