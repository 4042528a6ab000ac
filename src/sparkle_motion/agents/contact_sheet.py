"""The contact sheet: every keyframe of a run on one PNG, numbered, with its shots and its prompt cut short.

A reviewer at the keyframes gate (and the CLI, which prints its path) sees the
whole storyboard at once; the cast portraits, when the plan has a cast stage,
come first. It is a cached step like any other (stage ``base_images``, item
``contact_sheet``), so a re-roll redraws it and an unchanged storyboard reuses it.
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from sparkle_motion.agents.production_steps import StepOutcome

if TYPE_CHECKING:
    from sparkle_motion.agents.production_run import ProductionRun

CONTACT_SHEET_ITEM = "contact_sheet"
CONTACT_SHEET_TYPE = "contact_sheet"
#: after these stages the sheet is drawn (again): the portraits, then the keyframes with them.
SHEET_AFTER_STAGES = ("cast", "base_images")
CAST_STAGE = "cast"
THUMB_W = 256
COLUMNS = 4
PROMPT_CHARS = 90
CAPTION_LINES = 3
PAD = 8
FONT_PX = 13


def _font(size: int = FONT_PX) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def portraits(run: ProductionRun) -> list[dict[str, Any]]:
    """The cast stage's portraits of this run (items ``cast_<character_id>``), latest per item."""
    latest: dict[str, dict[str, Any]] = {}
    for step in run.registry.list_steps(run.run_id, stage=CAST_STAGE):
        output = step.output or {}
        if step.status in ("succeeded", "cached") and step.item and step.item.startswith("cast_") and \
                output.get("uri"):
            latest[step.item] = {"label": step.item, "uri": output["uri"], "caption": output.get("prompt", "")}
    return list(latest.values())


def keyframes(run: ProductionRun) -> list[dict[str, Any]]:
    """Every keyframe rendered so far, in plan order, captioned with the shots it opens or closes."""
    images = run.results.get("base_images", {}).get("images", {})
    frames = []
    for number, base in enumerate(run.plan.base_images, start=1):
        if base.id not in images:
            continue
        shots = [s.id for s in run.plan.shots if base.id in (s.start_base_image_id, s.end_base_image_id)]
        frames.append({"label": f"#{number} {base.id}", "uri": images[base.id],
                       "caption": f"{', '.join(shots)}: {base.prompt}"})
    return frames


def render_sheet(tiles: list[dict[str, Any]], images: list[Image.Image], title: str) -> bytes:
    """Lay the tiles out in a grid: thumbnail, bold-ish label, caption cut to a few lines. PNG bytes."""
    font, title_font = _font(), _font(FONT_PX + 5)
    thumb_h = max((round(THUMB_W * im.height / max(1, im.width)) for im in images), default=THUMB_W)
    line_h = FONT_PX + 3
    cell_w, cell_h = THUMB_W + 2 * PAD, thumb_h + (1 + CAPTION_LINES) * line_h + 3 * PAD
    columns = max(1, min(COLUMNS, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    header = FONT_PX + 5 + 3 * PAD
    sheet = Image.new("RGB", (columns * cell_w, header + rows * cell_h), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), title, fill=(240, 240, 240), font=title_font)
    for index, (tile, image) in enumerate(zip(tiles, images)):
        x, y = (index % columns) * cell_w + PAD, header + (index // columns) * cell_h
        thumb = image.convert("RGB").resize((THUMB_W, round(THUMB_W * image.height / max(1, image.width))))
        sheet.paste(thumb, (x, y))
        text_y = y + thumb_h + PAD
        draw.text((x, text_y), tile["label"], fill=(255, 214, 90), font=font)
        caption = tile["caption"] if len(tile["caption"]) <= PROMPT_CHARS else tile["caption"][:PROMPT_CHARS - 1] + "…"
        for n, line in enumerate(textwrap.wrap(caption, width=THUMB_W // 7)[:CAPTION_LINES], start=1):
            draw.text((x, text_y + n * line_h), line, fill=(210, 210, 210), font=font)
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def contact_sheet_step(run: ProductionRun) -> dict[str, Any] | None:
    """Draw the sheet as the cached step ``<stage>/contact_sheet``; None when there is nothing to show yet."""
    tiles = portraits(run) + keyframes(run)
    if not tiles:
        return None
    stage = "base_images" if keyframes(run) else CAST_STAGE
    inputs = {"tiles": tiles, "title": run.plan.title}

    def work() -> Any:
        pictures = []
        for tile in tiles:
            with run.store.open(tile["uri"]) as stream:
                pictures.append(Image.open(io.BytesIO(stream.read())))
        png = render_sheet(tiles, pictures, f"{run.plan.title} — contact sheet ({len(tiles)})")
        manifest = run.store.put(run.run_id, stage, CONTACT_SHEET_TYPE, png, "image/png", ext=".png",
                                 metadata={"tool": "production_agent", "name": "contact_sheet.png",
                                           "tiles": [t["label"] for t in tiles]})
        return StepOutcome({"uri": manifest.uri, "artifact_id": manifest.artifact_id,
                            "local_path": manifest.local_path}, [manifest.artifact_id])

    return run.step(stage, CONTACT_SHEET_ITEM, None, inputs, work)
