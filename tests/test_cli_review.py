"""The terminal side of review gates without a mesh: answers → review requests, and the contact sheet's layout."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from sparkle_motion.agents.contact_sheet import COLUMNS, THUMB_W, render_sheet
from sparkle_motion.agents.production_models import ReviewItem, ReviewView
from sparkle_motion.cli_review import decide, parse_regenerate
from sparkle_motion.errors import InvalidInputError

VIEW = ReviewView(gate="keyframes", stage="base_images", items=[
    ReviewItem(item=f"frame_00{n}", stage="base_images", prompt=f"prompt {n}", seed=n) for n in range(3)])


def test_parse_regenerate_items_seeds_and_one_prompt():
    assert parse_regenerate(["frame_002", "frame_001:123"], None) == [{"item": "frame_002"},
                                                                     {"item": "frame_001", "seed": 123}]
    assert parse_regenerate(["frame_002"], "a red door") == [{"item": "frame_002", "prompt": "a red door"}]
    with pytest.raises(InvalidInputError) as info:
        parse_regenerate(["frame_002:-4"], None)
    assert info.value.field == "--regenerate"
    with pytest.raises(InvalidInputError) as info:
        parse_regenerate(["frame_001", "frame_002"], "two edits at once")
    assert info.value.field == "--prompt"


def test_terminal_answers_become_review_requests():
    assert decide(VIEW, "a") == {"approve": True}
    assert decide(VIEW, " approve ") == {"approve": True}
    assert decide(VIEW, "s") is None
    assert decide(VIEW, "r 2") == {"regenerate": [{"item": "frame_001"}]}
    assert decide(VIEW, "r frame_002") == {"regenerate": [{"item": "frame_002"}]}
    assert decide(VIEW, "e 1", prompt="dawn") == {"regenerate": [{"item": "frame_000", "prompt": "dawn"}]}
    opened = []
    edited = decide(VIEW, "edit 3", editor=lambda text: opened.append(text) or text + ", in the rain\n")
    assert opened == ["prompt 2"] and edited == {"regenerate": [{"item": "frame_002", "prompt": "prompt 2, in the rain"}]}
    for answer in ("", "r", "r 0", "r 4", "x 1", "e 2 3"):
        with pytest.raises(InvalidInputError):
            decide(VIEW, answer)
    with pytest.raises(InvalidInputError, match="not changed"):
        decide(VIEW, "e 2", editor=lambda text: None)     # the editor was closed without saving


def test_contact_sheet_lays_every_tile_out_with_its_caption():
    tiles = [{"label": f"#{n + 1} frame_00{n}", "caption": f"shot_00{n}: " + "a long prompt " * 20}
             for n in range(6)]
    colours = [(200, 30 * n, 40) for n in range(6)]
    png = render_sheet(tiles, [Image.new("RGB", (320, 180), c) for c in colours], "Test — contact sheet (6)")
    with Image.open(io.BytesIO(png)) as sheet:
        assert sheet.format == "PNG"
        assert sheet.width == COLUMNS * (THUMB_W + 16)
        rows = 2
        assert sheet.height > rows * 144 + 40
        rgb = sheet.convert("RGB")
        # every thumbnail is where the grid puts it, in its own colour
        header = 13 + 5 + 24
        cell_h = (sheet.height - header) // rows
        for n, colour in enumerate(colours):
            x, y = (n % COLUMNS) * (THUMB_W + 16) + 8 + THUMB_W // 2, header + (n // COLUMNS) * cell_h + 72
            assert rgb.getpixel((x, y)) == colour, n
        # the caption area under the first tile has text drawn in it (not just the background)
        caption = rgb.crop((8, header + 144 + 8, 8 + THUMB_W, header + 144 + 60))
        assert len(caption.getcolors(maxcolors=1 << 16) or []) > 2
