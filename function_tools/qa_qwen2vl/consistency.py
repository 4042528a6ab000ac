"""``character_consistency`` on the ``signal`` backend: is the character in this keyframe the one in their portrait?

The measurement: an **appearance distance** between the character's clothes
region in the keyframe and in the portrait — the Hellinger distance between
their colour histograms (``bins`` levels per RGB channel, normalised), 0 for the
same colours, 1 for disjoint ones.  The keyframe's region is the figure's
``torso`` box that the storyboard records in the PNG layout chunk
(``sparkle:layout``); the portrait's is its own layout's camera-facing figure,
or — for a photo — the lower middle of the frame (x 30-70 %, y 75-100 %), where
a front-facing portrait shows clothes.  A keyframe without a layout (an ``sdxl``
render) has no known region: the check is ``inconclusive`` there, and the
``qwen2-vl`` backend answers it by looking instead.

When it applies (:func:`faces_camera`): keyframes only (images, never video
frames), and per character only when the prompt names the character *and* says
they face the camera — ``facing (the) camera``, ``faces/looks at/into (the)
camera``, ``to (the) camera``, ``front-facing`` or ``close-up``/``portrait`` of
them — and does not say they turn away (``back to the camera``, ``facing away``,
``from behind``).  A figure the layout draws facing away is skipped too.  A
keyframe where no character qualifies passes with that said, and so does one
asked without portraits (``expectations.characters`` empty): production may
ask the check of every keyframe and send portraits only when the plan has them.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from function_tools.qa_qwen2vl.report import QACheckResult

LAYOUT_KEY = "sparkle:layout"  # images_sdxl's figures.LAYOUT_KEY (no tool imports another)
MAX_PIXELS = 4096 * 4096
_FACING = re.compile(r"\bfac(?:e|es|ing)\s+(?:the\s+)?(?:camera|viewer|lens)\b|\blooks?\s+(?:at|into)\s+(?:the\s+)?"
                     r"(?:camera|lens)\b|\bto\s+(?:the\s+)?camera\b|\bfront[\s-]+facing\b|\bclose[\s-]?ups?\b|"
                     r"\bportrait\b|\bhead[\s-]?shot\b", re.I)
_AWAY = re.compile(r"\bback\s+to\s+(?:the\s+)?camera\b|\bfacing\s+away\b|\bfrom\s+behind\b|\bturn(?:s|ed|ing)?\s+"
                   r"away\b", re.I)


def faces_camera(prompt: str, name: str) -> bool:
    """Does the prompt name ``name`` and say they face the camera (and not that they turn away)?"""
    if not re.search(rf"\b{re.escape(name)}\b", prompt, re.I):
        return False
    return bool(_FACING.search(prompt)) and not _AWAY.search(prompt)


def colour_histogram(pixels: np.ndarray, bins: int) -> np.ndarray:
    """Normalised joint RGB histogram of ``pixels`` (N x 3 uint8), ``bins`` levels per channel, soft-binned.

    Each pixel is shared between the two nearest bin centres of each channel
    (trilinear weights), so a flat colour near a bin edge — shifted a level or
    two by 4:2:0 chroma or JPEG — does not jump to another bin.
    """
    pos = np.clip(pixels.astype(np.float64) * bins / 256.0 - 0.5, 0.0, bins - 1.0)
    low = np.minimum(np.floor(pos).astype(np.int64), bins - 2 if bins > 1 else 0)
    frac = pos - low
    hist = np.zeros(bins ** 3, dtype=np.float64)
    for corner in range(8):
        offs = [(corner >> k) & 1 for k in range(3)]
        weight = np.ones(len(pixels))
        index = np.zeros(len(pixels), dtype=np.int64)
        for k, off in enumerate(offs):
            weight = weight * (frac[:, k] if off else 1.0 - frac[:, k])
            index = index * bins + np.minimum(low[:, k] + off, bins - 1)
        hist += np.bincount(index, weights=weight, minlength=bins ** 3)
    return hist / max(1e-12, hist.sum())


def appearance_distance(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Hellinger distance between the colour histograms of two pixel sets (0 same colours .. 1 disjoint)."""
    ha, hb = colour_histogram(a, bins), colour_histogram(b, bins)
    return float(np.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(ha * hb))))))


def read_layout(image: Image.Image) -> dict[str, Any] | None:
    text = image.info.get(LAYOUT_KEY)
    if not text:
        return None
    try:
        layout = json.loads(text)
    except ValueError:
        return None
    return layout if isinstance(layout, dict) else None


def _mask(layout: dict[str, Any]) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(base64.b64decode(layout["mask"])), formats=("PNG",)) as mask:
            return np.asarray(mask.convert("L"))
    except (KeyError, ValueError, OSError, UnidentifiedImageError):
        return None


def region_pixels(rgb: np.ndarray, box: list[int], mask: np.ndarray | None = None, label: int | None = None
                  ) -> np.ndarray:
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (max(0, min(w, int(box[0]))), max(0, min(h, int(box[1]))),
                      max(0, min(w, int(box[2]))), max(0, min(h, int(box[3]))))
    pixels = rgb[y0:y1, x0:x1].reshape(-1, 3)
    if mask is not None and label is not None and mask.shape == rgb.shape[:2]:
        pixels = pixels[mask[y0:y1, x0:x1].reshape(-1) == label]
    return pixels


def figure_pixels(image: Image.Image, name: str | None) -> tuple[np.ndarray | None, str]:
    """The clothes pixels of ``name``'s camera-facing figure (any camera-facing one when None); why not when None."""
    layout = read_layout(image)
    if layout is None:
        return None, "no storyboard layout: the character's region is unknown"
    figure = next((f for f in layout.get("figures", [])
                   if (name is None or str(f.get("name", "")).casefold() == name.casefold())
                   and f.get("facing") == "camera" and f.get("torso")), None)
    if figure is None:
        return None, "the layout shows no camera-facing figure" + (f" named {name!r}" if name else "")
    rgb = np.asarray(image.convert("RGB"))
    pixels = region_pixels(rgb, figure["torso"], _mask(layout), figure.get("label"))
    return (pixels, "") if pixels.size else (None, "the figure's clothes are hidden")


def portrait_pixels(image: Image.Image) -> np.ndarray:
    """The portrait's clothes: its layout's figure, else the lower middle of a front-facing photo."""
    pixels, _ = figure_pixels(image, None)
    if pixels is not None:
        return pixels
    w, h = image.size
    return region_pixels(np.asarray(image.convert("RGB")), [w * 3 // 10, h * 3 // 4, w * 7 // 10, h])


def _open(path: Path) -> Image.Image:
    image = Image.open(path)
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise ValueError(f"image is {image.width}x{image.height}; at most {MAX_PIXELS} pixels")
    image.load()
    return image


def check_character_consistency(keyframe: Path, media_uri: str, prompt: str,
                                portraits: list[tuple[str, Path]], *, max_distance: float, bins: int
                                ) -> QACheckResult:
    """One keyframe against the portraits of the characters it should show (see the module doc for the rule)."""
    name = "character_consistency"
    if not portraits:
        return QACheckResult(name=name, status="passed", media_uri=media_uri, threshold=max_distance,
                             detail="no portraits given (expectations.characters); nothing to compare")
    checked = [(who, path) for who, path in portraits if faces_camera(prompt, who)]
    if not checked:
        return QACheckResult(name=name, status="passed", media_uri=media_uri, threshold=max_distance,
                             detail="no character the prompt names faces the camera; nothing to compare")
    try:
        frame = _open(keyframe)
    except (OSError, ValueError, SyntaxError) as exc:
        return QACheckResult(name=name, status="inconclusive", media_uri=media_uri,
                             detail=f"keyframe could not be decoded: {exc}")
    distances: dict[str, float] = {}
    missing: list[str] = []
    with frame:
        for who, path in checked:
            pixels, why = figure_pixels(frame, who)
            if pixels is None:
                missing.append(f"{who}: {why}")
                continue
            try:
                with _open(path) as portrait:
                    reference = portrait_pixels(portrait)
            except (OSError, ValueError, SyntaxError) as exc:
                missing.append(f"{who}: portrait could not be decoded ({exc})")
                continue
            distances[who] = round(appearance_distance(pixels, reference, bins), 4)
    worst = max(distances.values(), default=None)
    far = sorted(who for who, d in distances.items() if d > max_distance)
    metrics = {"distances": distances, "skipped": missing, "bins": bins}
    if far:
        return QACheckResult(name=name, status="failed", score=worst, threshold=max_distance, media_uri=media_uri,
                             metrics=metrics, detail=f"{', '.join(far)} look(s) unlike their portrait "
                             f"(appearance distance {worst:.3f} > {max_distance})")
    if not distances:
        return QACheckResult(name=name, status="inconclusive", media_uri=media_uri, threshold=max_distance,
                             metrics=metrics, detail="; ".join(missing))
    return QACheckResult(name=name, status="passed", score=worst, threshold=max_distance, media_uri=media_uri,
                         metrics=metrics, detail=f"appearance distance at most {worst:.3f} (limit {max_distance})")
