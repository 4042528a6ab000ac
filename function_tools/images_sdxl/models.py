"""Request/response models of images_sdxl, shared by every backend.

The CPU ``storyboard`` backend and the GPU ``sdxl`` backend take the same
request.  Diffusion-only options (steps, guidance_scale, scheduler, refiner)
are validated here for both; a backend that does not diffuse records them in
provenance and lists them in ``ignored_options`` instead of silently dropping
them.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sparkle_motion.artifacts import ArtifactManifest
from sparkle_motion.services.models import ToolRequest, ToolResponse

MIN_SIDE = 64
MAX_SIDE = 2048
SIDE_MULTIPLE = 8
MAX_COUNT = 8
MAX_CHARACTERS = 8
MAX_PROMPT_CHARS = 2000
SEED_MAX = 2**32 - 1
MAX_URI_CHARS = 512

#: Request fields only a diffusion backend uses.
DIFFUSION_OPTIONS = ("steps", "guidance_scale", "scheduler", "use_refiner", "refiner_high_noise_frac")


def seed_from_prompt(prompt: str) -> int:
    """The default seed: the first 4 bytes (big-endian) of SHA-256 of the UTF-8 prompt.

    Deterministic across processes and machines (unlike ``hash()``), so a
    request without a seed still renders the same image every time.
    """
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:4], "big")


class CharacterReference(BaseModel):
    """What one character of the frame looks like: their portrait, or (to draw the portrait itself) words.

    A keyframe names each character's portrait (``uri``, an image artifact):
    ``sdxl`` conditions on it through IP-Adapter, ``storyboard`` takes the
    character's look (clothes, hair and skin colours) from its pixels.  Without
    a portrait, ``description`` is what the storyboard reads the look from
    (colour and build words); ``sdxl`` reads descriptions only from the prompt.
    """

    model_config = ConfigDict(extra="forbid")

    character: str = Field(min_length=1, max_length=64, description="the name, as in `characters`")
    uri: str | None = Field(default=None, min_length=1, max_length=MAX_URI_CHARS,
                            description="artifact URI or id of the character's portrait")
    description: str = Field(default="", max_length=MAX_PROMPT_CHARS,
                             description="the character's description (used when there is no portrait)")


class ImagesSdxlRequest(ToolRequest):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="what the frame shows")
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS,
                                 description="what the frame must not show; the storyboard backend drops scene "
                                             "words (weather, place, time) that appear here")
    prompt_2: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                                 description="SDXL second text-encoder prompt; the storyboard backend reads it for "
                                             "scene words but captions only `prompt`")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX,
                             description="image i uses (seed + i) mod 2**32; default: seed_from_prompt(prompt) = "
                                         "first 4 bytes of sha256(prompt), big-endian")
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE,
                              description="pixels, multiple of 8; default: the profile's render width")
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE,
                               description="pixels, multiple of 8; default: the profile's render height")
    count: int = Field(default=1, ge=1, le=MAX_COUNT, description="number of images (consecutive seeds)")
    style: str | None = Field(default=None, max_length=200,
                              description="look, e.g. 'noir', 'sepia', 'pastel', 'vivid'")
    characters: list[str] = Field(default_factory=list, max_length=MAX_CHARACTERS,
                                  description="names of the characters present in the frame")
    references: list[CharacterReference] = Field(
        default_factory=list, max_length=MAX_CHARACTERS,
        description="the look of characters in `characters`: a portrait each frame is conditioned on")
    reference_layout: Literal["auto", "left_right", "speaker_front"] = Field(
        default="auto", description="where each referenced character stands when 2+ share the frame: "
                                    "left_right = in `characters` order, left to right; speaker_front = "
                                    "the first character (the speaker) in the middle half, the others in the "
                                    "outer quarters; auto = left_right. The storyboard always stands them left to "
                                    "right in `characters` order")
    # Diffusion options: used by `sdxl`, recorded and ignored by `storyboard`.
    steps: int | None = Field(default=None, ge=1, le=200, description="denoising steps (diffusion backends)")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0,
                                         description="classifier-free guidance (diffusion backends)")
    scheduler: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                                  description="diffusers scheduler class name (diffusion backends)")
    use_refiner: bool = Field(default=False, description="run the SDXL refiner (diffusion backends)")
    refiner_high_noise_frac: float | None = Field(default=None, gt=0.0, lt=1.0,
                                                  description="base/refiner split (diffusion backends)")

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        # Latent diffusion works on 8x-downsampled latents; keep the storyboard to the same sizes.
        if value is not None and value % SIDE_MULTIPLE:
            raise ValueError(f"must be a multiple of {SIDE_MULTIPLE} (got {value})")
        return value

    @field_validator("characters")
    @classmethod
    def _character_names(cls, names: list[str]) -> list[str]:
        cleaned = []
        for i, name in enumerate(names):
            name = name.strip()
            if not 1 <= len(name) <= 64:
                raise ValueError(f"characters[{i}] must be 1..64 characters after trimming")
            if name in cleaned:
                raise ValueError(f"characters[{i}] repeats {name!r}")
            cleaned.append(name)
        return cleaned

    @field_validator("references")
    @classmethod
    def _references_name_characters(cls, refs: list[CharacterReference],
                                    info: ValidationInfo) -> list[CharacterReference]:
        # A field validator (not a model validator) so the 422 names this field.
        characters = info.data.get("characters") or []
        seen: set[str] = set()
        for i, ref in enumerate(refs):
            name = ref.character.strip()
            if name not in characters:
                raise ValueError(f"references[{i}].character {name!r} is not one of `characters`")
            if name in seen:
                raise ValueError(f"references[{i}] repeats {name!r}")
            seen.add(name)
        return refs

    def reference_for(self, name: str) -> CharacterReference | None:
        return next((r for r in self.references if r.character.strip() == name), None)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain non-whitespace text")
        return value

    @field_validator("refiner_high_noise_frac")
    @classmethod
    def _refiner_frac_needs_refiner(cls, value: float | None, info: ValidationInfo) -> float | None:
        # A field validator (not a model validator) so the 422 names this field.
        if value is not None and not info.data.get("use_refiner"):
            raise ValueError("needs use_refiner=true")
        return value

    def seed_for(self, index: int) -> int:
        base = self.seed if self.seed is not None else seed_from_prompt(self.prompt)
        return (base + index) % (SEED_MAX + 1)


class GeneratedImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="position in the batch")
    seed: int = Field(ge=0, le=SEED_MAX, description="the seed that reproduces this image")
    artifact: ArtifactManifest


class ImagesSdxlResponse(ToolResponse):
    images: list[GeneratedImage] = Field(default_factory=list)
    width: int = 0
    height: int = 0
    ignored_options: list[str] = Field(default_factory=list,
                                       description="request options this backend recorded but did not use")
