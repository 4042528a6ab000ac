"""Request/response models of tts_chatterbox, shared by every backend (espeak now, Chatterbox on GPU)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator

from sparkle_motion.plan.models import MAX_SEED, LanguageTag, SafeId, VoiceProfile
from sparkle_motion.services import ToolRequest, ToolResponse

MAX_TEXT_CHARS = 5000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
DEFAULT_SAMPLE_RATE = 24000


class TtsVoice(VoiceProfile):
    """A plan ``VoiceProfile`` plus who is speaking.

    Any VoiceProfile JSON is a valid ``TtsVoice``.  When ``voice_id`` is absent
    the voice is derived from ``character_id`` (else ``character_name``), so
    each character keeps one distinct voice across every line of the film.
    """

    language: LanguageTag = "en-US"
    character_id: SafeId | None = None
    character_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None

    @property
    def identity(self) -> str:
        """What the voice is keyed on: voice_id, else the character, else the narrator."""
        if self.voice_id:
            return f"voice:{self.voice_id}"
        if self.character_id:
            return f"character:{self.character_id}"
        if self.character_name:
            return f"character-name:{self.character_name.casefold()}"
        return "narrator"


class TtsChatterboxRequest(ToolRequest):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="What to say (plain text, no SSML).")
    voice: TtsVoice = Field(default_factory=TtsVoice)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seeds every random element of synthesis.")
    sample_rate: int = Field(DEFAULT_SAMPLE_RATE, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
                             description="Output WAV sample rate in Hz.")
    # Chatterbox controls; backends without them record them as ignored.
    exaggeration: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False,
                                       description="Chatterbox emotion exaggeration (0.5 = neutral).")
    cfg_weight: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                     description="Chatterbox classifier-free guidance weight.")
    reference_audio_uri: str | None = Field(None, max_length=512,
                                            description="Artifact URI of a voice sample to clone (Chatterbox).")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain something to say (got only whitespace)")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class WordTiming(BaseModel):
    word: str
    start_s: float
    end_s: float
    char_start: int = Field(description="Offset of the word in the request text (characters).")
    estimated: bool = Field(False, description="The engine timed this word together with a neighbour; "
                                               "its share of the interval is proportional to its length.")


class PhonemeTiming(BaseModel):
    phoneme: str = Field(description="IPA symbol(s) as reported by the engine.")
    start_s: float
    end_s: float


class TtsChatterboxResponse(ToolResponse):
    audio_uri: str
    duration_s: float
    sample_rate: int
    voice_id: str
    engine: str
    synth_time_s: float
    watermarked: bool
    words: list[WordTiming] = Field(default_factory=list)
    phonemes: list[PhonemeTiming] = Field(default_factory=list)
    timings_note: str | None = Field(None, description="Why word/phoneme timings are missing or partial.")
