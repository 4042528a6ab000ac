"""The cast stage: one reference portrait per character, which every keyframe is then conditioned on.

Why: a keyframe drawn from its prompt alone shows a different person in every
shot.  Each character gets one portrait (item ``cast_<character_id>``, an
artifact of type ``portrait`` under the run's ``cast`` stage):

- the user's image when the plan names one (``Character.reference_image_id``,
  an artifact — ``make --cast kit=photo.png`` uploads it and sets the id); the
  portrait is then a byte-for-byte copy of it (same sha256), taken as given
  (no QA: there is nothing to regenerate);
- otherwise images_sdxl renders it: a neutral, front-facing head-and-shoulders
  portrait from the character's description, seeded by the plan seed and the
  character id (:func:`portrait_seed`), checked by QA like a keyframe and
  redrawn with a new seed when QA fails.

Keyframes name the portraits of the characters their prompt names
(:func:`references`), so the step cache re-renders exactly the keyframes (and
the clips between them) whose characters' portraits changed.  Functions of the
run, like ``dialogue_stage``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from function_tools.images_sdxl.models import CharacterReference, ImagesSdxlRequest
from function_tools.qa_qwen2vl.models import QAMedia, QARequest
from sparkle_motion.agents.production_steps import StageFailed, StepOutcome, tool_payload
from sparkle_motion.agents.review_gates import item_seed
from sparkle_motion.errors import InvalidInputError, SparkleError

if TYPE_CHECKING:
    from sparkle_motion.agents.production_run import ProductionRun

PORTRAIT_QA_BUDGET = 2  # redraws with a new seed after a failed QA, per portrait
PORTRAIT_SEED_STRIDE = 7919
PORTRAIT_NEGATIVE = "profile view, back view, looking away, crowd, text, watermark"
MAX_CAST_PHOTOS = 8
CAST_CHECKS = frozenset({"character_consistency"})  # the QA checks that compare a keyframe with portraits


def portrait_seed(plan_seed: int, character_id: str) -> int:
    """A seed of the plan and the character: stable across runs, different for each character."""
    return int.from_bytes(hashlib.sha256(f"{plan_seed}:{character_id}".encode()).digest()[:4], "big")


def portrait_prompt(character: Any) -> str:
    description = character.description.strip().rstrip(".")
    about = f", {description}" if description else ""
    return (f"Head and shoulders portrait of {character.name}{about}, facing the camera, neutral expression, "
            "plain background")


def portrait_size(width: int, height: int) -> int:
    """A square portrait as tall as the film's shorter side (a multiple of 8, at least 64)."""
    return max(64, min(width, height) // 8 * 8)


def cast(run: "ProductionRun") -> dict[str, Any]:
    run.begin_stage("cast")
    portraits: dict[str, str] = {}
    for character in run.plan.characters:
        if character.reference_image_id is not None:
            portraits[character.id] = _user_portrait(run, character)
        else:
            portraits[character.id] = _rendered_portrait(run, character)
    run.results["cast"] = {"portraits": portraits}
    return run.results["cast"]


def _user_portrait(run: "ProductionRun", character: Any) -> str:
    field = f"characters[{run.plan.characters.index(character)}].reference_image_id"
    try:
        source = run.store.get(character.reference_image_id, field=field)
    except SparkleError as exc:
        raise StageFailed(f"portrait of {character.name!r}: {exc.message}",
                          context={"stage": "cast", "field": field}) from exc
    if not source.media_type.startswith("image/"):
        raise StageFailed(f"portrait of {character.name!r}: artifact {source.artifact_id} is {source.media_type}, "
                          "not an image", context={"stage": "cast", "field": field})

    def work() -> StepOutcome:
        with run.store.open(source.uri) as stream:
            portrait = run.store.put(run.run_id, "cast", "portrait", stream, source.media_type,
                                     metadata={"tool": "production_agent", "character_id": character.id,
                                               "source": "user", "source_uri": source.uri},
                                     media={"width": source.width, "height": source.height},
                                     ext=Path(source.local_path).suffix or None)
        return StepOutcome({"uri": portrait.uri, "source": "user", "sha256": portrait.sha256,
                            "prompt": f"{character.name}: the user's portrait"},
                           [portrait.artifact_id])

    inputs = {"reference_image": source.uri, "sha256": source.sha256}
    return run.step("cast", f"cast_{character.id}", None, inputs, work)["uri"]


def _rendered_portrait(run: "ProductionRun", character: Any) -> str:
    side = portrait_size(run.width, run.height)
    base_seed = portrait_seed(int(run.plan.metadata.seed or 0), character.id)
    item = f"cast_{character.id}"
    for attempt in range(1, PORTRAIT_QA_BUDGET + 2):
        with run.building("images_sdxl", "cast"):
            request = ImagesSdxlRequest(
                prompt=portrait_prompt(character), negative_prompt=PORTRAIT_NEGATIVE,
                # A reviewer's re-roll of the portrait (review_gates) replaces the derived seed.
                seed=item_seed(run, item, base_seed, attempt, PORTRAIT_SEED_STRIDE), width=side, height=side, count=1,
                characters=[character.name],
                references=[CharacterReference(character=character.name, description=character.description)])

        def work(request: ImagesSdxlRequest = request) -> StepOutcome:
            response = run.invoke("images_sdxl", request, stage="cast")
            image = response["artifacts"][0]
            with run.store.open(image["uri"]) as stream:
                portrait = run.store.put(run.run_id, "cast", "portrait", stream, image["media_type"],
                                         metadata={"tool": "production_agent", "character_id": character.id,
                                                   "source": "rendered", "source_uri": image["uri"],
                                                   "seed": request.seed, "prompt": request.prompt},
                                         media={"width": side, "height": side}, ext=".png")
            return StepOutcome({"uri": portrait.uri, "source": "rendered", "seed": request.seed,
                                "prompt": request.prompt},
                               [image["artifact_id"], portrait.artifact_id])

        out = run.step("cast", item, "images_sdxl", tool_payload(request), work)
        if run.qa_mode != "full":
            return out["uri"]
        with run.building("qa_qwen2vl", "cast"):
            qa = QARequest(media=[QAMedia(uri=out["uri"], kind="image", role=item)],
                           checks=["degenerate_image", "text_policy"],
                           expectations={"prompt": request.prompt})
        if run._qa("cast", f"{item}.qa" if attempt == 1 else f"{item}.qa{attempt}", qa) != "fail":
            return out["uri"]
        run.registry.log(run.run_id, "info", f"cast: redrawing the portrait of {character.name} with a new seed")
    raise StageFailed(f"cast: QA still fails for the portrait of {character.name} after {PORTRAIT_QA_BUDGET} "
                      "redraws", context={"stage": "cast", "failed": [item]})


def references(run: "ProductionRun", names: list[str]) -> list[CharacterReference]:
    """The portraits of the named characters, for a keyframe request (empty before the cast stage ran)."""
    portraits = (run.results.get("cast") or {}).get("portraits") or {}
    by_name = {c.name: c for c in run.plan.characters}
    return [CharacterReference(character=name, uri=portraits[by_name[name].id])
            for name in names if name in by_name and by_name[name].id in portraits]


def consistency_request(run: "ProductionRun", names: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The check and expectations a keyframe's QA adds when the plan has portraits: ([check], expectations)."""
    refs = references(run, names)
    if not refs:
        return [], {}
    return ["character_consistency"], {"characters": [{"name": r.character, "portrait_uri": r.uri} for r in refs]}


# -- uploads: `make --cast kit=photo.png` ------------------------------------------------------------

_CAST_SPEC = re.compile(r"^(?P<key>[^=]{1,128})=(?P<path>.+)$")


def parse_cast_option(values: list[str]) -> dict[str, str]:
    """``["kit=photo.png", ...]`` → {character key: path}; errors name ``--cast``."""
    if len(values) > MAX_CAST_PHOTOS:
        raise InvalidInputError(f"at most {MAX_CAST_PHOTOS} --cast photos", field="--cast")
    cast_files: dict[str, str] = {}
    for value in values:
        match = _CAST_SPEC.match(value.strip())
        if match is None:
            raise InvalidInputError(f"--cast {value!r}: expected CHARACTER=PATH, e.g. kit=photos/kit.png",
                                    field="--cast")
        cast_files[match["key"].strip()] = match["path"].strip()
    return cast_files


def upload_cast(settings: Any, values: list[str], say: Any = print) -> dict[str, str]:
    """``make --cast kit=photo.png``: each photo checked and stored (run ``uploads``); {character key: artifact id}."""
    from sparkle_motion.artifacts import ArtifactStore
    from sparkle_motion.artifacts.uploads import put_image_file

    store = ArtifactStore(settings.home)
    ids = {}
    for key, path in parse_cast_option(values).items():
        manifest = put_image_file(store, Path(path), field=f"--cast {key}")
        say(f"portrait of {key}: {Path(path).name} — {manifest.uri}")
        ids[key] = manifest.artifact_id
    return ids


def cast_plan(plan: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    """The plan with each named character's ``reference_image_id`` set (a character by id or name, any case)."""
    characters = [dict(c) for c in plan.get("characters") or []]
    for key, artifact_id in images.items():
        wanted = key.casefold()
        match = next((c for c in characters if str(c.get("id", "")).casefold() == wanted
                      or str(c.get("name", "")).casefold() == wanted), None)
        if match is None:
            known = ", ".join(f"{c.get('id')} ({c.get('name')})" for c in characters) or "none"
            raise InvalidInputError(f"--cast {key}: the plan has no such character; it has {known}", field="--cast")
        match["reference_image_id"] = artifact_id
    return {**plan, "characters": characters}
