"""The MoviePlan contract: what script_agent writes and production_agent executes.

Field constraints live here; rules that relate fields to each other live in
:mod:`sparkle_motion.plan.rules` and run from ``MoviePlan``'s model validator,
so no ``MoviePlan`` instance can exist that breaks them (short of
``model_construct``).

Every model except ``PlanMetadata`` uses ``extra="forbid"``: a misspelled key
(``negative_promt``, ``max_fps``) would otherwise be dropped without a word and
the film rendered without what the author asked for.  ``PlanMetadata`` is free
provenance that nothing downstream interprets, so extra keys are kept.

Models are frozen: a validated plan is a value (hashed for caching and resume);
edit a copy (``model_copy(update=...)``) and validate it again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, StringConstraints,
                      WithJsonSchema, model_serializer, model_validator)
from pydantic_core import PydanticCustomError

from sparkle_motion.ids import ID_MAX_LENGTH, ID_PATTERN, NAME_ID_PATTERN, is_valid_id, is_valid_name_id
from sparkle_motion.plan.language import normalize_language_tag
from sparkle_motion.plan.rules import (
    MAX_CHARACTERS,
    MAX_DIALOGUE_CHARS,
    MAX_RUNTIME_S,
    MAX_SHOT_DURATION_S,
    MAX_SHOTS,
    MAX_TIMELINE_ENTRIES,
    check_plan_rules,
)

# A render-profile model id meaning "whatever the active profile (configs/profiles/*.yaml)
# runs for that tool": the same plan then renders on the cpu and the gpu profile.
AUTO_MODEL = "auto"
MAX_SEED = 2**32 - 1  # numpy's legacy RandomState and many samplers take 32-bit seeds
MAX_PROMPT_CHARS = 2000
# Rate is a speaking-rate multiplier and pitch a shift in semitones; the bounds are
# those of common TTS engines (e.g. Google Cloud TTS: rate 0.25–4.0, pitch ±20).
MIN_VOICE_RATE, MAX_VOICE_RATE = 0.25, 4.0
MAX_VOICE_PITCH = 20.0
# Dimensions are multiples of 8: H.264 with yuv420p needs even sizes, and latent
# diffusion models (SDXL, Wan) downsample by 8 in their VAE.  16 is not required
# because the cpu profile's 640x360 default is not a multiple of 16; backends that
# need more (Wan's patchify) round or refuse in the tool itself.
DIMENSION_MULTIPLE = 8
MIN_DIMENSION, MAX_DIMENSION = 64, 4096
MAX_FPS = 60
# A music bed sits well under speech (dialogue is normalised towards -16 LUFS) and drops
# further while a line is spoken; broadcast practice ducks beds by 10-20 dB.
MUSIC_LEVEL_LUFS, MUSIC_DUCK_DB, MUSIC_FADE_S = -26.0, 15.0, 1.5


def _check_id(value: str) -> str:
    if not is_valid_id(value):
        raise PydanticCustomError(
            "invalid_id",
            "must be a safe id: 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit, "
            "without '..' (got {value})",
            {"value": repr(value[:80])},
        )
    return value


def _check_name_id(value: str) -> str:
    if not is_valid_name_id(value):
        raise PydanticCustomError(
            "invalid_name_id",
            "must be a name id: 1-128 characters (letters of any script, digits, punctuation) without "
            "whitespace, '/', '\\', control characters, a leading '.' or '..' (got {value})",
            {"value": repr(value[:80])},
        )
    return value


def _check_language(value: str) -> str:
    try:
        return normalize_language_tag(value)
    except ValueError as exc:
        raise PydanticCustomError("invalid_language", str(exc)) from None


_MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,199}$"

SafeId = Annotated[
    str,
    AfterValidator(_check_id),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": ID_MAX_LENGTH,
                    "description": "Safe id (becomes a path component); must not contain '..'."}),
]
# An id that is only a name (metadata.plan_id): any script; ids.path_safe_id maps it for paths.
NameId = Annotated[
    str,
    AfterValidator(_check_name_id),
    WithJsonSchema({"type": "string", "pattern": NAME_ID_PATTERN, "minLength": 1, "maxLength": ID_MAX_LENGTH,
                    "description": "A name (letters of any script); no whitespace, separators or '..'."}),
]
ModelId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=_MODEL_ID_PATTERN)]
LanguageTag = Annotated[
    str,
    AfterValidator(_check_language),
    WithJsonSchema({"type": "string", "minLength": 2, "maxLength": 64,
                    "description": "BCP-47 language tag, e.g. 'en-US'."}),
]


def _text(max_length: int, *, min_length: int = 1) -> Any:
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)]


def _seconds(**bounds: float) -> Any:
    return Field(allow_inf_nan=False, **bounds)


# Closed (unknown keys refused) and frozen; see the module docstring for why.
_CLOSED = ConfigDict(extra="forbid", frozen=True)


class VoiceProfile(BaseModel):
    """How a character sounds; ``language`` picks the TTS voice's language."""

    model_config = _CLOSED

    voice_id: _text(200) | None = None
    style: _text(200) | None = None
    language: LanguageTag
    rate: float | None = Field(None, ge=MIN_VOICE_RATE, le=MAX_VOICE_RATE, allow_inf_nan=False,
                               description="Speaking-rate multiplier; 1.0 is the voice's natural rate.")
    pitch: float | None = Field(None, ge=-MAX_VOICE_PITCH, le=MAX_VOICE_PITCH, allow_inf_nan=False,
                                description="Pitch shift in semitones.")
    reference_audio_id: SafeId | None = Field(
        None, description="Artifact id of a voice clip (a few seconds of clean speech; chatterbox takes 1-60 s) the "
                          "character's voice is cloned from: "
                          "tts_chatterbox's chatterbox backend clones it, espeak and kokoro record it as ignored. "
                          "It wins over the profile's `voices` map, which stays the per-installation default.")

    @model_serializer(mode="wrap")
    def _without_absent_reference(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # As MoviePlan.music: a voice without a clip serialises as before the field existed (same plan hash).
        data = handler(self)
        if data.get("reference_audio_id", ...) is None:
            del data["reference_audio_id"]
        return data


class Character(BaseModel):
    model_config = _CLOSED

    id: SafeId
    name: _text(100)
    description: _text(MAX_PROMPT_CHARS, min_length=0) = ""
    voice_profile: VoiceProfile
    reference_image_id: SafeId | None = Field(
        None, description="Artifact id of an image that fixes the character's look (optional).")


class BaseImage(BaseModel):
    """A keyframe: shot i starts on base_images[i] and ends on base_images[i+1]."""

    model_config = _CLOSED

    id: SafeId
    prompt: _text(MAX_PROMPT_CHARS)
    negative_prompt: _text(MAX_PROMPT_CHARS, min_length=0) | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


class Shot(BaseModel):
    model_config = _CLOSED

    id: SafeId
    duration_sec: float = _seconds(gt=0, le=MAX_SHOT_DURATION_S)
    setting: _text(MAX_PROMPT_CHARS, min_length=0)
    visual_description: _text(MAX_PROMPT_CHARS)
    start_base_image_id: SafeId
    end_base_image_id: SafeId
    motion_prompt: _text(MAX_PROMPT_CHARS, min_length=0)
    is_talking_closeup: bool = False


def _type_is_required(schema: dict[str, Any]) -> None:
    # ``type`` has a default so Python callers can write DialogueLine(...), but in JSON
    # it is the discriminator and must be present; say so in the exported schema.
    schema["required"] = sorted({*schema.get("required", []), "type"})


class _TimelineEntryBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_type_is_required)

    start_time_sec: float = _seconds(ge=0, le=MAX_RUNTIME_S)
    duration_sec: float = _seconds(gt=0, le=MAX_RUNTIME_S)

    @property
    def end_time_sec(self) -> float:
        return self.start_time_sec + self.duration_sec


class DialogueLine(_TimelineEntryBase):
    type: Literal["dialogue"] = "dialogue"
    character_id: SafeId
    text: _text(MAX_DIALOGUE_CHARS)


class SilenceEntry(_TimelineEntryBase):
    type: Literal["silence"] = "silence"


TimelineEntry = Annotated[DialogueLine | SilenceEntry, Field(discriminator="type")]


class VideoProfile(BaseModel):
    """Video stage settings; fps/width/height left out take the active profile's render defaults.

    They default to None rather than numbers because the cpu and gpu profiles
    render at different sizes (640x360@24 vs 1280x720@16); a plan that pins them
    renders at exactly those values on every profile.
    """

    model_config = _CLOSED

    model_id: ModelId = Field(description=f"Video model the plan requires, or {AUTO_MODEL!r} for the profile's.")
    fps: int | None = Field(None, ge=1, le=MAX_FPS)
    width: int | None = Field(None, ge=MIN_DIMENSION, le=MAX_DIMENSION, multiple_of=DIMENSION_MULTIPLE)
    height: int | None = Field(None, ge=MIN_DIMENSION, le=MAX_DIMENSION, multiple_of=DIMENSION_MULTIPLE)
    notes: _text(500, min_length=0) | None = None

    def with_defaults(self, render_defaults: Mapping[str, Any]) -> VideoProfile:
        """A copy with unset fps/width/height taken from ``render_defaults`` (Settings.render), validated."""
        data = self.model_dump()
        for key in ("fps", "width", "height"):
            if data[key] is None:
                data[key] = render_defaults.get(key)
        return VideoProfile.model_validate(data)


class ImagesProfile(BaseModel):
    model_config = _CLOSED

    model_id: ModelId = AUTO_MODEL


class TtsProfile(BaseModel):
    model_config = _CLOSED

    model_id: ModelId = AUTO_MODEL


class RenderProfile(BaseModel):
    """Which model family each stage must use; ``video.model_id`` must be stated explicitly."""

    model_config = _CLOSED

    video: VideoProfile
    images: ImagesProfile = ImagesProfile()
    tts: TtsProfile = TtsProfile()


class MusicBed(BaseModel):
    """A music track laid under the whole film: looped or trimmed to the runtime, faded, ducked under dialogue."""

    model_config = _CLOSED

    artifact_id: SafeId = Field(description="Artifact id of an audio file in the store (`make --music` puts it there).")
    level_lufs: float = Field(MUSIC_LEVEL_LUFS, ge=-50.0, le=-10.0, allow_inf_nan=False,
                              description="Loudness of the bed between lines, before the film's loudness target.")
    duck_db: float = Field(MUSIC_DUCK_DB, ge=6.0, le=40.0, allow_inf_nan=False,
                           description="How far the bed drops while a line is spoken (dB).")
    fade_s: float = Field(MUSIC_FADE_S, ge=0.0, le=10.0, allow_inf_nan=False,
                          description="Fade-in at the start and fade-out at the end (seconds).")


class PlanMetadata(BaseModel):
    """Provenance. Unknown keys are kept (extra="allow"): nothing downstream interprets them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    plan_id: NameId | None = Field(
        None, description="Stable plan id; when absent, MoviePlan.plan_id derives one from plan_hash.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Base seed; stages derive their seeds from it.")
    source: _text(200) = "manual"


class MoviePlan(BaseModel):
    """A film as shots between keyframes plus a dialogue timeline.

    Cross-field rules: len(base_images) == len(shots) + 1; shot i runs from
    base_images[i] to base_images[i+1]; ids unique per collection; the timeline
    starts at 0, is ordered and contiguous, and ends at the sum of shot durations
    (1 ms tolerance); dialogue refers to defined characters; runtime <= 30 min.
    """

    model_config = _CLOSED

    title: _text(200)
    characters: list[Character] = Field(default_factory=list, max_length=MAX_CHARACTERS)
    # The exact count (len(shots) + 1) is a cross-field rule; this only caps the input size.
    base_images: list[BaseImage] = Field(max_length=MAX_SHOTS + 1)
    shots: list[Shot] = Field(min_length=1, max_length=MAX_SHOTS)
    dialogue_timeline: list[TimelineEntry] = Field(max_length=MAX_TIMELINE_ENTRIES)
    render_profile: RenderProfile
    music: MusicBed | None = None
    metadata: PlanMetadata = PlanMetadata()

    @model_serializer(mode="wrap")
    def _without_absent_music(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A plan without a bed serialises as it did before the field existed, so its
        # canonical JSON, plan_hash and every cached step keyed by it stay the same.
        data = handler(self)
        if data.get("music", ...) is None:
            del data["music"]
        return data

    @model_validator(mode="after")
    def _cross_field_rules(self) -> MoviePlan:
        violations = check_plan_rules(self.model_dump())
        if violations:
            summary = "; ".join(f"{v['path']}: {v['message']}" for v in violations)
            raise PydanticCustomError("plan_rules", "{summary}", {"summary": summary, "violations": violations})
        return self

    @property
    def runtime_s(self) -> float:
        """Film length: the sum of shot durations (the timeline ends exactly here)."""
        return math.fsum(shot.duration_sec for shot in self.shots)

    @property
    def shot_start_times(self) -> list[float]:
        """Start of each shot in seconds from the film's start, aligned with ``shots``."""
        durations = [shot.duration_sec for shot in self.shots]
        return [math.fsum(durations[:index]) for index in range(len(durations))]

    @property
    def dialogue_lines(self) -> list[DialogueLine]:
        return [entry for entry in self.dialogue_timeline if isinstance(entry, DialogueLine)]

    @property
    def plan_id(self) -> str:
        """``metadata.plan_id``, or ``plan_<first 16 hex of plan_hash>`` so equal plans share an id."""
        if self.metadata.plan_id:
            return self.metadata.plan_id
        return f"plan_{hashlib.sha256(canonical_plan_json(self)).hexdigest()[:16]}"

    def character(self, character_id: str) -> Character:
        for character in self.characters:
            if character.id == character_id:
                return character
        raise KeyError(character_id)

    def base_image(self, image_id: str) -> BaseImage:
        for image in self.base_images:
            if image.id == image_id:
                return image
        raise KeyError(image_id)


def canonical_plan_json(plan: MoviePlan) -> bytes:
    """The plan as canonical JSON (sorted keys, no whitespace, UTF-8): the input of plan_hash."""
    return json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")
