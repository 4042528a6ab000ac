"""Frame geometry: the film's aspect ratio → render sizes, and the native sizes of the image models.

One module so that the CLI, script_agent and the GPU backends agree on what
"9:16" means.  A film's size for an aspect keeps the *pixel area* of the active
profile's render size (640x360 on cpu, 1280x720 on gpu): a 9:16 film costs the
same to render as the 16:9 one, and 640x360 turns into 360x640, not 640x1138.

The GPU models have sizes they were trained on: SDXL its aspect buckets (about
one megapixel each, multiples of 64), Wan multiples of its VAE stride times its
patch size.  They generate at their native size for the aspect and resize to the
film's size afterwards (``sdxl_bucket``; Wan: ``videos_wan.wan.aligned_generation_size``).
"""

from __future__ import annotations

import math

from sparkle_motion.errors import InvalidInputError

#: The aspects ``make --aspect`` / ``plan --aspect`` offer, as (width, height) ratios.
ASPECTS: dict[str, tuple[int, int]] = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
SIZE_MULTIPLE = 8  # H.264 yuv420p needs even sizes; the plan's VideoProfile asks for multiples of 8

#: SDXL's trained resolution buckets (width, height), from the SDXL paper's multi-aspect training table.
SDXL_BUCKETS: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
    (1344, 768), (768, 1344), (1536, 640), (640, 1536),
)


def parse_aspect(value: str, field: str = "aspect") -> tuple[int, int]:
    """``"9:16"`` → (9, 16); anything not in :data:`ASPECTS` is an ``InvalidInputError`` naming ``field``."""
    ratio = ASPECTS.get(value.strip()) if isinstance(value, str) else None
    if ratio is None:
        raise InvalidInputError(f"must be one of {', '.join(ASPECTS)} (got {value!r})", field=field)
    return ratio


def frame_size(aspect: str, base_width: int, base_height: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The (width, height) for ``aspect`` with about the pixel area of ``base_width`` x ``base_height``.

    Each side is rounded to ``multiple``; 640x360 gives 640x360 / 360x640 / 480x480.
    """
    ratio_w, ratio_h = parse_aspect(aspect)
    area = base_width * base_height
    width = math.sqrt(area * ratio_w / ratio_h)
    height = math.sqrt(area * ratio_h / ratio_w)
    return (max(multiple, round(width / multiple) * multiple), max(multiple, round(height / multiple) * multiple))


def sdxl_bucket(width: int, height: int) -> tuple[int, int]:
    """The SDXL training bucket whose aspect is nearest ``width / height`` (compared in log space)."""
    if width < 1 or height < 1:
        raise ValueError(f"bad size {width}x{height}")
    target = math.log(width / height)
    return min(SDXL_BUCKETS, key=lambda size: abs(math.log(size[0] / size[1]) - target))


def cover_box(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred crop box of ``source`` with ``target``'s aspect: resizing it to ``target`` fills without bars."""
    src_w, src_h = source
    tgt_w, tgt_h = target
    if src_w * tgt_h > tgt_w * src_h:  # source is wider: crop the sides
        crop_w = round(src_h * tgt_w / tgt_h)
        left = (src_w - crop_w) // 2
        return left, 0, left + crop_w, src_h
    crop_h = round(src_w * tgt_h / tgt_w)
    top = (src_h - crop_h) // 2
    return 0, top, src_w, top + crop_h
