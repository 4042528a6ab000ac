"""Request/response models of qa_qwen2vl, shared by the `signal` (CPU) and `qwen2-vl` (GPU) backends.

The GPU backend adds its vision-language checks to ``CheckName`` and fills the
same :class:`QAReport`; the media, expectations and report shapes stay.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from function_tools.qa_qwen2vl.report import MAX_INTERVALS, QACheckResult, QAReport, TimeInterval
from sparkle_motion.artifacts.models import MAX_URI_CHARS
from sparkle_motion.services import ToolRequest, ToolResponse

MAX_MEDIA = 16
MAX_PROMPT_CHARS = 8000

MediaKind = Literal["image", "video", "audio"]

CheckName = Literal[
    "black_frames",
    "frozen_frames",
    "missing_speech",
    "unexpected_speech",
    "clipping",
    "duration_mismatch",
    "loudness",
    "continuity",
    "degenerate_image",
    "text_policy",
    # A keyframe against its characters' portraits (consistency.py on `signal`; an image-pair question on qwen2-vl).
    "character_consistency",
    # Vision-language checks: only the `qwen2-vl` backend runs them (the `signal`
    # backend reports them inconclusive); a model verdict that cannot be parsed
    # is inconclusive, never passed.
    "prompt_adherence",
    "anatomy",
    "artifacts",
    "safety",
]
#: The checks a vision-language model judges from sampled frames.
VLM_CHECKS: tuple[str, ...] = ("prompt_adherence", "anatomy", "artifacts", "safety")
#: Every check name, in report order.
CHECK_NAMES: tuple[str, ...] = CheckName.__args__  # type: ignore[attr-defined]
#: The measurement checks (what `signal` runs by default; `qwen2-vl` runs them plus VLM_CHECKS).
ALL_CHECKS: tuple[str, ...] = tuple(n for n in CHECK_NAMES if n not in VLM_CHECKS)

#: Which media kinds each check reads. Audio checks also run on the audio stream of a video.
CHECK_MEDIA_KINDS: dict[str, frozenset[str]] = {
    "black_frames": frozenset({"video"}),
    "frozen_frames": frozenset({"video"}),
    "missing_speech": frozenset({"audio", "video"}),
    "unexpected_speech": frozenset({"audio", "video"}),
    "clipping": frozenset({"audio", "video"}),
    "duration_mismatch": frozenset({"audio", "video"}),
    "loudness": frozenset({"audio", "video"}),
    "continuity": frozenset({"image", "video"}),
    "degenerate_image": frozenset({"image"}),
    "text_policy": frozenset(),  # reads expectations.prompt, not media
    "character_consistency": frozenset({"image"}),  # keyframes only, never video frames
    "prompt_adherence": frozenset({"image", "video"}),  # against expectations.prompt
    "anatomy": frozenset({"image", "video"}),
    "artifacts": frozenset({"image", "video"}),
    "safety": frozenset({"image", "video"}),
}
AUDIO_STREAM_CHECKS = frozenset({"missing_speech", "unexpected_speech", "clipping", "loudness"})


class QAMedia(BaseModel):
    """One input artifact and how to read it."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=MAX_URI_CHARS, description="artifact URI or id in the store")
    kind: MediaKind
    role: str | None = Field(default=None, max_length=64,
                             description="free label echoed in reasons, e.g. 'final_cut', 'shot_3_keyframe'")


class CharacterPortrait(BaseModel):
    """A character the media should show, and the portrait it must look like (``character_consistency``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="as the prompt and the storyboard name them")
    portrait_uri: str = Field(min_length=1, max_length=MAX_URI_CHARS, description="artifact URI of the portrait")


class QAExpectations(BaseModel):
    """What the media is supposed to be; checks that compare against an expectation need it."""

    model_config = ConfigDict(extra="forbid")

    duration_s: float | None = Field(default=None, gt=0, le=86_400)
    duration_tolerance_s: float | None = Field(
        default=None, gt=0, le=60,
        description="default: one frame of the video being checked, or the policy's audio tolerance (0.05 s)")
    speech_intervals: list[TimeInterval] | None = Field(
        default=None, max_length=MAX_INTERVALS,
        description="where speech is expected; the rest of the audio is expected silent ([] = all silent)")
    reference_frame_uri: str | None = Field(
        default=None, min_length=1, max_length=MAX_URI_CHARS,
        description="image or video whose first frame each image / video's first frame must continue from")
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                               description="text checked by text_policy; the intended content for prompt_adherence")
    loudness_lufs: float | None = Field(default=None, ge=-70, le=0, description="integrated loudness target")
    loudness_tolerance_lu: float | None = Field(default=None, gt=0, le=30)
    allow_holds: list[TimeInterval] = Field(default_factory=list, max_length=MAX_INTERVALS,
                                            description="intended still segments frozen_frames ignores")
    characters: list[CharacterPortrait] | None = Field(
        default=None, max_length=8, description="the characters the keyframe shows and their portraits "
                                                "(character_consistency; checked where the prompt says they "
                                                "face the camera)")


class QARequest(ToolRequest):
    """Media to inspect, the checks wanted (default: every check that applies) and the expectations."""

    media: list[QAMedia] = Field(default_factory=list, max_length=MAX_MEDIA)
    checks: list[CheckName] | None = Field(
        default=None, min_length=1, max_length=len(CHECK_NAMES) * 2,
        description="check names; omitted = every check whose media and expectations are present")
    expectations: QAExpectations = Field(default_factory=QAExpectations)

    @field_validator("checks")
    @classmethod
    def _dedupe(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


class QAResponse(ToolResponse):
    """The report, inline and as the stored JSON artifact ``report_uri`` (also in ``artifacts``)."""

    report: QAReport
    report_uri: str


__all__ = [
    "ALL_CHECKS",
    "CharacterPortrait",
    "AUDIO_STREAM_CHECKS",
    "CHECK_MEDIA_KINDS",
    "CHECK_NAMES",
    "CheckName",
    "MAX_MEDIA",
    "MediaKind",
    "QACheckResult",
    "QAExpectations",
    "QAMedia",
    "QAReport",
    "QARequest",
    "QAResponse",
    "TimeInterval",
    "VLM_CHECKS",
]
