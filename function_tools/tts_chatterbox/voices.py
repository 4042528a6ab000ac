"""From a voice profile to eSpeak NG settings: language → installed voice, character → variant and prosody."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.espeak_engine import MAX_RATE_WPM, MIN_RATE_WPM, EspeakVoice, SynthesisParams
from function_tools.tts_chatterbox.models import TtsVoice
from sparkle_motion.errors import InvalidInputError

NORMAL_RATE_WPM = 175  # eSpeak's default speaking rate; VoiceProfile.rate 1.0 means this
# eSpeak's pitch parameter (0..100, 50 = the variant's own pitch) scales only the base
# of the intonation contour, so its effect on the median F0 is not the nominal
# 2**((p-50)/50).  Measured median-F0 shift in semitones (m3, f2 and m7 agree within
# ~0.7 st) at these parameter values; semitone requests are interpolated on it.
_PITCH_PARAMS = (0.0, 17.0, 33.0, 50.0, 67.0, 83.0, 100.0)
_PITCH_SEMITONES = (-6.8, -4.7, -2.6, 0.0, 2.84, 5.76, 8.77)
MIN_PITCH_SEMITONES, MAX_PITCH_SEMITONES = _PITCH_SEMITONES[0], _PITCH_SEMITONES[-1]

# The classic eSpeak variants: distinct formants and base pitch per speaker.
CHARACTER_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")

# Free-form style words → prosody: (rate factor, intonation-range delta, variant override).
_STYLE_RULES: tuple[tuple[tuple[str, ...], float, int, str | None], ...] = (
    (("whisper",), 0.9, -20, "whisper"),
    (("calm", "soft", "gentle", "tired", "sad", "confessional", "somber", "sombre", "melancholy", "slow"), 0.88, -15, None),
    (("excited", "energetic", "urgent", "angry", "happy", "cheerful", "fast", "panicked"), 1.12, 20, None),
    (("monotone", "robotic", "flat"), 1.0, -40, None),
)


@dataclass(frozen=True)
class VoiceDesign:
    """The eSpeak settings chosen for one request, and how each was decided."""

    voice_id: str
    language: str
    espeak_voice: str  # language voice identifier, e.g. "gmw/en-US"
    variant: str
    rate_wpm: int
    pitch: int
    pitch_range: int
    decisions: dict[str, Any] = field(default_factory=dict)

    def params(self, seed: int) -> SynthesisParams:
        return SynthesisParams(voice=f"{self.espeak_voice}+{self.variant}", rate_wpm=self.rate_wpm,
                               pitch=self.pitch, pitch_range=self.pitch_range, seed=seed)


class LanguageIndex:
    """BCP-47 tag → installed eSpeak voice, preferring the voice that lists the tag with the best priority."""

    def __init__(self, voices: Iterable[EspeakVoice]) -> None:
        self._best: dict[str, tuple[int, str]] = {}
        for voice in voices:
            for priority, tag in voice.languages:
                current = self._best.get(tag)
                if current is None or priority < current[0]:
                    self._best[tag] = (priority, voice.identifier)

    @property
    def tags(self) -> list[str]:
        return sorted(self._best)

    def resolve(self, language: str, *, field_name: str = "voice.language") -> tuple[str, str]:
        """(matched tag, voice identifier); drops subtags from the right until a voice matches."""
        parts = language.lower().split("-")
        while parts:
            tag = "-".join(parts)
            if tag in self._best:
                return tag, self._best[tag][1]
            parts.pop()
            while parts and parts[-1] in ("x",):  # never end on a bare singleton
                parts.pop()
        raise InvalidInputError(
            f"no installed eSpeak NG voice speaks {language!r}; supported language tags include: "
            f"{', '.join(self.tags[:60])}{' …' if len(self.tags) > 60 else ''}",
            field=field_name,
            context={"language": language, "supported": self.tags},
        )


def _hash_bytes(identity: str) -> bytes:
    return hashlib.sha256(identity.encode("utf-8")).digest()


def design_voice(voice: TtsVoice, languages: LanguageIndex, available_variants: Iterable[str]) -> VoiceDesign:
    """Choose variant, pitch, rate and range for ``voice``.

    Unset fields are derived from a hash of the voice identity (voice_id, else
    character), so a character sounds the same in every line and different
    characters get different variants and base pitches.  Explicit ``rate`` and
    ``pitch`` replace the derived values; ``style`` adjusts the result.
    """
    matched_tag, espeak_voice = languages.resolve(voice.language)
    digest = _hash_bytes(voice.identity)
    variants = [v for v in CHARACTER_VARIANTS if v in set(available_variants)]
    if not variants:
        raise InvalidInputError("no eSpeak NG character variants are installed", field="voice.voice_id")
    decisions: dict[str, Any] = {"identity": voice.identity, "language_matched": matched_tag}

    variant = variants[digest[0] % len(variants)]
    # Derived base pitch: about -3..+4 semitones around the variant's own.
    pitch = 29 + digest[1] % 43
    rate_wpm = 155 + digest[2] % 31
    pitch_range = 40 + digest[3] % 31
    decisions.update(variant="derived", pitch="derived", rate="derived", pitch_range="derived")

    if voice.pitch is not None:
        semitones = max(MIN_PITCH_SEMITONES, min(MAX_PITCH_SEMITONES, voice.pitch))
        pitch = int(round(float(np.interp(semitones, _PITCH_SEMITONES, _PITCH_PARAMS))))
        decisions["pitch"] = "explicit" if semitones == voice.pitch else \
            f"explicit, clamped from {voice.pitch:+g} to {semitones:+g} semitones (eSpeak limit)"
    if voice.rate is not None:
        rate_wpm = int(round(NORMAL_RATE_WPM * voice.rate))
        decisions["rate"] = "explicit"

    if voice.style:
        style = voice.style.casefold()
        applied = []
        for words, rate_factor, range_delta, variant_override in _STYLE_RULES:
            if any(w in style for w in words):
                if voice.rate is None:
                    rate_wpm = int(round(rate_wpm * rate_factor))
                pitch_range += range_delta
                if variant_override and variant_override in set(available_variants):
                    variant = variant_override
                applied.append(words[0])
        decisions["style_applied"] = applied or "no prosody rule matches; style recorded only"

    clamped_rate = max(MIN_RATE_WPM, min(MAX_RATE_WPM, rate_wpm))
    if clamped_rate != rate_wpm:
        decisions["rate"] = f"{decisions['rate']}, clamped from {rate_wpm} to {clamped_rate} wpm (eSpeak limit)"
    return VoiceDesign(
        voice_id=voice.voice_id or f"espeak-{variant}-{digest[:4].hex()}",
        language=voice.language,
        espeak_voice=espeak_voice,
        variant=variant,
        rate_wpm=clamped_rate,
        pitch=max(0, min(100, pitch)),
        pitch_range=max(0, min(100, pitch_range)),
        decisions=decisions,
    )
