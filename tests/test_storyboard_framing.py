"""Storyboard framing over HTTP against the real images_sdxl process: shot types, faces, tall and square frames.

Figures are measured from the PNG pixels: the same request is rendered with and
without its characters (the scenery is seeded by the scene alone, so the two
frames differ only where the figures and their name tags stand).  The layout the
PNG records is checked against those pixels, never trusted on its own.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from function_tools.images_sdxl.figures import LAYOUT_KEY, describe_framing
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import RunningTool
from tool_fixtures import module_tool_fixtures

pytestmark = pytest.mark.xdist_group("images_sdxl_framing")

RUN = "framing-test"
PLACE = "at the rooftop, at night, cinematic lighting"

home, tool, store = module_tool_fixtures("images_sdxl")


def render(tool: RunningTool, store: ArtifactStore, prompt: str, characters: list[str], size: tuple[int, int],
           seed: int = 5) -> tuple[np.ndarray, dict[str, Any]]:
    reply = tool.client.post("/invoke", json={"run_id": RUN, "prompt": prompt, "seed": seed, "width": size[0],
                                              "height": size[1], "characters": characters}, timeout=60)
    assert reply.status_code == 200, reply.text
    path = store.path_for(reply.json()["images"][0]["artifact"]["uri"])
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int32), json.loads(image.text[LAYOUT_KEY])


def figure_pixels(tool: RunningTool, store: ArtifactStore, prompt: str, characters: list[str],
                  size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(frame, mask of the pixels the characters changed, layout)."""
    with_figures, layout = render(tool, store, prompt, characters, size)
    without, _ = render(tool, store, prompt, [], size)
    return with_figures, np.abs(with_figures - without).max(axis=2) > 12, layout


def extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    hits = np.nonzero(mask.sum(axis=axis) >= 2)[0]
    assert hits.size, "no figure pixels"
    return int(hits[0]), int(hits[-1]) + 1


@pytest.mark.parametrize(("prompt", "framing"), [
    ("Close-up portrait of Tess (woman in a navy peacoat), facing camera, at the rooftop", "close_up"),
    ("Wide shot of the rooftop, Tess in the distance", "wide"),
    ("Wide establishing view of the harbour; Tess small in the frame", "wide"),
    ("Medium shot of Tess and Omar at the rooftop", "medium"),
    ("Closing medium-wide shot as Tess and Omar walk", "medium"),
    ("Over-the-shoulder shot on Tess as Omar listens", "over_the_shoulder"),
    ("Final frame: Tess and Omar together at the rooftop", "full"),
])
def test_the_prompt_names_the_shot_type(prompt: str, framing: str) -> None:
    assert describe_framing(prompt).name == framing


def test_close_up_figure_is_at_least_2_5x_the_wide_figure(tool: RunningTool, store: ArtifactStore) -> None:
    size = (640, 360)
    _, close, close_layout = figure_pixels(tool, store, f"Close-up portrait of Tess, facing camera, {PLACE}",
                                           ["Tess"], size)
    _, wide, wide_layout = figure_pixels(tool, store, f"Wide shot of the rooftop, Tess in the distance, {PLACE}",
                                         ["Tess"], size)
    close_top, close_bottom = extent(close, axis=1)
    wide_top, wide_bottom = extent(wide, axis=1)
    close_h, wide_h = close_bottom - close_top, wide_bottom - wide_top
    assert close_h >= 2.5 * wide_h, (close_h, wide_h)
    # Head and shoulders large in frame: the close-up runs down into the caption band, the wide figure
    # stands whole above it.
    assert close_bottom == close_layout["caption_box"][1] and wide_bottom < wide_layout["caption_box"][1] - 5
    assert (close_layout["framing"], wide_layout["framing"]) == ("close_up", "wide")
    # The recorded box is where the pixels are.
    for mask, layout in ((close, close_layout), (wide, wide_layout)):
        x0, y0, x1, y1 = layout["figures"][0]["box"]
        (top, bottom), (left, right) = extent(mask, axis=1), extent(mask, axis=0)
        assert abs(y0 - top) <= 2 and abs(x0 - left) <= 2 and abs(x1 - right) <= 2
        assert y1 >= bottom - 2


def test_close_up_face_has_eyes_brows_and_a_mouth(tool: RunningTool, store: ArtifactStore) -> None:
    frame, changed, layout = figure_pixels(tool, store, f"Close-up portrait of Tess, facing camera, {PLACE}",
                                           ["Tess"], (640, 360))
    luma = frame @ np.array([299, 587, 114]) // 1000
    x0, y0, x1, y1 = layout["figures"][0]["head"]
    cx = (x0 + x1) // 2
    head = changed[y0:y1, x0:x1]
    assert head.mean() > 0.7  # a round head (pi/4 of its box) is drawn where the layout says
    dark = (luma[y0:y1, x0:x1] < 40) & head
    ys, xs = np.nonzero(dark)
    left, right = xs < cx - x0 - 2, xs > cx - x0 + 2
    assert left.sum() >= 10 and right.sum() >= 10  # two eyes, one each side of the face
    assert abs(np.median(ys[left]) - np.median(ys[right])) <= 2
    mx0, my0, mx1, my1 = layout["figures"][0]["mouth"]
    mouth_luma = luma[my0:my1, mx0:mx1]
    face_luma = luma[(y0 + y1) // 2, x0 + (x1 - x0) // 5]
    assert mouth_luma.min() < face_luma - 30  # a mouth line darker than the skin beside it
    assert my0 > np.median(ys[left]) + y0  # below the eyes


@pytest.mark.parametrize("size", [(360, 640), (480, 480)])
@pytest.mark.parametrize("shot", ["Wide shot of", "Medium shot of", "Close-up portrait of", "Final frame:"])
def test_tall_and_square_frames_keep_figures_and_faces_inside(tool: RunningTool, store: ArtifactStore,
                                                              size: tuple[int, int], shot: str) -> None:
    characters = ["Tess"] if "Close-up" in shot else ["Tess", "Omar"]
    prompt = f"{shot} {' and '.join(characters)} {PLACE}"
    frame, changed, layout = figure_pixels(tool, store, prompt, characters, size)
    w, h = size
    caption_top = layout["caption_box"][1]
    # Nothing cut off at the sides or the top; each face sits above the caption band.
    left, right = extent(changed, axis=0)
    assert left > 0 and right < w
    assert extent(changed, axis=1)[0] > 0
    assert len(layout["figures"]) == len(characters)
    for figure in layout["figures"]:
        hx0, hy0, hx1, hy1 = figure["head"]
        assert 0 <= hx0 and hx1 <= w and 0 < hy0 and hy1 < caption_top, figure
        assert changed[hy0:hy1, hx0:hx1].mean() > 0.7  # the head is really there (a disc: pi/4 of its box)
    # The caption is a dark band of legible text across the bottom.
    band = frame[caption_top:]
    assert (band.max(axis=2) < 90).mean() > 0.5 and (band.min(axis=2) > 200).sum() > 50
    # Figures are sized for the frame: a close-up face spans a good part of the width.
    head_w = layout["figures"][0]["head"][2] - layout["figures"][0]["head"][0]
    if "Close-up" in shot:
        assert head_w >= 0.3 * w
    else:
        assert head_w >= 0.03 * w


def test_keyframes_of_one_place_share_their_scenery(tool: RunningTool, store: ArtifactStore) -> None:
    """Same scene words → the same set, whatever the seed: figures move, the scenery stays."""
    prompt = f"Medium shot of Tess and Omar {PLACE}"
    a, layout_a = render(tool, store, prompt, ["Tess", "Omar"], (320, 184), seed=1)
    b, layout_b = render(tool, store, prompt, ["Omar", "Tess"], (320, 184), seed=2)
    assert layout_a["set"] == layout_b["set"]
    outside = np.ones(a.shape[:2], bool)
    for layout in (layout_a, layout_b):
        for figure in layout["figures"]:
            x0, y0, x1, y1 = figure["box"]
            outside[y0:y1, x0:x1] = False
    assert outside.mean() > 0.2
    assert np.abs(a - b).max(axis=2)[outside].mean() < 1.0
