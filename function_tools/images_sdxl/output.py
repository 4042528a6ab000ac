"""The keyframe image both images_sdxl backends produce: its default size and its PNG file.

``storyboard`` and ``sdxl`` answer the same request with the same kind of file:
the size the request (or the profile's ``render`` section) asks for, and a PNG
carrying the prompt, seed and parameters as text chunks.  Both backends take
them from here, so neither depends on the other.
"""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from function_tools.images_sdxl.models import ImagesSdxlRequest
from sparkle_motion.config import Settings
from sparkle_motion.media.geometry import cover_box

DEFAULT_SIZE = (640, 360)


def output_size(request: ImagesSdxlRequest, settings: Settings) -> tuple[int, int]:
    """The request's width/height, else the profile's render size, else :data:`DEFAULT_SIZE`."""
    render = settings.render or {}
    return (request.width or int(render.get("width", DEFAULT_SIZE[0])),
            request.height or int(render.get("height", DEFAULT_SIZE[1])))


def fit_to_frame(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` centre-cropped to ``size``'s aspect and resized to it (unchanged when it already fits)."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, box=cover_box(image.size, size))


def encode_png(image: Image.Image, text: dict[str, str]) -> bytes:
    """PNG bytes with ``text`` as text chunks (tEXt; iTXt for values outside Latin-1)."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)  # Pillow switches to iTXt when the value is not Latin-1
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()
