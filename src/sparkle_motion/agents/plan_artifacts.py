"""A plan's references to the user's own files, checked at intake.

Why at intake: a portrait (``characters[i].reference_image_id``), a voice clip
(``characters[i].voice_profile.reference_audio_id``) or a music bed
(``music.artifact_id``) that the store does not hold, or that is not the kind of
media its field needs, would otherwise fail the run stages later — after
portraits or speech were already paid for.  Here it is a 422 naming the field,
and no run is created.
"""

from __future__ import annotations

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.errors import InvalidInputError, SparkleError
from sparkle_motion.plan import MoviePlan


def plan_artifact_refs(plan: MoviePlan) -> list[tuple[str, str, str]]:
    """(JSON path, artifact id, media type prefix) of every artifact the plan names."""
    refs: list[tuple[str, str, str]] = []
    for index, character in enumerate(plan.characters):
        if character.reference_image_id is not None:
            refs.append((f"characters[{index}].reference_image_id", character.reference_image_id, "image/"))
        audio_id = getattr(character.voice_profile, "reference_audio_id", None)
        if audio_id is not None:
            refs.append((f"characters[{index}].voice_profile.reference_audio_id", audio_id, "audio/"))
    if plan.music is not None:
        refs.append(("music.artifact_id", plan.music.artifact_id, "audio/"))
    return refs


def check_plan_artifacts(plan: MoviePlan, store: ArtifactStore) -> None:
    """Raise InvalidInputError (422) naming the first field whose artifact is missing or of the wrong kind."""
    for field, artifact_id, media_prefix in plan_artifact_refs(plan):
        try:
            manifest = store.get(artifact_id, field=field)
        except SparkleError as exc:
            raise InvalidInputError(f"{field}: {exc.message} (upload the file first: `make --cast`/`--music`, "
                                    "the studio or POST /artifacts/upload)", field=field) from None
        if not manifest.media_type.startswith(media_prefix):
            raise InvalidInputError(f"{field}: artifact {artifact_id} is {manifest.media_type}; this field needs "
                                    f"{media_prefix}*", field=field)
