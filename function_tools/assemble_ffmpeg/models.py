"""Request/response models of assemble_ffmpeg."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sparkle_motion.plan.models import MUSIC_DUCK_DB, MUSIC_FADE_S, MUSIC_LEVEL_LUFS
from sparkle_motion.services import ToolRequest, ToolResponse

MAX_CLIPS = 500
MAX_SUBTITLES = 2000
MAX_SUBTITLE_CHARS = 500
# Times are seconds into a clip or the film; a day keeps them finite and far past any film.
MAX_TIME_S = 86_400.0

X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
ConcatMode = Literal["stream_copy", "reencode"]


class ClipRef(BaseModel):
    """One clip of the film, optionally trimmed to [in_s, out_s) of its own timeline."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="artifact URI of a clip with a video stream")
    in_s: float | None = Field(default=None, ge=0, le=MAX_TIME_S, description="start of the used part (s); default 0")
    out_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S, description="end of the used part (s); default the clip's end")

    @model_validator(mode="after")
    def _ordered(self) -> "ClipRef":
        if self.in_s is not None and self.out_s is not None and self.out_s <= self.in_s:
            raise ValueError(f"out_s ({self.out_s}) must be greater than in_s ({self.in_s})")
        return self

    @property
    def trimmed(self) -> bool:
        return self.in_s is not None or self.out_s is not None


class Subtitle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_s: float = Field(ge=0, le=MAX_TIME_S)
    end_s: float = Field(gt=0, le=MAX_TIME_S)
    text: str = Field(min_length=1, max_length=MAX_SUBTITLE_CHARS)

    @model_validator(mode="after")
    def _ordered(self) -> "Subtitle":
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be greater than start_s ({self.start_s})")
        if not self.text.strip():
            raise ValueError("text must not be blank")
        return self


class AssembleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loudness_lufs: float = Field(default=-16.0, ge=-40.0, le=-5.0, description="integrated loudness target")
    burn_subtitles: bool = Field(default=False, description="also render subtitles into the pixels (re-encodes)")
    crf: int = Field(default=20, ge=0, le=51, description="x264 quality when re-encoding")
    preset: X264Preset = "veryfast"
    audio_bitrate: str = Field(default="192k", pattern=r"^[1-9][0-9]{1,2}k$")
    force_reencode: bool = Field(default=False, description="re-encode even when stream copy is possible")


class MusicTrack(BaseModel):
    """A music bed under the whole film (see ``assemble_ffmpeg.music``)."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="artifact URI of an audio file")
    level_lufs: float = Field(default=MUSIC_LEVEL_LUFS, ge=-50.0, le=-10.0, description="bed loudness between lines")
    duck_db: float = Field(default=MUSIC_DUCK_DB, ge=6.0, le=40.0, description="how far the bed drops under dialogue")
    fade_s: float = Field(default=MUSIC_FADE_S, ge=0.0, le=10.0, description="fade in and out")


class AssembleRequest(ToolRequest):
    """An ordered edit: clips, one optional audio track, optional subtitles.

    The film's audio is ``audio_uri`` when given (padded or trimmed to the
    picture); otherwise the clips' own audio in clip order (silence for clips
    without audio); with neither, a silent AAC track so players behave.
    """

    clips: list[ClipRef] = Field(min_length=1, max_length=MAX_CLIPS)
    audio_uri: str | None = None
    music: MusicTrack | None = Field(default=None, description="music bed, ducked under the audio track")
    subtitles: list[Subtitle] = Field(default_factory=list, max_length=MAX_SUBTITLES)
    options: AssembleOptions = Field(default_factory=AssembleOptions)


class AssembleResponse(ToolResponse):
    video_uri: str = ""
    subtitles_uri: str | None = None
    concat_mode: ConcatMode = "reencode"
    duration_s: float = 0.0
    audio_source: Literal["audio_uri", "clips", "silence"] = "silence"
    input_loudness_lufs: float | None = None
    output_loudness_lufs: float | None = None
    music: dict[str, float | bool] | None = None
