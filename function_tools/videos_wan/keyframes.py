"""The two keyframes of a videos_wan request, as every backend reads them.

Both backends (``keyframe_motion`` on CPU, ``wan2.1-flf2v`` on GPU) resolve the
start and end frame artifacts, decode them within bounds (format, pixel count),
settle the output size, check the work cap and fit both frames to that size;
both default the seed the same way.  That is one contract, so it lives here,
and neither backend imports the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from function_tools.videos_wan.figure_motion import LAYOUT_KEY
from function_tools.videos_wan.models import (
    MAX_SIDE,
    MAX_TOTAL_PIXELS,
    MIN_SIDE,
    SEED_MAX,
    ResizedInput,
    VideosWanRequest,
)
from sparkle_motion.artifacts import ArtifactManifest
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.services.context import ToolContext

MAX_KEYFRAME_PIXELS = 4096 * 4096
KEYFRAME_FORMATS = ("PNG", "JPEG", "WEBP")


def load_keyframe(path: Path, field: str, media_type: str) -> Image.Image:
    """Decode a keyframe artifact as RGB; anything that is not a readable image is a 422 naming ``field``."""
    try:
        with Image.open(path, formats=KEYFRAME_FORMATS) as image:
            if image.width * image.height > MAX_KEYFRAME_PIXELS:
                raise InvalidInputError(f"keyframe is {image.width}x{image.height}; at most "
                                        f"{MAX_KEYFRAME_PIXELS} pixels are accepted", field=field)
            image.load()
            rgb = image.convert("RGB")
            # Keep the PNG text chunks (the storyboard's layout travels in one) on the decoded frame.
            rgb.info.update({k: v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)})
            return rgb
    except InvalidInputError:
        raise
    except UnidentifiedImageError:
        # Pillow's own message names the blob's path; the caller only needs the reason.
        raise InvalidInputError(f"artifact (stored as {media_type}) is not a {'/'.join(KEYFRAME_FORMATS)} image: "
                                "unrecognised data", field=field, context={"media_type": media_type}) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInputError(f"artifact (stored as {media_type}) is a damaged image: {exc}", field=field,
                                context={"media_type": media_type, "exception_type": type(exc).__name__}) from None


def fit_keyframe(image: Image.Image, size: tuple[int, int], field: str) -> tuple[Image.Image, ResizedInput | None]:
    if image.size == size:
        return image, None
    # Cover + centre crop keeps the aspect ratio; a stretch would distort faces.
    fitted = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return fitted, ResizedInput(field=field, from_size=image.size, to_size=size, mode="cover_crop")


def default_seed(request: VideosWanRequest) -> int:
    """sha256 of the keyframe URIs and motion prompt, first 4 bytes big-endian: stable per shot."""
    key = f"{request.start_frame_uri}\n{request.end_frame_uri}\n{request.motion_prompt}".encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % (SEED_MAX + 1)


def output_size(request: VideosWanRequest, start: Image.Image) -> tuple[int, int]:
    if request.width is not None and request.height is not None:
        return request.width, request.height
    # Missing sides follow the start frame, rounded down to even (yuv420p).
    width = request.width if request.width is not None else start.width - start.width % 2
    height = request.height if request.height is not None else start.height - start.height % 2
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise InvalidInputError(f"defaults to the start frame's {name} ({value}), outside {MIN_SIDE}..{MAX_SIDE};"
                                    f" pass {name} explicitly", field=name)
    return width, height


@dataclass(frozen=True)
class PreparedKeyframes:
    """Both keyframes of a request, decoded and fitted to the output size (shared by every backend)."""

    start: Image.Image
    end: Image.Image
    width: int
    height: int
    num_frames: int
    start_manifest: ArtifactManifest
    end_manifest: ArtifactManifest
    resized: list[ResizedInput]
    start_layout: str | None = None   # the storyboard's layout chunk; None when absent or the frame was refitted
    end_layout: str | None = None


def prepare_keyframes(request: VideosWanRequest, ctx: ToolContext) -> PreparedKeyframes:
    """Resolve, decode, bound and fit the two keyframes; every failure names its request field."""
    start_manifest, start_path = ctx.resolve_input(request.start_frame_uri, "start_frame_uri")
    end_manifest, end_path = ctx.resolve_input(request.end_frame_uri, "end_frame_uri")
    start = load_keyframe(start_path, "start_frame_uri", start_manifest.media_type)
    end = load_keyframe(end_path, "end_frame_uri", end_manifest.media_type)
    width, height = output_size(request, start)
    num_frames = request.frame_count
    if num_frames * width * height > MAX_TOTAL_PIXELS:
        raise InvalidInputError(f"{num_frames} frames of {width}x{height} exceed the work cap of "
                                f"{MAX_TOTAL_PIXELS} pixels; use fewer frames or a smaller size",
                                field="num_frames" if request.num_frames is not None else "duration_s")
    start, start_resized = fit_keyframe(start, (width, height), "start_frame_uri")
    end, end_resized = fit_keyframe(end, (width, height), "end_frame_uri")
    resized = [r for r in (start_resized, end_resized) if r is not None]
    # A refitted frame's recorded figure boxes no longer match its pixels, so its layout is dropped.
    start_layout = None if start_resized else start.info.get(LAYOUT_KEY)
    end_layout = None if end_resized else end.info.get(LAYOUT_KEY)
    return PreparedKeyframes(start, end, width, height, num_frames, start_manifest, end_manifest, resized,
                             start_layout, end_layout)
