"""``character_consistency`` on the ``qwen2-vl`` backend: an image-pair question with a JSON verdict.

For each keyframe and each character the rule of :func:`consistency.faces_camera`
selects (named by the prompt, facing the camera), Qwen2-VL sees two images —
the character's portrait, then the keyframe — and answers whether the keyframe
shows the same character (face, hair, clothes), as
``{"character_consistency": {"verdict", "confidence", "reason"}}``.  The answer
is parsed by the backend's own parser: no JSON, an invalid verdict or a
confidence below the profile's ``min_confidence`` is ``inconclusive``, never a
pass.  One result per keyframe: failed if any character fails, else
inconclusive if any answer was unusable, else passed.

Functions of a ``generate(images, prompt) -> text`` and a ``parse(text, checks)``
handed in by the backend, so this module needs neither the model nor the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from function_tools.qa_qwen2vl.consistency import faces_camera
from function_tools.qa_qwen2vl.report import QACheckResult

NAME = "character_consistency"
RAW_OUTPUT_EXCERPT = 400


def pair_prompt(character: str) -> str:
    return (f"You are a strict continuity reviewer for a film. The first image is the reference portrait of the "
            f"character {character}. The second image is a frame of the film that should show {character}. "
            f"Is the character {character} in the second image the same person as in the portrait (same face, "
            "hair and clothes)? Answer with only this JSON object and no other text: "
            '{"character_consistency": {"verdict": "pass" or "fail", "confidence": 0.0 to 1.0, '
            '"reason": "one short sentence"}}')


def ask_character_consistency(keyframe: Path, media_uri: str, prompt: str, portraits: list[tuple[str, Path]], *,
                              generate: Callable[[list[Image.Image], str], str],
                              parse: Callable[[str, list[str]], dict[str, Any]], min_confidence: float,
                              fit: Callable[[Image.Image], Image.Image]) -> QACheckResult:
    checked = [(who, path) for who, path in portraits if faces_camera(prompt, who)]
    if not checked:
        return QACheckResult(name=NAME, status="passed", media_uri=media_uri,
                             detail="no character the prompt names faces the camera; nothing to compare")
    with Image.open(keyframe) as frame_file:
        frame = fit(frame_file.convert("RGB"))
    answers: dict[str, Any] = {}
    failed, unusable = [], []
    for who, path in checked:
        with Image.open(path) as portrait_file:
            portrait = fit(portrait_file.convert("RGB"))
        text = generate([portrait, frame], pair_prompt(who))
        verdict = parse(text, [NAME])[NAME]
        if isinstance(verdict, str):
            answers[who] = {"inconclusive": verdict, "raw_output": text[:RAW_OUTPUT_EXCERPT]}
            unusable.append(f"{who}: {verdict}")
            continue
        answers[who] = {"verdict": verdict.verdict, "confidence": verdict.confidence, "reason": verdict.reason}
        if verdict.confidence is not None and verdict.confidence < min_confidence:
            unusable.append(f"{who}: confidence {verdict.confidence:.2f} below {min_confidence:.2f}")
        elif verdict.verdict == "fail":
            failed.append(f"{who}: {verdict.reason or 'unlike the portrait'}")
    metrics = {"answers": answers}
    if failed:
        return QACheckResult(name=NAME, status="failed", media_uri=media_uri, metrics=metrics,
                             detail="; ".join(failed))
    if unusable:
        return QACheckResult(name=NAME, status="inconclusive", media_uri=media_uri, metrics=metrics,
                             detail="; ".join(unusable))
    return QACheckResult(name=NAME, status="passed", media_uri=media_uri, metrics=metrics,
                         detail=f"the model finds {', '.join(who for who, _ in checked)} like their portrait")
