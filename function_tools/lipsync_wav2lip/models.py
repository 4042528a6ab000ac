"""Request/response models of lipsync_wav2lip, shared by the `mux` and `wav2lip` backends."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sparkle_motion.services import ToolRequest, ToolResponse

MAX_WORD_TIMINGS = 5000
MAX_WORD_CHARS = 200
MAX_SPEAKER_CHARS = 100
# Word times are seconds into one shot's audio; a day is far past any shot and keeps numbers finite.
MAX_TIME_S = 86_400.0
MAX_PAD_PX = 512
Pad = Annotated[int, Field(ge=0, le=MAX_PAD_PX)]

FitMode = Literal["error", "pad", "trim", "pad_or_trim"]


class WordTiming(BaseModel):
    """One word as timed by the TTS tool (seconds from the start of the audio)."""

    model_config = ConfigDict(extra="forbid")

    word: str = Field(min_length=1, max_length=MAX_WORD_CHARS)
    start_s: float = Field(ge=0, le=MAX_TIME_S)
    end_s: float = Field(gt=0, le=MAX_TIME_S)
    speaker: str | None = Field(
        default=None, min_length=1, max_length=MAX_SPEAKER_CHARS,
        description="the character saying the word, named as the storyboard names its figure; the mux backend "
                    "opens that face's mouth (unset: the clip's only face)")

    @model_validator(mode="after")
    def _ordered(self) -> "WordTiming":
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be greater than start_s ({self.start_s})")
        return self


class LipsyncOptions(BaseModel):
    """How to combine the clip and the dialogue.

    ``fit`` decides what happens when the audio and video durations differ by
    more than one video frame: ``error`` refuses (422 naming audio_uri); ``pad``
    appends silence to short audio; ``trim`` cuts long audio; ``pad_or_trim``
    does whichever applies. The video is never re-encoded or retimed.

    ``pads``, ``resize_factor`` and ``nosmooth`` steer face detection in the
    Wav2Lip backend; the mux backend accepts them and records them as unused.
    """

    model_config = ConfigDict(extra="forbid")

    fit: FitMode = "error"
    word_timings: list[WordTiming] | None = Field(default=None, max_length=MAX_WORD_TIMINGS)
    pads: tuple[Pad, Pad, Pad, Pad] = Field(default=(0, 10, 0, 0),
                                            description="face box padding top, bottom, left, right (pixels)")
    resize_factor: int = Field(default=1, ge=1, le=8)
    nosmooth: bool = False
    audio_bitrate: str = Field(default="128k", pattern=r"^[1-9][0-9]{1,2}k$")


class LipsyncRequest(ToolRequest):
    video_uri: str = Field(description="artifact URI of the clip (must have a video stream)")
    audio_uri: str = Field(description="artifact URI of the dialogue (any audio ffmpeg reads; WAV from TTS)")
    options: LipsyncOptions = Field(default_factory=LipsyncOptions)


class AlignmentSegment(BaseModel):
    """A stretch of speech: times in seconds, frames as inclusive indices at the video fps."""

    start_s: float
    end_s: float
    start_frame: int
    end_frame: int
    text: str | None = None


class AlignmentMap(BaseModel):
    """The alignment artifact (JSON): where speech falls on the clip's frames."""

    source: Literal["vad", "word_timings"]
    fps: float
    frame_count: int
    video_duration_s: float
    audio_duration_s: float
    output_audio_duration_s: float
    fit_applied: Literal["none", "pad", "trim"]
    segments: list[AlignmentSegment]
    lip_motion: bool = False


class BackendFallback(BaseModel):
    """The backend that could not do the job, the one that did it instead, and why (never silent).

    Serialized as ``{"from": ..., "to": ..., "reason": ..., "detail": ...}``; ``reason`` is the
    typed error's code (e.g. ``face_not_detected``), ``detail`` its message.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    from_backend: str = Field(alias="from")
    to_backend: str = Field(alias="to")
    reason: str
    detail: str = ""


class LipsyncResponse(ToolResponse):
    video_uri: str = ""
    alignment_uri: str = ""
    lip_motion: bool = False
    fit_applied: Literal["none", "pad", "trim"] = "none"
    segments: int = 0
    fallback: BackendFallback | None = Field(
        default=None, description="set when the configured backend handed the request to another one")
