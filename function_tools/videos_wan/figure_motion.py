"""Moving a storyboard's figures between two keyframes that share a set, instead of cross-dissolving them.

Why: a global cross-dissolve shows, mid-shot, two half-intensity copies of every
figure.  The storyboard backend of images_sdxl records each keyframe's layout in a
PNG text chunk (:data:`LAYOUT_KEY`): framing, the set it shows, each figure's box
and a label mask.  When both keyframes show the same set at the same framing,
the clip is composed from parts:

* the **plate** — the start keyframe with its figures cut out, the holes filled
  from the end keyframe where it shows background there, and what neither shows
  filled from the nearest background pixel in the row;
* each figure present in **both** keyframes as an opaque sprite that travels and
  scales from its start box to its end box (the start's drawing for the first
  half, the end's for the second: the same character, never two copies);
* figures only in the start stay until the last frame, figures only in the end
  appear on it — the end keyframe composes the next shot.

This module only reads the layout format; it imports nothing from images_sdxl.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

#: The PNG text chunk the storyboard writes (function_tools/images_sdxl/figures.py).
LAYOUT_KEY = "sparkle:layout"
MAX_LAYOUT_CHARS = 1_000_000
# Pixels outside every figure that may differ between two keyframes of "one set"
# (coding noise, 4:2:0 chroma at mask edges): mean |difference| per channel.
SHARED_SET_MAX_DIFF = 2.0


@dataclass(frozen=True)
class FigureBox:
    name: str
    label: int
    box: tuple[int, int, int, int]
    mouth: tuple[int, int, int, int] | None = None   # a camera-facing face's mouth box (lip-sync redraws it)


@dataclass(frozen=True)
class KeyframeLayout:
    """What the storyboard recorded about one keyframe (see images_sdxl docs, 'Layout')."""

    framing: str
    set: str
    figures: tuple[FigureBox, ...]
    labels: np.ndarray          # (H, W) uint8: 0 background, k = the figure whose label is k
    caption_box: tuple[int, int, int, int]
    tag_box: tuple[int, int, int, int]


def parse_layout(text: str | None, size: tuple[int, int]) -> KeyframeLayout | None:
    """The layout of a keyframe of ``size``, or None when it carries none (or one that does not fit it)."""
    if not text or len(text) > MAX_LAYOUT_CHARS:
        return None
    try:
        raw: dict[str, Any] = json.loads(text)
        with Image.open(io.BytesIO(base64.b64decode(raw["mask"], validate=True)), formats=("PNG",)) as mask:
            labels = np.asarray(mask.convert("L"))
        figures = tuple(FigureBox(str(f["name"]), int(f["label"]), tuple(int(v) for v in f["box"]),  # type: ignore[arg-type]
                                  _mouth(f.get("mouth")))
                        for f in raw["figures"] if len(f.get("box") or ()) == 4)
        caption_box, tag_box = (tuple(int(v) for v in raw[k][:4]) for k in ("caption_box", "tag_box"))
        layout = KeyframeLayout(str(raw["framing"]), str(raw["set"]), figures, labels,
                                caption_box, tag_box)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, OSError, SyntaxError):
        return None  # a foreign or damaged chunk: the clip falls back to the plain blend
    if labels.shape != (size[1], size[0]):
        return None
    return layout


def _mouth(value: Any) -> tuple[int, int, int, int] | None:
    """A recorded mouth box, or None when the face is not shown (older layouts record none)."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    x0, y0, x1, y1 = (int(v) for v in value)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` dilated by ``pixels`` (so figure edges and their 4:2:0 chroma fringe go with the figure)."""
    image = Image.fromarray(mask.astype(np.uint8) * 255, "L").filter(ImageFilter.MaxFilter(2 * pixels + 1))
    return np.asarray(image) > 0


def shares_set(start: np.ndarray, end: np.ndarray, a: KeyframeLayout, b: KeyframeLayout) -> bool:
    """Same recorded set and framing, and the pixels outside the figures and caption really agree."""
    if a.set != b.set or a.framing != b.framing:
        return False
    outside = ~_grow((a.labels > 0) | (b.labels > 0), 2)
    for x0, y0, x1, y1 in (a.caption_box, b.caption_box, a.tag_box, b.tag_box):
        outside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
    if outside.mean() < 0.05:
        return False
    diff = np.abs(start.astype(np.int16) - end.astype(np.int16))[outside]
    return float(diff.mean()) <= SHARED_SET_MAX_DIFF


def _fill_rows(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Unknown pixels take the nearest known pixel of their row (rows with none: the known mean)."""
    h, w = known.shape
    cols = np.arange(w)[None, :].repeat(h, axis=0)
    left = np.maximum.accumulate(np.where(known, cols, -1), axis=1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(known, cols, w), axis=1), axis=1), axis=1)
    use_left = (left >= 0) & ((right >= w) | (cols - left <= right - cols))
    source = np.where(use_left, left, right)
    rows = np.arange(h)[:, None].repeat(w, axis=1)
    filled = image[rows, np.clip(source, 0, w - 1)]
    empty_rows = ~known.any(axis=1)
    if empty_rows.any():
        filled[empty_rows] = image[known].mean(axis=0).astype(np.uint8) if known.any() else 0
    return np.where(known[..., None], image, filled)


@dataclass(frozen=True)
class _Sprite:
    image: Image.Image   # RGBA, opaque where the figure is
    box: tuple[int, int, int, int]
    name: str = ""
    mouth: tuple[int, int, int, int] | None = None   # in the source keyframe's pixels, like ``box``


def _sprite(frame: np.ndarray, labels: np.ndarray, figure: FigureBox) -> _Sprite:
    x0, y0, x1, y1 = figure.box
    x0, y0 = max(0, x0 - 1), max(0, y0 - 1)
    x1, y1 = min(labels.shape[1], x1 + 1), min(labels.shape[0], y1 + 1)
    alpha = _grow(labels[y0:y1, x0:x1] == figure.label, 1)
    rgba = np.dstack([frame[y0:y1, x0:x1], alpha.astype(np.uint8) * 255])
    return _Sprite(Image.fromarray(rgba, "RGBA"), (x0, y0, x1, y1), figure.name, figure.mouth)


def _placement(start: _Sprite, end: _Sprite | None, progress: float) -> tuple[_Sprite, tuple[int, ...]]:
    """The drawing shown at ``progress`` and the box it is drawn in (start's drawing, then the end's)."""
    if end is None:
        return start, start.box
    box = tuple(round(a + (b - a) * progress) for a, b in zip(start.box, end.box))
    return (start if progress < 0.5 else end), box


class FigureComposer:
    """Frames of a shot between two keyframes of one set: the plate, with the figures moved over it."""

    def __init__(self, start: np.ndarray, end: np.ndarray, start_layout: KeyframeLayout,
                 end_layout: KeyframeLayout) -> None:
        start_fig, end_fig = _grow(start_layout.labels > 0, 2), _grow(end_layout.labels > 0, 2)
        plate = np.where((start_fig & ~end_fig)[..., None], end, start)
        self.plate = Image.fromarray(_fill_rows(plate, ~(start_fig & end_fig)), "RGB")
        # The caption and scene tag are drawn over everything: the start's stay on top until the cut.
        self.overlays = [(box, Image.fromarray(start).crop(box)) for box in (start_layout.caption_box, start_layout.tag_box)
                         if box[2] > box[0] and box[3] > box[1]]
        end_by_name = {f.name: f for f in end_layout.figures if f.name}
        # (start sprite, end sprite or None) in the start's drawing order.
        self.pairs: list[tuple[_Sprite, _Sprite | None]] = []
        for figure in start_layout.figures:
            partner = end_by_name.get(figure.name) if figure.name else None
            self.pairs.append((_sprite(start, start_layout.labels, figure),
                               _sprite(end, end_layout.labels, partner) if partner else None))

    @property
    def moving(self) -> int:
        return sum(1 for _, end in self.pairs if end is not None)

    def frame(self, progress: float) -> Image.Image:
        """The composed picture at ``progress`` (0 = start layout, 1 = end positions of shared figures)."""
        canvas = self.plate.copy()
        for start, end in self.pairs:
            if end is None:
                canvas.paste(start.image, start.box[:2], start.image)
                continue
            source, box = _placement(start, end, progress)
            size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
            sprite = source.image if source.image.size == size else source.image.resize(
                size, Image.Resampling.BILINEAR)
            # Opaque or absent, never half: a half-transparent edge would be a faint ghost.
            mask = sprite.getchannel("A").point(lambda a: 255 if a >= 128 else 0)
            canvas.paste(sprite.convert("RGB"), box[:2], mask)
        for box, overlay in self.overlays:
            canvas.paste(overlay, box[:2])
        return canvas

    def mouths(self, progress: float) -> dict[str, tuple[float, float, float, float]]:
        """Where each named figure's mouth is in :meth:`frame` at ``progress`` (its sprite's move and scale)."""
        found: dict[str, tuple[float, float, float, float]] = {}
        for start, end in self.pairs:
            source, box = _placement(start, end, progress)
            if source.mouth is None or not source.name:
                continue
            sx0, sy0, sx1, sy1 = source.box
            scale_x = max(1, box[2] - box[0]) / max(1, sx1 - sx0)
            scale_y = max(1, box[3] - box[1]) / max(1, sy1 - sy0)
            mx0, my0, mx1, my1 = source.mouth
            found[source.name] = (box[0] + (mx0 - sx0) * scale_x, box[1] + (my0 - sy0) * scale_y,
                                  box[0] + (mx1 - sx0) * scale_x, box[1] + (my1 - sy0) * scale_y)
        return found
