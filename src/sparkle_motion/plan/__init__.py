"""The MoviePlan contract: models, cross-field rules and validation helpers."""

from sparkle_motion.plan.language import normalize_language_tag
from sparkle_motion.plan.models import (
    AUTO_MODEL,
    BaseImage,
    Character,
    DialogueLine,
    ImagesProfile,
    MoviePlan,
    MusicBed,
    PlanMetadata,
    RenderProfile,
    Shot,
    SilenceEntry,
    TimelineEntry,
    TtsProfile,
    VideoProfile,
    VoiceProfile,
    canonical_plan_json,
)
from sparkle_motion.plan.rules import (
    MAX_CHARACTERS,
    MAX_DIALOGUE_CHARS,
    MAX_RUNTIME_S,
    MAX_SHOT_DURATION_S,
    MAX_SHOTS,
    MAX_TIMELINE_ENTRIES,
    TIMELINE_TOLERANCE_S,
    Violation,
    check_plan_rules,
    format_path,
)
from sparkle_motion.plan.validation import (
    MAX_PLAN_FILE_BYTES,
    load_plan_file,
    plan_hash,
    plan_violations,
    summarize,
    validate_plan,
    violations_from_validation_error,
)

__all__ = [
    "AUTO_MODEL", "BaseImage", "Character", "DialogueLine", "ImagesProfile", "MoviePlan", "MusicBed", "PlanMetadata",
    "RenderProfile", "Shot", "SilenceEntry", "TimelineEntry", "TtsProfile", "VideoProfile", "VoiceProfile",
    "canonical_plan_json", "normalize_language_tag",
    "MAX_CHARACTERS", "MAX_DIALOGUE_CHARS", "MAX_RUNTIME_S", "MAX_SHOT_DURATION_S", "MAX_SHOTS",
    "MAX_TIMELINE_ENTRIES", "TIMELINE_TOLERANCE_S", "Violation", "check_plan_rules", "format_path",
    "MAX_PLAN_FILE_BYTES", "load_plan_file", "plan_hash", "plan_violations", "summarize", "validate_plan",
    "violations_from_validation_error",
]
