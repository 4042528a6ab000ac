"""The ``storyboard`` backend: a deterministic storyboard frame drawn with Pillow.

No model and no GPU: the prompt is read for scene words (time of day, weather,
place), which pick the palette, light and scenery; a seeded RNG places the
shapes; the characters present stand as labelled figures with simple faces,
framed as the prompt's shot type asks (wide, medium, close-up, over the
shoulder: see ``figures.py``); the prompt is captioned at the bottom.  The PNG
records the layout (figure boxes, mouths, label mask) for keyframe_motion and
the lip-sync mux.  Same (prompt, seed, size, style, characters) → the
same PNG bytes, so a storyboard is reproducible from its manifest.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from function_tools.images_sdxl.figures import (
    LAYOUT_KEY,
    FigureLayer,
    Framing,
    describe_framing,
)
from function_tools.images_sdxl.looks import Look, default_look, look_from_description, look_from_portrait
from function_tools.images_sdxl.models import (
    DIFFUSION_OPTIONS,
    GeneratedImage,
    ImagesSdxlRequest,
    ImagesSdxlResponse,
)
from function_tools.images_sdxl.output import encode_png, output_size
from function_tools.images_sdxl.scene import SceneDescription, describe_scene
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.services.context import ToolContext

MAX_PORTRAIT_PIXELS = 4096 * 4096

RGB = tuple[int, int, int]

INTERIORS = frozenset({"room", "office"})


@dataclass(frozen=True)
class Palette:
    sky_top: RGB
    sky_bottom: RGB
    ground: RGB
    light: RGB       # colour of the key light (sun, moon or lamps)
    ambient: float   # how lit the scenery is, 0..1


PALETTES: dict[str, Palette] = {
    "dawn": Palette((62, 72, 138), (238, 168, 150), (66, 78, 70), (255, 200, 170), 0.72),
    "sunrise": Palette((96, 148, 212), (255, 192, 122), (88, 112, 70), (255, 222, 150), 0.85),
    "noon": Palette((58, 128, 220), (172, 212, 246), (96, 152, 80), (255, 250, 225), 1.0),
    "sunset": Palette((58, 56, 128), (252, 128, 66), (82, 60, 58), (255, 150, 80), 0.68),
    "dusk": Palette((28, 30, 78), (140, 92, 132), (44, 44, 60), (210, 130, 150), 0.5),
    "night": Palette((4, 7, 24), (26, 36, 72), (18, 22, 30), (236, 236, 212), 0.3),
}
GROUND_BY_PLACE: dict[str, RGB] = {
    "city": (70, 70, 78), "rooftop": (84, 80, 82), "forest": (52, 96, 48), "beach": (222, 200, 150),
    "sea": (30, 80, 130), "desert": (226, 184, 120), "mountain": (96, 112, 92), "space": (60, 60, 70),
    "field": (100, 156, 76), "room": (120, 92, 70), "office": (110, 112, 120),
}


# --------------------------------------------------------------------------- colour helpers

def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _lit(color: RGB, palette: Palette, weather: str) -> RGB:
    """Scenery colour under the scene's light: darkened by ambient, tinted by the key light."""
    amb = palette.ambient * {"storm": 0.6, "rain": 0.8, "fog": 0.9, "cloudy": 0.9}.get(weather, 1.0)
    tinted = _mix(color, tuple(c * v // 255 for c, v in zip(color, palette.light)), 0.35)  # type: ignore[arg-type]
    return tuple(max(0, min(255, int(c * (0.25 + 0.75 * amb)))) for c in tinted)  # type: ignore[return-value]


def _desaturate(color: RGB, amount: float) -> RGB:
    grey = int(0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2])
    return _mix(color, (grey, grey, grey), amount)


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow >= 10.1 embeds a scalable TrueType font (Aileron), so no system font is needed.
    return ImageFont.load_default(size=size)  # type: ignore[return-value]


# --------------------------------------------------------------------------- drawing

class _Canvas:
    def __init__(self, width: int, height: int, scene: SceneDescription, rng: np.random.Generator) -> None:
        self.w, self.h = width, height
        self.scene = scene
        self.rng = rng
        base = PALETTES[scene.time_of_day]
        sky_top, sky_bottom = base.sky_top, base.sky_bottom
        if scene.weather in ("rain", "storm", "cloudy", "fog", "snow"):
            amount = {"storm": 0.7, "rain": 0.5, "fog": 0.6, "cloudy": 0.4, "snow": 0.5}[scene.weather]
            sky_top, sky_bottom = _desaturate(sky_top, amount), _desaturate(sky_bottom, amount)
            if scene.weather == "storm":
                sky_top, sky_bottom = _mix(sky_top, (0, 0, 0), 0.45), _mix(sky_bottom, (0, 0, 0), 0.4)
        ground = GROUND_BY_PLACE[scene.place]
        if scene.weather == "snow" and scene.place not in INTERIORS | {"sea", "space"}:
            ground = (232, 236, 242)
        self.palette = Palette(sky_top, sky_bottom, ground, base.light, base.ambient)
        self.horizon = int(height * float(rng.uniform(0.56, 0.68)))
        self.image = Image.new("RGB", (width, height))
        self.draw = ImageDraw.Draw(self.image)

    def u(self, fraction: float) -> int:
        """A length relative to the smaller side, so shapes scale with the frame."""
        return max(1, int(round(fraction * min(self.w, self.h))))

    def lit(self, color: RGB) -> RGB:
        return _lit(color, self.palette, self.scene.weather)

    # -- layers
    def sky(self, top: RGB | None = None, bottom: RGB | None = None, until: int | None = None) -> None:
        top, bottom = top or self.palette.sky_top, bottom or self.palette.sky_bottom
        until = self.h if until is None else until
        t = np.linspace(0.0, 1.0, max(until, 1), dtype=np.float32)[:, None]
        grad = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
        band = np.repeat(grad[:, None, :], self.w, axis=1).reshape(until, self.w, 3)
        self.image.paste(Image.fromarray(band.round().astype(np.uint8), "RGB"), (0, 0))

    def ground(self) -> None:
        top = self.lit(self.palette.ground)
        bottom = _mix(top, (0, 0, 0), 0.35)
        t = np.linspace(0.0, 1.0, self.h - self.horizon, dtype=np.float32)[:, None]
        grad = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
        band = np.repeat(grad[:, None, :], self.w, axis=1)
        self.image.paste(Image.fromarray(band.round().astype(np.uint8), "RGB"), (0, self.horizon))

    def celestial(self) -> None:
        tod, rng = self.scene.time_of_day, self.rng
        if tod in ("night", "dusk") or self.scene.place == "space":
            n = int(self.w * self.h / 900) if tod == "night" or self.scene.place == "space" else int(self.w * self.h / 4000)
            xs = rng.integers(0, self.w, n)
            ys = rng.integers(0, max(self.horizon, 1), n)
            for x, y in zip(xs.tolist(), ys.tolist()):
                v = int(rng.integers(150, 256))
                self.draw.point((x, y), fill=(v, v, min(255, v + 20)))
        if self.scene.weather in ("storm", "rain", "fog", "cloudy") and tod != "night":
            return
        r = self.u(0.07)
        if tod == "night":
            cx, cy = int(self.w * rng.uniform(0.6, 0.88)), int(self.horizon * rng.uniform(0.18, 0.35))
            self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=self.palette.light)
            off = int(r * 0.55)  # crescent: cut the disc with a sky-coloured one
            self.draw.ellipse((cx - r + off, cy - r - off // 3, cx + r + off, cy + r - off // 3),
                              fill=self.palette.sky_top)
            return
        height_frac = {"dawn": 0.92, "sunrise": 0.72, "noon": 0.18, "sunset": 0.8, "dusk": 1.02}[tod]
        cx = int(self.w * (rng.uniform(0.12, 0.3) if tod in ("dawn", "sunrise") else
                           rng.uniform(0.7, 0.88) if tod in ("sunset", "dusk") else rng.uniform(0.3, 0.7)))
        cy = int(self.horizon * height_frac)
        halo = _mix(self.palette.light, self.palette.sky_bottom, 0.55)
        self.draw.ellipse((cx - 2 * r, cy - 2 * r, cx + 2 * r, cy + 2 * r), fill=halo)
        self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=self.palette.light)

    def clouds(self) -> None:
        weather = self.scene.weather
        n = {"storm": 7, "rain": 6, "cloudy": 6, "snow": 5, "fog": 3}.get(weather, int(self.rng.integers(0, 3)))
        base = {"storm": (60, 62, 70), "rain": (120, 124, 132), "snow": (210, 214, 222)}.get(weather, (236, 238, 244))
        color = _mix(base, self.palette.sky_top, 0.25 if self.scene.time_of_day != "night" else 0.7)
        for _ in range(n):
            cx, cy = self.rng.uniform(-0.05, 1.05) * self.w, self.rng.uniform(0.05, 0.45) * self.horizon
            size = self.u(float(self.rng.uniform(0.06, 0.12)))
            for _ in range(5):
                dx, dy = self.rng.uniform(-2.2, 2.2) * size, self.rng.uniform(-0.5, 0.4) * size
                rr = size * self.rng.uniform(0.6, 1.1)
                self.draw.ellipse((cx + dx - rr * 1.4, cy + dy - rr, cx + dx + rr * 1.4, cy + dy + rr), fill=color)

    # -- scenery per place
    def buildings(self, horizon: int, lit_windows: bool) -> None:
        x = -self.u(0.05)
        night = self.scene.time_of_day in ("night", "dusk")
        while x < self.w:
            bw = self.u(float(self.rng.uniform(0.1, 0.22)))
            bh = int(horizon * self.rng.uniform(0.3, 0.85))
            shade = int(self.rng.integers(55, 110))
            body = self.lit((shade, shade + 4, shade + 14))
            top = horizon - bh
            self.draw.rectangle((x, top, x + bw, horizon), fill=body)
            win, gap = max(2, self.u(0.018)), max(2, self.u(0.014))
            window_on = (255, 214, 120) if night or lit_windows else _mix(self.palette.sky_bottom, body, 0.35)
            window_off = _mix(body, (0, 0, 0), 0.35)
            for wy in range(top + gap, horizon - win, win + gap):
                for wx in range(x + gap, x + bw - win, win + gap):
                    on = self.rng.random() < (0.55 if night else 0.85)
                    self.draw.rectangle((wx, wy, wx + win - 1, wy + win - 1), fill=window_on if on else window_off)
            x += bw + self.u(float(self.rng.uniform(0.0, 0.04)))

    def trees(self, count: int) -> None:
        for _ in range(count):
            x = int(self.rng.uniform(0, self.w))
            base_y = int(self.horizon + self.rng.uniform(0.0, 0.25) * (self.h - self.horizon))
            th = self.u(float(self.rng.uniform(0.2, 0.42)))
            trunk = self.lit((84, 58, 40))
            leaf = self.lit(tuple(int(c) for c in (30 + self.rng.integers(0, 40), 100 + self.rng.integers(0, 60), 40)))
            tw = max(2, th // 12)
            self.draw.rectangle((x - tw, base_y - th // 3, x + tw, base_y), fill=trunk)
            for k in range(3):  # stacked triangles: a conifer silhouette reads at any size
                lvl_top = base_y - th + k * th // 5
                half = th // 4 + k * th // 10
                self.draw.polygon([(x, lvl_top), (x - half, lvl_top + th // 2), (x + half, lvl_top + th // 2)],
                                  fill=leaf)

    def waves(self, top: int) -> None:
        water = self.lit((36, 96, 150))
        self.draw.rectangle((0, top, self.w, self.h), fill=water)
        crest = _mix(water, (255, 255, 255), 0.45)
        rows = 7
        for row in range(rows):
            y = top + (row + 1) * (self.h - top) // (rows + 1)
            amp = max(1, self.u(0.008) * (row + 1) // 2)
            period = self.u(float(self.rng.uniform(0.06, 0.1))) * (row + 2) // 2 + 2
            phase = float(self.rng.uniform(0, 2 * math.pi))
            pts = [(px, y + amp * math.sin(phase + 2 * math.pi * px / period)) for px in range(0, self.w + 4, 4)]
            self.draw.line(pts, fill=crest, width=max(1, self.u(0.004)))

    def dunes(self) -> None:
        for layer in range(3):
            color = self.lit(_mix((236, 196, 130), (170, 110, 60), layer / 3))
            y0 = self.horizon + layer * (self.h - self.horizon) // 4
            amp = self.u(float(self.rng.uniform(0.04, 0.09)))
            period = self.w * float(self.rng.uniform(0.5, 1.1))
            phase = float(self.rng.uniform(0, 2 * math.pi))
            pts = [(px, y0 - amp * (1 + math.sin(phase + 2 * math.pi * px / period))) for px in range(0, self.w + 8, 8)]
            self.draw.polygon([*pts, (self.w, self.h), (0, self.h)], fill=color)
        if self.rng.random() < 0.8:  # a cactus gives the dunes a scale
            x = int(self.rng.uniform(0.1, 0.9) * self.w)
            hgt, arm = self.u(0.16), self.u(0.02)
            y = self.h - (self.h - self.horizon) // 3
            green = self.lit((60, 120, 60))
            self.draw.rounded_rectangle((x - arm, y - hgt, x + arm, y), radius=arm, fill=green)
            self.draw.rounded_rectangle((x - 3 * arm, y - hgt * 2 // 3, x - arm, y - hgt // 3), radius=arm, fill=green)

    def mountains(self) -> None:
        for layer in range(2):
            color = self.lit(_mix((110, 118, 140), (70, 80, 76), layer))
            snow = _mix((245, 248, 255), color, 0.2)
            n = int(self.rng.integers(3, 6))
            for _ in range(n):
                cx = float(self.rng.uniform(-0.1, 1.1)) * self.w
                peak = self.horizon - self.u(float(self.rng.uniform(0.22, 0.5))) // (layer + 1)
                half = self.u(float(self.rng.uniform(0.25, 0.5)))
                self.draw.polygon([(cx - half, self.horizon), (cx, peak), (cx + half, self.horizon)], fill=color)
                cap = (self.horizon - peak) // 4
                frac = cap / max(self.horizon - peak, 1)
                self.draw.polygon([(cx - half * frac, peak + cap), (cx, peak), (cx + half * frac, peak + cap)],
                                  fill=snow)

    def hills(self) -> None:
        for layer in range(2):
            color = self.lit(_mix((110, 170, 86), (70, 130, 60), layer))
            cx = float(self.rng.uniform(0, 1)) * self.w
            rx, ry = self.w * float(self.rng.uniform(0.4, 0.8)), self.u(float(self.rng.uniform(0.08, 0.16)))
            self.draw.ellipse((cx - rx, self.horizon - ry, cx + rx, self.horizon + ry), fill=color)
        self.trees(int(self.rng.integers(1, 4)))

    def planet(self) -> None:
        r = self.u(float(self.rng.uniform(0.12, 0.22)))
        cx, cy = int(self.rng.uniform(0.2, 0.8) * self.w), int(self.rng.uniform(0.2, 0.45) * self.h)
        hue = float(self.rng.uniform(0, 1))
        body = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.5, 0.85))
        self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=body)
        self.draw.ellipse((cx - 2 * r, cy - r // 4, cx + 2 * r, cy + r // 4), outline=_mix(body, (255, 255, 255), 0.5),
                          width=max(1, r // 10))

    def interior(self, office: bool) -> None:
        wall = self.lit((196, 186, 168) if not office else (190, 196, 204))
        self.draw.rectangle((0, 0, self.w, self.horizon), fill=wall)
        # A window shows the time of day and the weather outside.
        wx0, wy0 = int(self.w * self.rng.uniform(0.08, 0.45)), int(self.horizon * 0.15)
        wx1, wy1 = wx0 + int(self.w * 0.32), int(self.horizon * 0.7)
        outside = Image.new("RGB", (wx1 - wx0, wy1 - wy0))
        t = np.linspace(0, 1, wy1 - wy0, dtype=np.float32)[:, None, None]
        grad = np.asarray(self.palette.sky_top, np.float32) * (1 - t) + np.asarray(self.palette.sky_bottom,
                                                                                    np.float32) * t
        outside.paste(Image.fromarray(np.repeat(grad, wx1 - wx0, axis=1).round().astype(np.uint8), "RGB"))
        self.image.paste(outside, (wx0, wy0))
        frame = _mix(wall, (40, 30, 20), 0.5)
        fw = max(2, self.u(0.012))
        self.draw.rectangle((wx0, wy0, wx1, wy1), outline=frame, width=fw)
        self.draw.line(((wx0 + wx1) // 2, wy0, (wx0 + wx1) // 2, wy1), fill=frame, width=fw)
        self.draw.line((wx0, (wy0 + wy1) // 2, wx1, (wy0 + wy1) // 2), fill=frame, width=fw)
        if self.scene.weather in ("rain", "storm"):
            for _ in range(max(4, (wx1 - wx0) // 6)):
                x = int(self.rng.uniform(wx0, wx1))
                y = int(self.rng.uniform(wy0, wy1))
                self.draw.line((x, y, x - 2, y + self.u(0.03)), fill=(180, 190, 210), width=1)
        floor_line = _mix(self.lit(self.palette.ground), (0, 0, 0), 0.4)
        self.draw.line((0, self.horizon, self.w, self.horizon), fill=floor_line, width=max(1, self.u(0.006)))
        # Furniture: a desk (office) or a table and lamp (room).
        dx = int(self.w * self.rng.uniform(0.55, 0.75))
        top = self.horizon + (self.h - self.horizon) // 6
        dw, dh = int(self.w * 0.22), self.u(0.018)
        wood = self.lit((120, 84, 52) if not office else (150, 152, 160))
        self.draw.rectangle((dx - dw // 2, top, dx + dw // 2, top + dh), fill=wood)
        leg = max(2, dh // 2)
        for lx in (dx - dw // 2 + leg, dx + dw // 2 - 2 * leg):
            self.draw.rectangle((lx, top + dh, lx + leg, top + dh + self.u(0.14)), fill=_mix(wood, (0, 0, 0), 0.3))
        if office:
            mw, mh = self.u(0.12), self.u(0.08)
            self.draw.rectangle((dx - mw // 2, top - mh - dh, dx + mw // 2, top - dh), fill=(30, 34, 40))
            self.draw.rectangle((dx - mw // 2 + 2, top - mh - dh + 2, dx + mw // 2 - 2, top - dh - 2),
                                fill=(90, 150, 210))
        else:
            lamp = self.palette.light if self.scene.time_of_day in ("night", "dusk") else (250, 236, 200)
            lh = self.u(0.1)
            self.draw.line((dx, top, dx, top - lh), fill=(60, 60, 60), width=max(1, self.u(0.006)))
            self.draw.polygon([(dx - lh // 3, top - lh), (dx + lh // 3, top - lh), (dx + lh // 5, top - lh - lh // 3),
                               (dx - lh // 5, top - lh - lh // 3)], fill=lamp)

    def scenery(self) -> None:
        place = self.scene.place
        if place in INTERIORS:
            self.interior(office=place == "office")
            return
        if place == "city":
            self.buildings(self.horizon, lit_windows=False)
        elif place == "rooftop":
            self.buildings(int(self.horizon + (self.h - self.horizon) * 0.1), lit_windows=False)
            ledge = self.lit((96, 90, 92))
            top = self.horizon + (self.h - self.horizon) // 3
            self.draw.rectangle((0, top, self.w, self.h), fill=ledge)
            self.draw.rectangle((0, top, self.w, top + self.u(0.02)), fill=_mix(ledge, (255, 255, 255), 0.15))
            for k in range(int(self.rng.integers(1, 3))):  # water tank / vent for a rooftop read
                x = int(self.rng.uniform(0.05, 0.95) * self.w)
                tw, th = self.u(0.08), self.u(0.12)
                self.draw.rectangle((x, top - th, x + tw, top), fill=_mix(ledge, (0, 0, 0), 0.3))
        elif place == "forest":
            self.trees(int(self.rng.integers(10, 18)))
        elif place == "beach":
            self.waves(self.horizon)
            sand = self.lit((226, 204, 152))
            shore = self.horizon + (self.h - self.horizon) * 2 // 5
            amp = self.u(0.02)
            pts = [(px, shore + amp * math.sin(px / max(self.w, 1) * 6.0 + float(self.rng.uniform(0, 6))))
                   for px in range(0, self.w + 8, 8)]
            self.draw.polygon([*pts, (self.w, self.h), (0, self.h)], fill=sand)
        elif place == "sea":
            self.waves(self.horizon)
            if self.rng.random() < 0.7:
                x, y = int(self.rng.uniform(0.2, 0.8) * self.w), self.horizon + self.u(0.06)
                hull = self.lit((120, 70, 50))
                s = self.u(0.06)
                self.draw.polygon([(x - 2 * s, y), (x + 2 * s, y), (x + s, y + s), (x - s, y + s)], fill=hull)
                self.draw.polygon([(x, y - 3 * s), (x, y - s // 4), (x + int(1.6 * s), y - s // 4)],
                                  fill=self.lit((240, 236, 224)))
        elif place == "desert":
            self.dunes()
        elif place == "mountain":
            self.mountains()
        elif place == "space":
            self.planet()
        else:
            self.hills()

    def weather_layer(self) -> None:
        weather, rng = self.scene.weather, self.rng
        if weather in ("rain", "storm"):
            streak = _mix((190, 200, 220), self.palette.sky_bottom, 0.3)
            n = int(self.w * self.h / (1200 if weather == "rain" else 700))
            length, slant = self.u(0.05), self.u(0.012)
            xs, ys = rng.uniform(0, self.w, n), rng.uniform(0, self.h, n)
            for x, y in zip(xs.tolist(), ys.tolist()):
                self.draw.line((x, y, x - slant, y + length), fill=streak, width=1)
        if weather == "storm":
            x = float(rng.uniform(0.2, 0.8)) * self.w
            y, pts = 0.0, []
            while y < self.horizon * 0.85:
                pts.append((x, y))
                x += float(rng.uniform(-1, 1)) * self.u(0.05)
                y += self.u(0.06)
            self.draw.line(pts, fill=(255, 255, 220), width=max(2, self.u(0.008)))
        if weather == "snow":
            n = int(self.w * self.h / 500)
            r = max(1, self.u(0.004))
            for x, y in zip(rng.uniform(0, self.w, n).tolist(), rng.uniform(0, self.h, n).tolist()):
                self.draw.ellipse((x - r, y - r, x + r, y + r), fill=(248, 250, 255))
        if weather == "fog":
            fog = Image.new("RGB", (self.w, self.h), _mix(self.palette.sky_bottom, (200, 204, 210), 0.6))
            self.image = Image.blend(self.image, fog, 0.45)
            self.draw = ImageDraw.Draw(self.image)

    def frame_set(self, framing: Framing) -> None:
        """See the set through the shot's lens: zoom about the horizon's middle and soften (depth of field)."""
        if framing.background_zoom > 1.0:
            zoom = framing.background_zoom
            half_w, half_h = self.w / (2 * zoom), self.h / (2 * zoom)
            cy = min(max(float(self.horizon), half_h), self.h - half_h)
            box = (self.w / 2 - half_w, cy - half_h, self.w / 2 + half_w, cy + half_h)
            self.image = self.image.resize((self.w, self.h), Image.Resampling.BICUBIC, box=box)
            self.horizon = int(round((self.horizon - box[1]) * zoom))
        if framing.background_blur > 0:
            self.image = self.image.filter(ImageFilter.GaussianBlur(framing.background_blur * min(self.w, self.h)))
        self.draw = ImageDraw.Draw(self.image)

    def apply_style(self) -> None:
        style = self.scene.style
        if style == "noir":
            self.image = ImageOps.autocontrast(ImageOps.grayscale(self.image), cutoff=1).convert("RGB")
        elif style == "sepia":
            grey = np.asarray(ImageOps.grayscale(self.image), np.float32) / 255.0
            tone = np.stack([grey * 255, grey * 214, grey * 160], axis=-1)
            self.image = Image.fromarray(np.clip(tone + 12, 0, 255).astype(np.uint8), "RGB")
        elif style == "pastel":
            self.image = Image.blend(self.image, Image.new("RGB", self.image.size, (250, 246, 240)), 0.3)
        elif style == "vivid":
            self.image = ImageEnhance.Color(self.image).enhance(1.5)
        self.draw = ImageDraw.Draw(self.image)

    def tag(self, text: str, px: int) -> list[int]:
        font = _font(px)
        pad = max(2, px // 3)
        tw = min(int(font.getlength(text)), self.w - 2 * pad)
        self.draw.rectangle((0, 0, tw + 2 * pad, px + 2 * pad), fill=(0, 0, 0))
        self.draw.text((pad, pad), text, font=font, fill=(235, 235, 235))
        return [0, 0, tw + 2 * pad + 1, px + 2 * pad + 1]

    def caption_lines(self, text: str, px: int) -> tuple[list[str], int]:
        """The wrapped caption and its band's height: figures are placed above the band."""
        font = _font(px)
        pad = max(3, px // 2)
        line_h = int(px * 1.25)
        # At most 3 lines (4 in a tall frame), and never more than ~30% of the frame on small sizes.
        most = 4 if self.h > self.w else 3
        max_lines = max(1, min(most, int(self.h * 0.3 - 2 * pad) // line_h))
        lines = wrap_text(text, font, self.w - 2 * pad, max_lines=max_lines)
        return lines, len(lines) * line_h + 2 * pad

    def caption(self, text: str, px: int) -> list[int]:
        font = _font(px)
        pad = max(3, px // 2)
        line_h = int(px * 1.25)
        lines, band_h = self.caption_lines(text, px)
        # An opaque band: nothing of the picture shows through, so a figure cropped by the band ends
        # at it (keyframe_motion moves figures under a caption that stays put).
        self.draw.rectangle((0, self.h - band_h, self.w, self.h), fill=(12, 12, 16))
        for k, line in enumerate(lines):
            self.draw.text((pad, self.h - band_h + pad + k * line_h), line, font=font, fill=(250, 250, 250))
        return [0, self.h - band_h, self.w, self.h]


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: int, *, max_lines: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; the last kept line ends with an ellipsis if text was cut."""
    words = " ".join(text.split()).split(" ")
    lines: list[str] = []
    current = ""
    for word in words:
        if len(lines) > max_lines:
            break  # cut with an ellipsis below; the rest is never drawn
        while font.getlength(word) > max_width and len(word) > 1:  # a single over-long token: hard-break it
            cut, too_long = 1, len(word)  # binary search for the longest prefix that fits: a 2,000-character
            while too_long - cut > 1:  # token took a minute measured one character at a time
                mid = (cut + too_long) // 2
                cut, too_long = (mid, too_long) if font.getlength(word[:mid]) <= max_width else (cut, mid)
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= max_width:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > max_width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "…"
    return lines


def set_key(scene: SceneDescription) -> str:
    """Which set the frame shows: every frame of the same scene words shares its scenery.

    The scenery is seeded by the scene alone (not the seed or the full prompt), so the
    keyframes of one place — a wide shot, then close-ups — show the same buildings and
    hills, and ``keyframe_motion`` can move the figures over a shared background.  The
    seed and prompt still place the figures.
    """
    return hashlib.sha256(json.dumps(asdict(scene), sort_keys=True).encode("utf-8")).hexdigest()[:16]


def render_storyboard(prompt: str, seed: int, width: int, height: int, *, scene: SceneDescription,
                      characters: list[str] | None = None,
                      looks: dict[str, Look] | None = None) -> tuple[Image.Image, dict[str, Any]]:
    """Draw one storyboard frame and its layout (framing, figures, mouths, label mask).  Pure."""
    # The prompt digest joins the seed in the figures' RNG so that two prompts with the same
    # scene words and seed still place their figures differently.
    prompt_key = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    key = set_key(scene)
    canvas = _Canvas(width, height, scene, np.random.default_rng(int(key, 16)))
    if scene.place == "space":
        canvas.sky((2, 2, 10), (12, 10, 30))
    else:
        canvas.sky()
    if scene.place not in INTERIORS:
        canvas.celestial()
        if scene.place != "space":
            canvas.clouds()
    if scene.place != "space":
        canvas.ground()
    canvas.scenery()
    if scene.place not in INTERIORS:
        canvas.weather_layer()
    framing = describe_framing(prompt)
    canvas.frame_set(framing)
    tall = height > width
    text_px = max(10, min(96, round(min(height * 0.05, width * (0.045 if tall else 0.032)))))
    _, band_h = canvas.caption_lines(prompt, text_px)
    figures = FigureLayer(canvas.image, framing, horizon=canvas.horizon,
                          rng=np.random.default_rng([seed, prompt_key]), unit=canvas.u(0.006))
    label_px = max(9, text_px * 4 // 5)
    figures.draw(list(characters or []), _font(label_px), label_px, height - band_h, looks)
    canvas.apply_style()
    tag = " · ".join(v.upper() for v in (scene.time_of_day, scene.weather, scene.place))
    tag_box = canvas.tag(tag, max(8, text_px * 3 // 4))
    caption_box = canvas.caption(prompt, text_px)
    layout = figures.layout(set_key=key, caption_box=caption_box, tag_box=tag_box)
    return limit_chroma_to_420(canvas.image), layout


def render_frame(prompt: str, seed: int, width: int, height: int, *, scene: SceneDescription,
                 characters: list[str] | None = None) -> Image.Image:
    """Draw one storyboard frame.  Pure function of its arguments."""
    return render_storyboard(prompt, seed, width, height, scene=scene, characters=characters)[0]


def limit_chroma_to_420(image: Image.Image) -> Image.Image:
    """Give the frame chroma that 4:2:0 video can carry: each 2x2 block shares one Cb/Cr.

    Storyboard frames are keyframes of H.264 yuv420p clips.  Hard-edged colour
    detail (lit windows, coloured outlines) that 4:2:0 cannot represent would make
    the clip's first/last frames differ from the PNG by more than coding noise;
    averaging chroma per 2x2 block (box down, nearest up) leaves luma — the
    detail the eye reads, including the caption — untouched.
    """
    width, height = image.size
    y, cb, cr = image.convert("YCbCr").split()
    half = (max(1, width // 2), max(1, height // 2))
    cb, cr = (c.resize(half, Image.Resampling.BOX).resize((width, height), Image.Resampling.NEAREST) for c in (cb, cr))
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


class StoryboardBackend:
    """images_sdxl on CPU: deterministic storyboard frames."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings

    def load(self) -> None:
        # Rasterise the caption font once so the first request pays no warm-up.
        _font(16).getlength("warm-up")

    def invoke(self, request: ImagesSdxlRequest, ctx: ToolContext) -> ImagesSdxlResponse:
        width, height = output_size(request, self.settings)
        scene = describe_scene(request.prompt, prompt_2=request.prompt_2, negative_prompt=request.negative_prompt,
                               style=request.style)
        ignored = [name for name in DIFFUSION_OPTIONS
                   if getattr(request, name) not in (None, False)]
        params: dict[str, Any] = request.model_dump(exclude={"run_id", "stage", "seed", "count"})
        params.update(width=width, height=height)
        looks, conditioned_on = self.cast_looks(request, ctx)
        rendered: list[tuple[int, int, bytes, dict[str, Any], dict[str, float]]] = []
        t_all = time.perf_counter()
        # Render everything before storing anything: a failure mid-batch leaves no artifact behind.
        for index in range(request.count):
            ctx.progress(index, request.count, "images")
            seed = request.seed_for(index)
            t0 = time.perf_counter()
            image, layout = render_storyboard(request.prompt, seed, width, height, scene=scene,
                                              characters=request.characters, looks=looks)
            t1 = time.perf_counter()
            png = encode_png(image, {
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "seed": str(seed),
                "parameters": json.dumps({**params, "seed": seed}, sort_keys=True, ensure_ascii=False),
                "scene": json.dumps(asdict(scene), sort_keys=True),
                LAYOUT_KEY: json.dumps(layout, sort_keys=True),
                "Software": f"sparkle-motion {ctx.tool_id}/{ctx.backend} {ctx.model}",
            })
            summary = {k: v for k, v in layout.items() if k != "mask"}
            rendered.append((index, seed, png, summary,
                             {"render_s": t1 - t0, "encode_png_s": time.perf_counter() - t1}))
        images = []
        for index, seed, png, summary, timings in rendered:
            manifest = ctx.put_output(
                request, "image", png, "image/png",
                {"seed": seed, "index": index, "params": params, "scene": asdict(scene),
                 "ignored_options": ignored, "layout": summary, "conditioned_on": conditioned_on,
                 "timings": timings},
                media={"width": width, "height": height}, ext=".png",
            )
            images.append(GeneratedImage(index=index, seed=seed, artifact=manifest))
        return ImagesSdxlResponse(
            images=images, artifacts=[img.artifact for img in images], width=width, height=height,
            ignored_options=ignored, timings={"render_total_s": time.perf_counter() - t_all},
        )

    @staticmethod
    def cast_looks(request: ImagesSdxlRequest, ctx: ToolContext) -> tuple[dict[str, Look], list[dict[str, Any]]]:
        """Each character's look (from the portrait, else the description, else the name) and the portraits used.

        A portrait that is not a readable image is the caller's error (422
        naming ``references[i].uri``), like any other bad input artifact.
        """
        looks: dict[str, Look] = {}
        conditioned_on: list[dict[str, Any]] = []
        for name in request.characters:
            ref = request.reference_for(name)
            if ref is None:
                looks[name] = default_look(name)
            elif ref.uri is None:
                looks[name] = look_from_description(name, ref.description)
            else:
                field_name = f"references[{request.references.index(ref)}].uri"
                manifest, path = ctx.resolve_input(ref.uri, field_name)
                try:
                    with Image.open(path) as portrait:
                        if portrait.width * portrait.height > MAX_PORTRAIT_PIXELS:
                            raise InvalidInputError(f"portrait is {portrait.width}x{portrait.height}; at most "
                                                    f"{MAX_PORTRAIT_PIXELS} pixels", field=field_name)
                        portrait.load()
                        looks[name] = look_from_portrait(portrait)
                except (OSError, SyntaxError, ValueError) as exc:
                    raise InvalidInputError(f"portrait of {name!r} is not a readable image ({exc})",
                                            field=field_name) from None
                conditioned_on.append({"character": name, "uri": manifest.uri, "artifact_id": manifest.artifact_id,
                                       "sha256": manifest.sha256, "look": looks[name].as_json()})
        return looks, conditioned_on
