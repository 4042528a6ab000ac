"""Request/response models of videos_wan, shared by every backend.

Both the CPU ``keyframe_motion`` backend and the GPU ``wan2.1-flf2v`` backend
turn a start and an end keyframe into a clip.  Diffusion-only options (steps,
guidance_scale, negative_prompt) are validated for both; a backend that does
not diffuse records them and lists them in ``ignored_options``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sparkle_motion.artifacts import ArtifactManifest
from sparkle_motion.services.models import ToolRequest, ToolResponse

MIN_FRAMES = 2
MAX_FRAMES = 1441          # one minute at 24 fps, plus the closing keyframe
MIN_SIDE = 64
MAX_SIDE = 2048
MAX_FPS = 60.0
# Work cap: 1441 frames of 720p.  A bigger frame size buys fewer frames.
MAX_TOTAL_PIXELS = MAX_FRAMES * 1280 * 720
SEED_MAX = 2**32 - 1
# The longest clip: MAX_FRAMES at the lowest fps (1).  A bound in the schema, so 1e308 is a 422, not an overflow.
MAX_DURATION_S = MAX_FRAMES / 1.0

DIFFUSION_OPTIONS = ("negative_prompt", "steps", "guidance_scale")


class VideosWanRequest(ToolRequest):
    start_frame_uri: str = Field(min_length=1, max_length=512, description="artifact URI of the first frame (image)")
    end_frame_uri: str = Field(min_length=1, max_length=512, description="artifact URI of the last frame (image)")
    motion_prompt: str = Field(default="", max_length=1000,
                               description="camera move, e.g. 'slow push-in', 'pan left', 'crane up', 'handheld'")
    prompt: str = Field(default="", max_length=2000, description="what happens in the shot (diffusion conditioning)")
    negative_prompt: str = Field(default="", max_length=2000, description="diffusion backends only")
    fps: float = Field(default=24.0, ge=1.0, le=MAX_FPS)
    num_frames: int | None = Field(default=None, ge=MIN_FRAMES, le=MAX_FRAMES,
                                   description="frames in the clip, both keyframes included; or give duration_s")
    # validate_default: the "one of num_frames/duration_s" rule runs even when duration_s is absent.
    duration_s: float | None = Field(default=None, gt=0.0, le=MAX_DURATION_S, validate_default=True,
                                     description="clip length; num_frames = round(duration_s * fps)")
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE,
                              description="even; multiples of 8 recommended; default: the start frame's width")
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE,
                               description="even; multiples of 8 recommended; default: the start frame's height")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX,
                             description="drives handheld shake (and diffusion noise); default: derived from the "
                                         "frame URIs and motion prompt")
    steps: int | None = Field(default=None, ge=1, le=200, description="denoising steps (diffusion backends)")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0, description="diffusion backends only")

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int | None) -> int | None:
        if value is not None and value % 2:
            raise ValueError(f"must be even for H.264 yuv420p (got {value})")
        return value

    @field_validator("duration_s")
    @classmethod
    def _frames_or_duration(cls, duration_s: float | None, info: ValidationInfo) -> float | None:
        # Runs after fps and num_frames (declaration order), so the 422 names duration_s.
        if "fps" not in info.data or "num_frames" not in info.data:
            return duration_s  # fps/num_frames already failed; pydantic reports those
        fps, num_frames = info.data["fps"], info.data["num_frames"]
        if duration_s is None:
            if num_frames is None:
                raise ValueError("give num_frames or duration_s")
            return duration_s
        derived = round(duration_s * fps)
        if num_frames is not None and derived != num_frames:
            raise ValueError(f"duration_s={duration_s} at fps={fps} is {derived} frames, "
                             f"but num_frames={num_frames}")
        if not MIN_FRAMES <= derived <= MAX_FRAMES:
            raise ValueError(f"duration_s={duration_s} at fps={fps} gives {derived} frames; "
                             f"allowed {MIN_FRAMES}..{MAX_FRAMES}")
        return duration_s

    @property
    def frame_count(self) -> int:
        if self.num_frames is not None:
            return self.num_frames
        assert self.duration_s is not None  # guaranteed by _frames_or_duration
        return round(self.duration_s * self.fps)


class CameraMoveInfo(BaseModel):
    """The camera move parsed from ``motion_prompt``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="summary, e.g. 'push_in+pan_left+handheld' or 'static'")
    zoom: str | None = Field(default=None, description="'push_in' | 'pull_out'")
    pan: str | None = Field(default=None, description="'left' | 'right'")
    tilt: str | None = Field(default=None, description="'up' | 'down'")
    handheld: bool = False
    strength: float = Field(default=1.0, description="amplitude multiplier from 'slow'/'fast' words")
    matched: list[str] = Field(default_factory=list, description="the phrases that selected the move")


class ResizedInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    from_size: tuple[int, int]
    to_size: tuple[int, int]
    mode: str = Field(description="'cover_crop': scaled to cover the output, centre-cropped (aspect kept)")


class OomEvent(BaseModel):
    """One out-of-memory during generation and what the ``oom_policy`` did about it."""

    model_config = ConfigDict(extra="forbid")

    attempt: int = Field(description="1 for the first try")
    action: str = Field(description="'shrink' (retried smaller), 'chunk' (retried in time chunks) or 'fail' (raised)")
    size: tuple[int, int] = Field(description="generation width, height of the attempt that ran out of memory")
    num_frames: int = Field(description="frames the model was asked for in that attempt")
    chunks: int = Field(default=1, description="time chunks of that attempt (1: the whole shot at once)")
    retry_size: tuple[int, int] | None = None
    retry_chunks: int | None = None
    error: str = ""


class WanGenerationInfo(BaseModel):
    """How a diffusion backend produced the clip: model, device, sampler, geometry, memory (GPU backends only)."""

    model_config = ConfigDict(extra="forbid")

    model_key: str
    device: str
    dtype: str
    load_s: float = Field(description="0 when the warm model was reused")
    inference_s: float
    reused: bool = Field(description="the model was already loaded in this process")
    load_count: int = Field(description="times this process loaded this model key")
    applied_memory_options: list[str] = Field(default_factory=list)
    peak_vram_mb: float | None = Field(default=None, description="CUDA only")
    process_peak_rss_mb: float | None = Field(default=None, description="host memory peak of the tool process")
    memory_plan: dict[str, Any] | None = Field(
        default=None, description="the card-size memory plan the model was placed with (docs/gpu.md)")
    load_peak_rss_mb: float | None = Field(default=None, description="host memory peak up to the end of the load")
    steps: int
    steps_completed: int = Field(description="denoising steps reported by callback_on_step_end, all passes")
    passes: int = Field(default=1, description="pipeline calls (more than 1 when rendered in chunks)")
    guidance_scale: float
    text_prompt: str
    negative_prompt: str = ""
    scheduler: str = Field(default="", description="the scheduler class the pipeline ran with")
    flow_shift: float | None = Field(default=None, description="its flow-matching shift (None when it has none)")
    conditioning_frames: list[int] = Field(default_factory=list,
                                           description="generated-frame indices the keyframes condition "
                                                       "(ltx-video: [0, last])")
    generated_width: int
    generated_height: int
    generated_frames: int = Field(description="frames the model rendered (4k+1 per pass for Wan, 8k+1 for LTX), "
                                              "before time resampling")
    temporal_resample: str = Field(description="'none' | 'nearest' | 'linear': generated frames → num_frames")
    chunks: int = 1
    oom_policy: str
    oom_events: list[OomEvent] = Field(default_factory=list)


class VideosWanResponse(ToolResponse):
    video: ArtifactManifest | None = None
    num_frames: int = 0
    fps: float = 0.0
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    seed: int = 0
    camera_move: CameraMoveInfo | None = None
    resized_inputs: list[ResizedInput] = Field(default_factory=list)
    ignored_options: list[str] = Field(default_factory=list,
                                       description="request options this backend recorded but did not use")
    warnings: list[str] = Field(default_factory=list,
                                description="things the caller should know, e.g. identical keyframes (a still clip)")
    generation: WanGenerationInfo | None = Field(default=None, description="diffusion backends only")
