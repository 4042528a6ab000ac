"""The plan review's Cast tab: one portrait upload per character (the notebook's ``make --cast``).

An uploaded image is checked and stored like a ``--cast`` photo
(``artifacts.uploads.put_image_file``: run ``uploads``, type ``reference_image``)
and its artifact id becomes the character's ``reference_image_id`` in the
draft, so the run's cast stage uses it as the portrait.  A refused file is
shown under the widget with its reason; the draft is left as it was.
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from sparkle_motion.artifacts.uploads import IMAGE_MEDIA_TYPES, MAX_IMAGE_BYTES, put_image_file
from sparkle_motion.errors import SparkleError

if TYPE_CHECKING:
    from sparkle_motion.artifacts import ArtifactStore
    from sparkle_motion.notebook.plan_review import PlanReview


def upload_portrait(review: "PlanReview", store: "ArtifactStore", index: int, filename: str,
                    content: bytes) -> str:
    """Store ``content`` as character ``index``'s portrait and set its ``reference_image_id``; the artifact id."""
    if review.draft is None:
        raise KeyError("no plan loaded")
    if len(content) > MAX_IMAGE_BYTES:
        raise SparkleError(f"{filename} is {len(content)} bytes; at most {MAX_IMAGE_BYTES}", code="invalid_input",
                           field=f"characters[{index}].reference_image_id")
    suffix = Path(filename).suffix.lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"portrait{suffix}"
        path.write_bytes(content)
        manifest = put_image_file(store, path, field=f"characters[{index}].reference_image_id")
    review.draft["characters"][index]["reference_image_id"] = manifest.artifact_id
    review._rebuild()
    review.validate()
    return manifest.artifact_id


def cast_rows(review: "PlanReview", store_factory: "Callable[[], ArtifactStore] | None") -> list[widgets.Widget]:
    """One row per character: name, current portrait id and an upload button (none without a store)."""
    characters = [c for c in (review.draft or {}).get("characters") or [] if isinstance(c, dict)]
    if not characters:
        return [widgets.HTML("<i>The plan has no characters.</i>")]
    rows: list[widgets.Widget] = [widgets.HTML(
        "<small>Each character gets a portrait that every keyframe follows; upload one here, or leave it to "
        "be drawn from the description.</small>")]
    for index, character in enumerate(characters):
        current = character.get("reference_image_id")
        label = widgets.HTML(f"<b>{html.escape(str(character.get('name', character.get('id'))))}</b> — "
                             + (f"portrait <code>{html.escape(str(current))}</code>" if current
                                else "<i>drawn from the description</i>"), layout=widgets.Layout(width="40%"))
        if store_factory is None:
            rows.append(label)
            continue
        upload = widgets.FileUpload(accept=",".join(sorted(IMAGE_MEDIA_TYPES)), multiple=False,
                                    description="portrait")
        message = widgets.HTML("")

        def received(change: dict[str, Any], index: int = index, message: widgets.HTML = message) -> None:
            files = change["new"] or ()
            if not files:
                return
            item = files[0]
            try:
                store = store_factory()
                try:
                    upload_portrait(review, store, index, str(item["name"]), bytes(item["content"]))
                finally:
                    store.close()
            except SparkleError as exc:
                message.value = f"<span style='color:#b91c1c'>{html.escape(exc.message)}</span>"

        upload.observe(received, names="value")
        rows.append(widgets.HBox([label, upload, message]))
    return rows
