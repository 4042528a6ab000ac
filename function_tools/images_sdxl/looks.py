"""What a storyboard character looks like — clothes, hair, skin, build — and where that comes from.

Why a module of its own: the cast stage gives every character one portrait, and
the storyboard must draw that character the same way in every keyframe and two
characters differently.  A :class:`Look` is read

- from the character's **portrait** (:func:`look_from_portrait`): the dominant
  colours of the figure's regions.  A storyboard portrait records its figure's
  mask and parts in the PNG layout chunk, so the regions are exact; any other
  image (a user's photo) is read as a front-facing, centred subject: clothes in
  the lower middle, the face in the middle, hair above it;
- else from the character's **description** (:func:`look_from_description`):
  the first colour word is the clothes, a colour word before ``hair``/``haired``
  the hair, build words (``tall``, ``broad``, ``slim`` ...) the silhouette;
  without colour words the clothes hue comes from a hash of name and
  description, so different descriptions give different looks;
- else from the **name** alone (:func:`default_look`, the storyboard's colours
  before portraits existed).

Dominant colour: pixels quantised to 8 levels per channel, the most common bin
wins, its pixels' mean is the colour — a flat region gives back its colour
exactly, a photo's clothes their main colour.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]

LAYOUT_KEY = "sparkle:layout"  # as figures.LAYOUT_KEY (kept here too: figures imports this module)
SKIN_TONES: tuple[RGB, ...] = ((241, 204, 178), (224, 172, 132), (198, 140, 100), (141, 92, 62), (250, 218, 196))
DARK: RGB = (16, 16, 24)

COLOUR_WORDS: dict[str, RGB] = {
    "red": (200, 40, 40), "crimson": (170, 20, 50), "scarlet": (230, 40, 30), "orange": (240, 130, 30),
    "yellow": (240, 210, 40), "gold": (220, 180, 50), "golden": (220, 180, 50), "green": (50, 160, 70),
    "olive": (120, 130, 50), "teal": (30, 140, 140), "cyan": (40, 200, 220), "blue": (40, 80, 200),
    "navy": (20, 30, 100), "purple": (130, 50, 170), "violet": (140, 80, 200), "pink": (240, 120, 170),
    "magenta": (210, 40, 160), "brown": (120, 80, 45), "tan": (200, 160, 110), "beige": (220, 200, 160),
    "white": (235, 235, 235), "grey": (128, 128, 132), "gray": (128, 128, 132), "silver": (190, 190, 200),
    "black": (30, 30, 34), "blonde": (230, 200, 120), "blond": (230, 200, 120), "ginger": (200, 90, 40),
    "auburn": (140, 50, 30),
}
_WORD = re.compile(r"[a-z]+")
# (word pattern, shoulder factor, height factor)
BUILD_WORDS: tuple[tuple[re.Pattern[str], float, float], ...] = (
    (re.compile(r"\b(?:broad|stocky|burly|heavy|muscular|big)\b"), 1.3, 1.0),
    (re.compile(r"\b(?:slim|thin|slender|skinny|wiry)\b"), 0.8, 1.0),
    (re.compile(r"\b(?:tall|lanky)\b"), 1.0, 1.1),
    (re.compile(r"\b(?:short|small|tiny|little|child|kid)\b"), 1.0, 0.85),
)


@dataclass(frozen=True)
class Look:
    body: RGB                  # clothes: the silhouette's fill
    accent: RGB                # rim and name tag
    hair: RGB
    skin: RGB
    shoulders: float = 1.0     # shoulder width factor (silhouette trait)
    height: float = 1.0        # figure height factor
    source: str = "name"       # name | description | portrait

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def character_color(name: str) -> RGB:
    """A stable colour per character name, so a character looks the same in every shot."""
    digest = hashlib.sha256(name.strip().lower().encode("utf-8")).digest()
    hue = digest[0] / 255.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.55 + digest[1] / 1020.0, 0.85 + digest[2] / 2550.0)
    return int(r * 255), int(g * 255), int(b * 255)


def skin_tone(name: str) -> RGB:
    return SKIN_TONES[hashlib.sha256(name.strip().lower().encode("utf-8")).digest()[3] % len(SKIN_TONES)]


def default_look(name: str) -> Look:
    color = character_color(name) if name else (120, 120, 130)
    return Look(body=mix(color, DARK, 0.72), accent=color, hair=mix(color, (20, 16, 12), 0.55),
                skin=skin_tone(name or "?"))


def look_from_description(name: str, description: str) -> Look:
    text = description.lower()
    if not text.strip():
        return default_look(name)
    words = _WORD.findall(text)
    clothes: RGB | None = None
    hair: RGB | None = None
    for i, word in enumerate(words):
        if word not in COLOUR_WORDS:
            continue
        following = words[i + 1] if i + 1 < len(words) else ""
        if following in ("hair", "haired", "hat") and hair is None:
            hair = COLOUR_WORDS[word]
        elif clothes is None:
            clothes = COLOUR_WORDS[word]
    if clothes is None:
        clothes = character_color(f"{name}\n{description}")
    shoulders, height = 1.0, 1.0
    for pattern, s, h in BUILD_WORDS:
        if pattern.search(text):
            shoulders, height = shoulders * s, height * h
    return Look(body=mix(clothes, DARK, 0.3), accent=mix(clothes, (255, 255, 255), 0.25),
                hair=hair or mix(clothes, (20, 16, 12), 0.7), skin=skin_tone(f"{name}\n{description}"),
                shoulders=round(shoulders, 3), height=round(height, 3), source="description")


def dominant_color(pixels: np.ndarray) -> RGB | None:
    """The mean of the most common 32-level colour bin of ``pixels`` (N x 3 uint8); None when empty."""
    if pixels.size == 0:
        return None
    bins = (pixels[:, 0] // 32).astype(np.int32) * 64 + (pixels[:, 1] // 32) * 8 + pixels[:, 2] // 32
    top = int(np.bincount(bins, minlength=512).argmax())
    mean = pixels[bins == top].mean(axis=0)
    return tuple(int(round(float(v))) for v in mean)  # type: ignore[return-value]


def _box_pixels(rgb: np.ndarray, box: list[int] | tuple[int, ...], mask: np.ndarray | None = None) -> np.ndarray:
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (max(0, min(w, box[0])), max(0, min(h, box[1])), max(0, min(w, box[2])), max(0, min(h, box[3])))
    region = rgb[y0:y1, x0:x1].reshape(-1, 3)
    if mask is None:
        return region
    return region[mask[y0:y1, x0:x1].reshape(-1)]


def portrait_regions(image: Image.Image) -> dict[str, Any]:
    """Where a portrait shows clothes (``torso``), face and hair: from its storyboard layout, else a centred subject.

    Returns boxes (x0, y0, x1, y1) and, for a storyboard portrait, the figure's
    mask; ``source`` says which reading applied.  The QA check reads the same
    regions (its own copy of this rule: no tool imports another).
    """
    w, h = image.size
    layout_text = image.info.get(LAYOUT_KEY) if hasattr(image, "info") else None
    if layout_text:
        try:
            layout = json.loads(layout_text)
            figure = next(f for f in layout.get("figures", []) if f.get("facing") == "camera" and f.get("torso"))
            hx0, hy0, hx1, hy1 = figure["head"]
            return {"source": "layout", "torso": figure["torso"], "figure": figure,
                    "hair": [hx0, hy0, hx1, hy0 + (hy1 - hy0) * 3 // 10],
                    "skin": [hx0 + (hx1 - hx0) // 4, hy0 + (hy1 - hy0) // 2, hx1 - (hx1 - hx0) // 4,
                             hy0 + (hy1 - hy0) * 3 // 4]}
        except (ValueError, KeyError, StopIteration, TypeError):
            pass  # not a storyboard portrait after all: read it as a photo
    return {"source": "centred", "torso": [w * 3 // 10, h * 3 // 4, w * 7 // 10, h],
            "hair": [w * 7 // 20, h * 3 // 100, w * 13 // 20, h * 15 // 100],
            "skin": [w * 2 // 5, h * 7 // 20, w * 3 // 5, h * 11 // 20]}


def look_from_portrait(image: Image.Image) -> Look:
    """The look a portrait shows: dominant colours of its clothes, hair and face regions; build from its layout."""
    regions = portrait_regions(image)
    rgb = np.asarray(image.convert("RGB"))
    body = dominant_color(_box_pixels(rgb, regions["torso"])) or (90, 90, 96)
    hair = dominant_color(_box_pixels(rgb, regions["hair"])) or mix(body, (20, 16, 12), 0.5)
    skin = dominant_color(_box_pixels(rgb, regions["skin"])) or SKIN_TONES[0]
    figure = regions.get("figure") or {}
    build = figure.get("look") or {}
    accent = tuple(build["accent"]) if isinstance(build.get("accent"), list) else mix(body, (255, 255, 255), 0.35)
    return Look(body=body, accent=accent, hair=hair, skin=skin,  # type: ignore[arg-type]
                shoulders=float(build.get("shoulders", 1.0)), height=float(build.get("height", 1.0)),
                source="portrait")
