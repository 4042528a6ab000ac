"""The storyboard renderer in-process: scene reading, determinism, distinct frames, caption, silhouettes."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from function_tools.images_sdxl.figures import character_color
from function_tools.images_sdxl.models import ImagesSdxlRequest, seed_from_prompt
from function_tools.images_sdxl.output import encode_png
from function_tools.images_sdxl.scene import describe_scene
from function_tools.images_sdxl.storyboard import (
    _font,
    limit_chroma_to_420,
    render_frame,
    wrap_text,
)


def phash(image: Image.Image) -> np.ndarray:
    """64-bit DCT perceptual hash: low 8x8 DCT coefficients of a 32x32 grey thumbnail vs their median."""
    grey = np.asarray(ImageOps.grayscale(image).resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = 32
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # DCT-II rows
    coeffs = basis @ grey @ basis.T
    low = coeffs[:8, :8].flatten()[1:]  # drop DC: it is brightness, not structure
    return low > np.median(low)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def frame(prompt: str, seed: int = 7, size: tuple[int, int] = (320, 184), **kw) -> Image.Image:
    return render_frame(prompt, seed, *size, scene=describe_scene(prompt, style=kw.pop("style", None)), **kw)


@pytest.mark.parametrize(("prompt", "expected"), [
    ("Two friends on a neon rooftop reconcile before sunrise", ("sunrise", "clear", "rooftop")),
    ("A lighthouse keeper walks the beach at sunset in the rain", ("sunset", "rain", "beach")),
    ("Foggy forest at dawn", ("dawn", "fog", "forest")),
    ("Snowy mountain pass at night", ("night", "snow", "mountain")),
    ("A thunderstorm over desert dunes at dusk", ("dusk", "storm", "desert")),
    ("An astronaut drifts in space", ("noon", "clear", "space")),
    ("Meeting in a glass office at noon", ("noon", "clear", "office")),
    ("A quiet kitchen in the evening", ("dusk", "clear", "room")),
    ("A boat on a calm sea at midnight", ("night", "clear", "sea")),
    ("Busy city street, overcast morning", ("sunrise", "cloudy", "city")),
    ("Two people talking", ("noon", "clear", "field")),
])
def test_scene_words_pick_time_weather_place(prompt: str, expected: tuple[str, str, str]) -> None:
    scene = describe_scene(prompt)
    assert (scene.time_of_day, scene.weather, scene.place) == expected


def test_negative_prompt_removes_scene_words_and_style_is_read() -> None:
    assert describe_scene("city street in the rain at night").weather == "rain"
    scene = describe_scene("city street in the rain at night", negative_prompt="rain, blur", style="film noir")
    assert scene.weather == "clear" and scene.style == "noir"
    # prompt_2 contributes scene words too
    assert describe_scene("two friends talk", prompt_2="on a beach at sunset").place == "beach"


def test_default_seed_is_sha256_prefix_of_prompt() -> None:
    prompt = "A rooftop at dawn"
    expected = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
    assert seed_from_prompt(prompt) == expected
    request = ImagesSdxlRequest(prompt=prompt, count=3)
    assert [request.seed_for(i) for i in range(3)] == [expected, (expected + 1) % 2**32, (expected + 2) % 2**32]
    assert ImagesSdxlRequest(prompt=prompt, seed=2**32 - 1).seed_for(1) == 0


def test_same_prompt_and_seed_give_identical_png_bytes() -> None:
    def png(seed: int) -> bytes:
        return encode_png(frame("Rainy city at night", seed=seed, characters=["Maya"]), {"seed": str(seed)})

    assert png(11) == png(11)
    assert png(11) != png(12)  # the seed moves the figures (the scenery follows the scene words)


def test_different_prompts_are_perceptually_distinct() -> None:
    prompts = ["A neon city street at night in the rain", "A sunny beach at noon", "A snowy mountain at dawn",
               "Inside a quiet office", "A spaceship drifting past a planet in deep space"]
    hashes = [phash(frame(p)) for p in prompts]
    # Noise floor: the same frame after a lossy re-encode and a rescale.
    base = frame(prompts[0])
    buf = io.BytesIO()
    base.save(buf, format="JPEG", quality=60)
    noisy = Image.open(io.BytesIO(buf.getvalue())).resize((300, 172)).resize(base.size)
    noise = hamming(phash(base), phash(noisy))
    assert noise <= 4
    distances = [hamming(hashes[i], hashes[j]) for i in range(len(prompts)) for j in range(i + 1, len(prompts))]
    assert min(distances) >= 12, distances
    assert min(distances) >= 3 * max(noise, 2)


def test_frames_follow_the_light() -> None:
    night = np.asarray(frame("city at night"), dtype=np.float64)
    noon = np.asarray(frame("city at noon"), dtype=np.float64)
    sky_rows = slice(20, 60)  # below the tag, above the skyline's tallest towers
    assert night[sky_rows].mean() < 60 < noon[sky_rows].mean()
    sunset = np.asarray(frame("a beach at sunset"), dtype=np.float64)
    r, g, b = (sunset[40:90, :, c].mean() for c in range(3))
    assert r > b  # a warm sky near the horizon


def test_caption_is_drawn_legibly_at_640x360() -> None:
    prompt = "Two friends on a neon rooftop reconcile before sunrise while the city wakes up below them"
    image = np.asarray(frame(prompt, size=(640, 360)), dtype=np.int32)
    # Caption band: a dark band at the bottom with bright glyph pixels of a readable height.
    band = image[-70:]
    bright_rows = np.nonzero((band.min(axis=2) > 200).sum(axis=1) > 3)[0]
    assert len(bright_rows) >= 20  # two lines of >= 10 px glyphs
    dark_share = (band.max(axis=2) < 90).mean()
    assert dark_share > 0.6
    font = _font(18)
    lines = wrap_text(prompt, font, 600, max_lines=3)
    assert len(lines) >= 2 and all(font.getlength(line) <= 600 for line in lines)
    assert " ".join(lines) == prompt


def test_wrap_truncates_with_ellipsis_and_breaks_long_tokens() -> None:
    font = _font(12)
    lines = wrap_text("word " * 200, font, 100, max_lines=3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    lines = wrap_text("x" * 300, font, 80, max_lines=10)
    assert all(font.getlength(line) <= 80 for line in lines)


def test_characters_appear_as_labelled_silhouettes_in_their_colour() -> None:
    names = ["Maya", "Leo"]
    with_chars = np.asarray(frame("a field at noon", characters=names), dtype=np.int32)
    without = np.asarray(frame("a field at noon"), dtype=np.int32)
    changed = np.abs(with_chars - without).max(axis=2) > 30
    assert changed.mean() > 0.05
    for name in names:  # each name tag is filled with the character's own colour
        colour = np.asarray(character_color(name))
        close = np.abs(with_chars - colour).max(axis=2) <= 12
        assert close.sum() > 100, name
    assert character_color("Maya") == character_color(" maya ")
    assert character_color("Maya") != character_color("Leo")


def test_styles_change_the_look() -> None:
    noir = np.asarray(frame("a beach at sunset", style="noir"), dtype=np.int32)
    scene_rows = noir[20:-40]  # the caption band and tag are drawn after the style
    assert np.abs(scene_rows[..., 0] - scene_rows[..., 2]).max() <= 2  # greyscale
    sepia = np.asarray(frame("a beach at sunset", style="sepia"), dtype=np.float64)
    assert sepia[..., 0].mean() > sepia[..., 2].mean() + 20


def chroma_spread(image: Image.Image) -> np.ndarray:
    """Per 2x2 block, the range of Cb and Cr (0 where a block shares one chroma value)."""
    ycc = np.asarray(image.convert("YCbCr"), dtype=np.int32)
    h, w = ycc.shape[0] // 2 * 2, ycc.shape[1] // 2 * 2
    blocks = ycc[:h, :w, 1:].reshape(h // 2, 2, w // 2, 2, 2)
    return blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))


def test_chroma_is_420_representable_and_luma_kept() -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert chroma_spread(noise).mean() > 50
    # Only RGB rounding/clipping of saturated pixels is left after the filter.
    assert chroma_spread(limit_chroma_to_420(noise)).mean() < 2
    storyboard = chroma_spread(frame("neon city at night", characters=["Maya"]))
    assert np.percentile(storyboard, 95) == 0 and storyboard.mean() < 0.5
    y_before = np.asarray(noise.convert("YCbCr"))[..., 0].astype(int)
    y_after = np.asarray(limit_chroma_to_420(noise).convert("YCbCr"))[..., 0].astype(int)
    assert np.median(np.abs(y_before - y_after)) <= 2  # luma detail kept


def test_png_text_chunks_round_trip_unicode() -> None:
    png = encode_png(frame("café"), {"prompt": "café ☕ at night", "seed": "5"})
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.text["prompt"] == "café ☕ at night"
        assert decoded.text["seed"] == "5"
