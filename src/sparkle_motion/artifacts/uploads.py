"""Files a user hands in from disk (``make --music``, ``make --cast``): checked, then stored as artifacts.

A path on the command line is untrusted input like any request body: it must be a
regular file under a size limit, with a known audio suffix, and ffprobe must find
an audio stream in it — so a film run never fails half-way on a bad upload.
"""

from __future__ import annotations

from pathlib import Path

from sparkle_motion.artifacts.models import ArtifactManifest
from sparkle_motion.artifacts.store import ArtifactStore
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.media import probe

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # a phone photo is 2-8 MB
MIN_IMAGE_SIDE, MAX_IMAGE_PIXELS = 64, 8192 * 8192
IMAGE_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

UPLOADS_RUN = "uploads"  # the store's run for user files; `prune` ages them out like any run
MAX_MUSIC_BYTES = 64 * 1024 * 1024  # ~25 min of 320 kb/s MP3; a bed is looped anyway
MIN_MUSIC_S = 0.5
AUDIO_MEDIA_TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
                     ".oga": "audio/ogg", ".opus": "audio/opus", ".m4a": "audio/mp4", ".aac": "audio/aac"}


def _checked_file(path: Path, field: str, max_bytes: int, media_types: dict[str, str], kind: str) -> str:
    """A regular file under ``max_bytes`` with a known suffix: its media type (else 422 naming ``field``)."""
    if not path.is_file():
        raise InvalidInputError(f"no such file: {path}", field=field)
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidInputError(f"{path.name} is {size} bytes; at most {max_bytes}", field=field)
    media_type = media_types.get(path.suffix.lower())
    if media_type is None:
        raise InvalidInputError(f"{path.name}: expected {kind} ({', '.join(sorted(media_types))})", field=field)
    return media_type


def put_music_file(store: ArtifactStore, path: Path, *, field: str = "--music") -> ArtifactManifest:
    """Check ``path`` is a usable audio file and store it as a ``music`` artifact; errors name ``field``."""
    media_type = _checked_file(path, field, MAX_MUSIC_BYTES, AUDIO_MEDIA_TYPES, "an audio file")
    info = probe(path, field_name=field)
    audio = info.first("audio")
    if audio is None:
        raise InvalidInputError(f"{path.name} has no audio stream", field=field)
    duration = audio.duration_s or info.duration_s or 0.0
    if duration < MIN_MUSIC_S:
        raise InvalidInputError(f"{path.name} lasts {duration:.2f} s; at least {MIN_MUSIC_S} s", field=field)
    return store.put(UPLOADS_RUN, "uploads", "music", path, media_type,
                     metadata={"tool": "cli", "source_name": path.name[:200]},
                     media={"duration_s": duration, **({"sample_rate": audio.sample_rate} if audio.sample_rate else {})},
                     ext=path.suffix.lower())


def put_image_file(store: ArtifactStore, path: Path, *, field: str = "--cast") -> ArtifactManifest:
    """Check ``path`` is a usable photo and store it as a ``reference_image`` artifact; errors name ``field``."""
    from PIL import Image, UnidentifiedImageError

    media_type = _checked_file(path, field, MAX_IMAGE_BYTES, IMAGE_MEDIA_TYPES, "an image")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidInputError(f"{path.name} is {width}x{height}; at most {MAX_IMAGE_PIXELS} pixels",
                                        field=field)
            image.load()  # a truncated or corrupt file fails here, not in the middle of a run
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidInputError(f"{path.name} is not a readable image ({exc})", field=field) from None
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InvalidInputError(f"{path.name} is {width}x{height}; at least {MIN_IMAGE_SIDE} px a side", field=field)
    return store.put(UPLOADS_RUN, "uploads", "reference_image", path, media_type,
                     metadata={"tool": "cli", "source_name": path.name[:200]},
                     media={"width": width, "height": height}, ext=path.suffix.lower())
