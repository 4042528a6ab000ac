"""How the storyboard frames its characters: the shot type read from the prompt, and the figures it draws.

Why a module of its own: the framing decides three things a cut must keep
consistent — how large a figure stands and where the frame crops it, how far the
background is zoomed and softened, and the *layout* the storyboard records in
its PNG (figure boxes, heads, mouths and a label mask).  ``keyframe_motion``
reads that layout to move figures between two keyframes instead of
cross-dissolving them, and the lip-sync mux reads the mouth boxes; both only
read the PNG text chunk :data:`LAYOUT_KEY`, so no tool imports another.

Figure model: a figure of full height ``s`` has a head of radius ``s/10``,
shoulders ``0.4 s`` wide and its waist at ``0.6 s`` from the top of the head.
Wide and full shots stand the whole figure on the ground; medium shots crop at
the waist, close-ups at the chest (head and shoulders large in frame), and an
over-the-shoulder shot puts a second, back-turned figure large in the foreground.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from function_tools.images_sdxl.looks import SKIN_TONES, Look, character_color, default_look, mix, skin_tone

__all__ = ["LAYOUT_KEY", "SKIN_TONES", "FigureLayer", "Framing", "character_color", "describe_framing", "mix",
           "skin_tone"]

RGB = tuple[int, int, int]

#: PNG text chunk holding the frame's layout (JSON); readers: videos_wan keyframe_motion, lipsync mux.
LAYOUT_KEY = "sparkle:layout"
LAYOUT_VERSION = 1

# Earliest mention wins ("close-up portrait ... in the distance" is a close-up).
FRAMING_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("over_the_shoulder", re.compile(r"\bover[\s-]+(?:the[\s-]+|his[\s-]+|her[\s-]+)?shoulders?\b|\bOTS\b", re.I)),
    ("close_up", re.compile(r"\b(?:extreme[\s-]+)?close[\s-]?ups?\b|\bportrait\b|\bhead[\s-]?shot\b|"
                            r"\bhead[\s-]+and[\s-]+shoulders\b", re.I)),
    ("medium", re.compile(r"\bmedium\b|\bmid[\s-]+shot\b|\bwaist[\s-]+up\b|\bcowboy[\s-]+shot\b", re.I)),
    ("wide", re.compile(r"\bwide\b|\bestablishing\b|\blong[\s-]+shot\b|\bin[\s-]+the[\s-]+distance\b|"
                        r"\bsmall[\s-]+in[\s-]+the[\s-]+frame\b|\baerial\b|\bextreme[\s-]+long\b", re.I)),
)


@dataclass(frozen=True)
class Framing:
    """How one shot type frames its figures and its background."""

    name: str
    height_of_frame: float   # figure full height / frame height (feet-anchored shots)
    crop: float              # fraction of the figure visible from the head top down (cropped shots); 0 = whole
    head_top: float          # head top / frame height (cropped shots)
    background_zoom: float   # the set seen through a longer lens: zoomed about the horizon ...
    background_blur: float   # ... and softened (radius as a fraction of the short side)


FRAMINGS: dict[str, Framing] = {
    "wide": Framing("wide", 0.24, 0.0, 0.0, 1.0, 0.0),
    "full": Framing("full", 0.42, 0.0, 0.0, 1.0, 0.0),
    "medium": Framing("medium", 0.0, 0.62, 0.14, 1.3, 0.003),
    "close_up": Framing("close_up", 0.0, 0.45, 0.1, 1.7, 0.008),
    "over_the_shoulder": Framing("over_the_shoulder", 0.0, 0.5, 0.16, 1.5, 0.006),
}


def describe_framing(prompt: str) -> Framing:
    """The shot type the prompt names (earliest mention); none named → a full-length ``full`` shot."""
    best: tuple[int, str] | None = None
    for name, pattern in FRAMING_PATTERNS:
        match = pattern.search(prompt)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    return FRAMINGS[best[1] if best else "full"]


@dataclass
class Figure:
    """One drawn character: where it stands and its parts, in frame pixels (recorded in the layout)."""

    name: str
    label: int                      # value of this figure in the label mask (1-based)
    cx: int
    head_center: tuple[int, int]
    head_radius: int
    facing: str                     # "camera" or "away" (the foreground figure of an over-the-shoulder shot)
    box: list[int] = field(default_factory=list)    # bbox of the figure's mask pixels, x0, y0, x1, y1 (exclusive)
    mouth: list[int] = field(default_factory=list)  # the mouth's box; empty when the face is not shown
    torso: list[int] = field(default_factory=list)  # a box of clothes only (appearance checks); may be empty
    look: Look | None = None

    def as_json(self) -> dict[str, Any]:
        hx, hy = self.head_center
        r = self.head_radius
        return {"name": self.name, "label": self.label, "facing": self.facing, "box": self.box,
                "head": [hx - r, hy - r, hx + r + 1, hy + r + 1], "mouth": self.mouth, "torso": self.torso,
                "look": self.look.as_json() if self.look else None}


class _Pen:
    """Draws each shape on the frame and, with the figure's label, on the label mask."""

    def __init__(self, image: Image.Image, mask: Image.Image) -> None:
        self.draw = ImageDraw.Draw(image)
        self.mask = ImageDraw.Draw(mask)

    def shape(self, kind: str, xy: Any, label: int, *, fill: RGB, outline: RGB | None = None, width: int = 1,
              **kw: Any) -> None:
        getattr(self.draw, kind)(xy, fill=fill, outline=outline, width=width, **kw)
        getattr(self.mask, kind)(xy, fill=label, outline=label if outline else None, width=width, **kw)


def mouth_box(hx: int, hy: int, r: int) -> list[int]:
    """The mouth's box on a camera-facing head: the lip-sync mux redraws exactly this region."""
    half_w, half_h = max(1, r * 3 // 10), max(1, r * 3 // 20)
    my = hy + r * 9 // 20
    return [hx - half_w, my - half_h, hx + half_w + 1, my + half_h + 1]


def draw_mouth(draw: ImageDraw.ImageDraw, box: list[int], openness: float, *, lips: RGB, inside: RGB = (60, 20, 24),
               ) -> None:
    """A closed mouth is a line; an open one an ellipse whose height follows ``openness`` (0..1)."""
    x0, y0, x1, y1 = box
    cy = (y0 + y1 - 1) / 2
    line = max(1, (y1 - y0) // 4)
    if openness <= 0.05:
        draw.line((x0 + 1, cy, x1 - 2, cy), fill=lips, width=line)
        return
    half = max(1.0, (y1 - y0 - 1) / 2 * min(1.0, openness))
    draw.ellipse((x0 + 1, cy - half, x1 - 2, cy + half), fill=inside, outline=lips, width=line)


def draw_face(draw: ImageDraw.ImageDraw, hx: int, hy: int, r: int, *, hair: RGB, skin: RGB) -> list[int]:
    """Eyes, brows and a closed mouth on a head of radius ``r``; returns the mouth box (empty if too small)."""
    if r < 5:
        return []
    dark = (24, 20, 26)
    ex, ey, er = max(2, r * 7 // 20), hy - r // 10, max(1, r // 9)
    for side in (-1, 1):
        x = hx + side * ex
        draw.ellipse((x - er, ey - er, x + er, ey + er), fill=dark)
        by = ey - max(2, r // 5)
        draw.line((x - er * 2, by, x + er * 2, by - side * max(0, r // 24)), fill=mix(hair, dark, 0.4),
                  width=max(1, r // 12))
    box = mouth_box(hx, hy, r)
    draw_mouth(draw, box, 0.0, lips=mix(skin, (150, 50, 60), 0.6))
    return box


def encode_mask(mask: Image.Image) -> str:
    buf = io.BytesIO()
    mask.save(buf, format="PNG", optimize=False, compress_level=9)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_mask(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text)), formats=("PNG",)) as image:
        return np.asarray(image.convert("L"))


class FigureLayer:
    """Places and draws the characters of one frame for its framing; keeps the label mask and the layout."""

    def __init__(self, image: Image.Image, framing: Framing, *, horizon: int, rng: np.random.Generator,
                 unit: int) -> None:
        self.image, self.framing, self.horizon, self.rng = image, framing, horizon, rng
        self.w, self.h = image.size
        self.outline = max(1, unit)
        self.mask = Image.new("L", image.size, 0)
        self.figures: list[Figure] = []
        self.looks: dict[str, Look] = {}
        self.caption_top = self.h

    def _size_and_top(self, count: int, floor: int) -> tuple[int, int]:
        """Figure full height and head-top y for ``count`` figures side by side."""
        column = self.w / max(count, 1)
        max_by_width = 2.1 * column            # shoulders (0.4 s) fill at most ~85% of a column
        fr = self.framing
        if fr.crop:
            wanted = (self.h - fr.head_top * self.h) / fr.crop
            size = min(wanted, max_by_width)
            return int(size), int(self.h - fr.crop * size)
        size = min(fr.height_of_frame * self.h, max_by_width * 0.8, floor * 0.8)
        return int(size), floor - int(size)

    def draw(self, names: list[str], font: ImageFont.FreeTypeFont, label_px: int, caption_top: int,
             looks: dict[str, Look] | None = None) -> None:
        """Draw ``names`` left to right (each in its ``looks`` entry, else its name's colours)."""
        if not names:
            return
        self.looks = looks or {}
        self.caption_top = caption_top
        pen = _Pen(self.image, self.mask)
        if self.framing.name == "over_the_shoulder":
            subject, others = names[0], names[1:]
            self._over_the_shoulder(pen, subject, others[0] if others else None, font, label_px)
            return
        n = len(names)
        # Feet stand on the ground, above the caption band, so nothing is hidden behind the text.
        ground = self.horizon + (min(caption_top, self.h) - self.horizon) * 3 // 5
        for i, name in enumerate(names):
            jitter = float(self.rng.uniform(-0.3, 0.3)) * self.w / (2 * (n + 1))
            cx = int(self.w * (i + 1) / (n + 1) + jitter)
            foot = ground + int(self.rng.integers(0, max(1, (caption_top - ground) // 4)))
            size, top = self._size_and_top(n, foot)
            self._figure(pen, name, len(self.figures) + 1, cx, top, size, facing="camera", font=font,
                         label_px=label_px)

    def _over_the_shoulder(self, pen: _Pen, subject: str, foreground: str | None, font: ImageFont.FreeTypeFont,
                           label_px: int) -> None:
        size, top = self._size_and_top(2, self.h)
        self._figure(pen, subject, 1, int(self.w * 0.64), top, size, facing="camera", font=font, label_px=label_px)
        # The listener, back to camera, large and cropped at the left edge.
        big = int(size * 1.5)
        self._figure(pen, foreground or "", 2, int(self.w * 0.14), int(self.h * 0.34), big, facing="away",
                     font=font, label_px=label_px)

    def _figure(self, pen: _Pen, name: str, label: int, cx: int, top: int, size: int, *, facing: str,
                font: ImageFont.FreeTypeFont, label_px: int) -> None:
        look = self.looks.get(name) or default_look(name)
        color = look.accent
        body = look.body   # a silhouette, tinted so characters stay distinguishable
        if facing == "away":
            body = mix(body, (0, 0, 0), 0.35)
        rim, skin = color, look.skin
        if not self.framing.crop:  # a taller or shorter figure keeps its feet where they were
            foot = top + size
            size = int(size * look.height)
            top = foot - size
        foot = top + size
        head = max(2, size // 10)
        hx, hy = cx, top + head
        shoulder, hip = int(size // 5 * look.shoulders), int(size // 8 * look.shoulders)
        torso_top, torso_bottom = hy + head + head // 4, foot - size * 2 // 5
        width = self.outline
        pen.shape("polygon", [(cx - shoulder, torso_top), (cx + shoulder, torso_top), (cx + hip, torso_bottom),
                              (cx - hip, torso_bottom)], label, fill=body, outline=rim, width=width)
        # The neck joins head and shoulders so a cropped figure reads as one body.
        pen.shape("rectangle", (cx - head // 2, hy, cx + head // 2, torso_top + width), label, fill=body)
        leg = max(2, hip * 2 // 3)
        pen.shape("rectangle", (cx - hip, torso_bottom, cx - hip + leg, foot), label, fill=body, outline=rim,
                  width=width)
        pen.shape("rectangle", (cx + hip - leg, torso_bottom, cx + hip, foot), label, fill=body, outline=rim,
                  width=width)
        hair = look.hair
        head_box = (hx - head, hy - head, hx + head, hy + head)
        mouth: list[int] = []
        if facing == "away":
            pen.shape("ellipse", head_box, label, fill=hair, outline=rim, width=width)
        else:
            pen.shape("ellipse", head_box, label, fill=skin, outline=rim, width=width)
            # Hair: a cap above the line through the head at 20 degrees, clear of the eyes.
            pen.draw.chord(head_box, 200, 340, fill=hair)
            mouth = draw_face(pen.draw, hx, hy, head, hair=hair, skin=skin)
        inset = width + 1
        torso = [cx - hip + inset, torso_top + inset, cx + hip - inset, min(torso_bottom - inset, self.caption_top)]
        torso = [max(0, torso[0]), max(0, torso[1]), min(self.w, torso[2]), min(self.h, torso[3])]
        figure = Figure(name, label, cx, (hx, hy), head, facing, mouth=mouth,
                        torso=torso if torso[2] - torso[0] > 1 and torso[3] - torso[1] > 1 else [], look=look)
        if name and facing == "camera":
            self._name_tag(pen, figure, font, label_px, color)
        self.figures.append(figure)

    def _name_tag(self, pen: _Pen, figure: Figure, font: ImageFont.FreeTypeFont, label_px: int, color: RGB) -> None:
        """The name above the head, clamped inside the frame (part of the figure's mask: it moves with it)."""
        tw = int(font.getlength(figure.name))
        pad = max(2, label_px // 4)
        hx, hy = figure.head_center
        lx = min(max(hx - tw // 2, pad), self.w - tw - pad)
        ly = max(hy - figure.head_radius - label_px - 3 * pad, pad)
        pen.shape("rounded_rectangle", (lx - pad, ly - pad, lx + tw + pad, ly + label_px + pad), figure.label,
                  fill=color, outline=(20, 20, 20), radius=pad)
        text_fill = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        pen.draw.text((lx, ly), figure.name, font=font, fill=text_fill)

    def layout(self, *, set_key: str, caption_box: list[int], tag_box: list[int]) -> dict[str, Any]:
        """The JSON the PNG records: framing, set, each figure's parts and the label mask."""
        # The tag and caption are drawn over the figures: those pixels are not the figure's.
        for x0, y0, x1, y1 in (caption_box, tag_box):
            self.mask.paste(0, (x0, y0, x1, y1))
        labels = np.asarray(self.mask)
        for figure in self.figures:
            ys, xs = np.nonzero(labels == figure.label)
            figure.box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else []
        return {"version": LAYOUT_VERSION, "framing": self.framing.name, "set": set_key,
                "width": self.w, "height": self.h, "caption_box": caption_box, "tag_box": tag_box,
                "figures": [f.as_json() for f in self.figures], "mask": encode_mask(self.mask)}
