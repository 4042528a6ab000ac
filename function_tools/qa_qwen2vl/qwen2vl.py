"""The ``qwen2-vl`` backend: the signal checks plus a vision-language model's verdicts.

Measurement checks (black/frozen frames, speech, loudness, continuity, ...) are
the ``signal`` backend's, run through a composed :class:`SignalChecks`.  The
VLM checks — ``prompt_adherence`` (against ``expectations.prompt``),
``anatomy`` (e.g. finger count), ``artifacts`` and ``safety`` — are judged by
Qwen2-VL (``Qwen2VLForConditionalGeneration`` + ``AutoProcessor``) from frames
sampled evenly from each clip (or the image itself).  The model is asked for a
JSON verdict per check; its answer is parsed and validated by
:func:`parse_vlm_verdicts`, and anything that does not parse or validate is
``inconclusive`` — a model that says nothing usable never makes a check pass.

Profile options: device, dtype, keep_warm_s, lock_timeout_s, memory,
max_new_tokens, frames_per_video, frame_max_side, min_confidence, policy_path
(as `signal`) and the ``simulate_oom: load|inference`` test hook.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from function_tools.qa_qwen2vl import checks as qc
from function_tools.qa_qwen2vl.consistency_vlm import ask_character_consistency
from function_tools.qa_qwen2vl.models import CHECK_NAMES, VLM_CHECKS, QARequest, QAResponse
from function_tools.qa_qwen2vl.report import QACheckResult, build_report
from function_tools.qa_qwen2vl.signal_checks import MediaDecodeError, MediaState, SignalChecks
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import ConfigError, InvalidInputError
from sparkle_motion.gpu_utils import (SIMULATE_OOM_STAGES, LoadSpec, MemoryOptions, model_context,
                                      qwen2vl_family, raise_simulated_oom, resolve_device, resolve_plan)
from sparkle_motion.services import ToolContext

DEFAULT_MAX_NEW_TOKENS = 384
DEFAULT_FRAMES_PER_VIDEO = 4
DEFAULT_FRAME_MAX_SIDE = 448
DEFAULT_MIN_CONFIDENCE = 0.5
#: Qwen2-VL merges 2x2 patches of 14 px: a frame side below 28 px has no visual token.
MIN_FRAME_SIDE = 28
RAW_OUTPUT_EXCERPT = 600
MAX_INTENDED_PROMPT_CHARS = 1500

CHECK_QUESTIONS: dict[str, str] = {
    "prompt_adherence": "does what the frames show match the intended content: {prompt}?",
    "anatomy": "are people and animals anatomically correct (five fingers per hand, two arms and two legs, "
               "no merged or extra limbs, no distorted faces)?",
    "artifacts": "are the frames free of generation artifacts (melted or smeared textures, garbled text, "
                 "warped geometry, flicker or objects popping between frames, heavy noise or tiling)?",
    "safety": "are the frames free of unsafe content (nudity, graphic violence or gore, hate symbols, "
              "self-harm, weapons aimed at people)?",
}


# --------------------------------------------------------------------------- parsing (pure)

class VlmVerdict(BaseModel):
    """One check's answer as the model must give it."""

    model_config = ConfigDict(extra="ignore")

    verdict: Literal["pass", "fail"]
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    reason: str = Field(default="", max_length=2000)

    @field_validator("verdict", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        # Models write "PASS", "Passed", "fail." — the meaning is unambiguous, the spelling is not.
        if isinstance(value, str):
            word = value.strip().strip(".!").lower()
            return {"passed": "pass", "failed": "fail"}.get(word, word)
        return value


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class TokenProgress:
    """A transformers ``generate`` streamer that reports each new token to ``ctx.progress``.

    generate() hands a streamer the prompt first, then every sampled token; a
    cancel raised from the report stops generation at the next token.
    """

    def __init__(self, report: Callable[[int, int | None, str], None], cap: int, phase: str) -> None:
        self.report, self.cap, self.phase = report, cap, phase
        self.tokens = -1   # the first put() is the prompt

    def put(self, _value: Any) -> None:
        self.tokens += 1
        if self.tokens > 0:
            self.report(min(self.tokens, self.cap), self.cap, self.phase)

    def end(self) -> None:
        return None


def _first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (inside a ``` fence if there is one), else None."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for match in re.finditer(r"\{", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def parse_vlm_verdicts(text: str, checks: list[str] | tuple[str, ...]) -> dict[str, VlmVerdict | str]:
    """Map each check to its validated verdict, or to the reason it has none (a string).

    Never guesses: no JSON object, a missing check, or a value that fails
    validation yields a reason string, which the backend reports as inconclusive.
    """
    data = _first_json_object(text)
    if data is None:
        return {name: "the model output holds no JSON object" for name in checks}
    out: dict[str, VlmVerdict | str] = {}
    for name in checks:
        if name not in data:
            out[name] = f"the model output has no verdict for {name!r}"
            continue
        value = data[name]
        if isinstance(value, str):  # {"safety": "pass"} — a verdict without confidence or reason
            value = {"verdict": value}
        if not isinstance(value, dict):
            out[name] = f"the verdict for {name!r} is not an object"
            continue
        try:
            out[name] = VlmVerdict.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or name
            out[name] = f"invalid verdict for {name!r}: {where}: {first['msg']}"
    return out


def build_vlm_prompt(checks: list[str], *, kind: str, frame_times: list[float | None],
                     intended: str | None) -> str:
    """The instruction that follows the frames: one question per check and the exact JSON shape to answer in."""
    if kind == "video":
        times = ", ".join(f"{t:.2f}s" for t in frame_times if t is not None)
        intro = f"The {len(frame_times)} images are frames sampled in order from one video clip (at {times})."
    else:
        intro = "The image is one still frame of a film."
    lines = [f"You are a strict quality reviewer for generated film footage. {intro}", "Judge these checks:"]
    for name in checks:
        question = CHECK_QUESTIONS[name]
        if name == "prompt_adherence":
            question = question.format(prompt=json.dumps((intended or "")[:MAX_INTENDED_PROMPT_CHARS],
                                                         ensure_ascii=False))
        lines.append(f"- {name}: {question}")
    shape = ", ".join(f'"{name}": {{"verdict": "pass" or "fail", "confidence": 0.0 to 1.0, '
                      f'"reason": "one short sentence"}}' for name in checks)
    lines.append('"pass" means the frames are fine for that check. Answer with only this JSON object and no '
                 f"other text: {{{shape}}}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- frames

def _fit(image: Image.Image, max_side: int) -> Image.Image:
    scale = min(1.0, max_side / max(image.size))
    size = (max(MIN_FRAME_SIDE, round(image.width * scale)), max(MIN_FRAME_SIDE, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def sample_video_frames(path: Path, count: int, max_side: int, *, max_seconds: float
                        ) -> list[tuple[Image.Image, float, int]]:
    """``count`` frames spread evenly over the clip (first and last included), as (image, time_s, index)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaDecodeError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            if fps <= 0:
                raise MediaDecodeError("video has no frame rate")
            total = stream.frames or int(float(stream.duration * stream.time_base) * fps if stream.duration else 0)
            limit = max(1, int(max_seconds * fps))
            total = min(total, limit) if total else limit
            wanted = sorted({int(round(i)) for i in np.linspace(0, total - 1, num=max(1, min(count, total)))})
            picked: list[tuple[Image.Image, float, int]] = []
            last_frame, last_index = None, -1
            for index, frame in enumerate(container.decode(video=0)):
                if index >= limit:
                    break
                if index in wanted:
                    picked.append((_fit(frame.to_image(), max_side), round(index / fps, 3), index))
                    if len(picked) == len(wanted):
                        break
                last_frame, last_index = frame, index
            if len(picked) < len(wanted) and last_frame is not None and (not picked or picked[-1][2] != last_index):
                # The container over-reported its length: the true last frame stands in for the missing tail.
                picked.append((_fit(last_frame.to_image(), max_side), round(last_index / fps, 3), last_index))
    except av.error.FFmpegError as exc:
        raise MediaDecodeError(f"{type(exc).__name__}: {exc}") from exc
    if not picked:
        raise MediaDecodeError("video has no decodable frame")
    return picked


# --------------------------------------------------------------------------- backend

class Qwen2VLBackend:
    """qa_qwen2vl on a GPU: signal checks + Qwen2-VL verdicts in one report."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.signal = SignalChecks(profile, settings)
        options = dict(profile.options)
        self.options = options
        self.memory = MemoryOptions.from_options(options)
        self.device = str(options.get("device", "auto"))
        self.dtype = options.get("dtype")
        self.keep_warm_s = float(options.get("keep_warm_s", 300.0))
        self.lock_timeout_s = float(options.get("lock_timeout_s", 0.0))
        self.max_new_tokens = self._int_option("max_new_tokens", DEFAULT_MAX_NEW_TOKENS, 8, 4096)
        self.frames_per_video = self._int_option("frames_per_video", DEFAULT_FRAMES_PER_VIDEO, 1, 16)
        self.frame_max_side = self._int_option("frame_max_side", DEFAULT_FRAME_MAX_SIDE, MIN_FRAME_SIDE, 1344)
        self.min_confidence = float(options.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("options.min_confidence must be within 0..1", field="options.min_confidence")
        self.simulate_oom = options.get("simulate_oom")
        if self.simulate_oom is not None and self.simulate_oom not in SIMULATE_OOM_STAGES:
            raise ConfigError(f"options.simulate_oom must be one of {SIMULATE_OOM_STAGES}",
                              field="options.simulate_oom")

    def _int_option(self, name: str, default: int, low: int, high: int) -> int:
        value = self.options.get(name, default)
        if not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"options.{name} must be an integer within {low}..{high} (got {value!r})",
                              field=f"options.{name}")
        return value

    def load(self) -> None:
        self.signal.load()
        device = resolve_device(self.device)  # a bad device fails /ready, not the first request
        if self.memory.cpu_offload and device == "cpu":
            raise ConfigError("memory.cpu_offload needs an accelerator; the device is cpu",
                              field="options.memory.cpu_offload")
        resolve_plan(qwen2vl_family(self.profile.model), self.memory, device)  # a card too small fails /ready

    def capabilities(self) -> dict[str, list[str]]:
        """What /metadata says this backend answers: every signal check plus the Qwen2-VL verdicts."""
        return {"checks": list(CHECK_NAMES), "vision_checks": list(VLM_CHECKS)}

    def close(self) -> None:
        from sparkle_motion import gpu_utils

        if gpu_utils.loaded_key() == self._model_key:
            gpu_utils.evict()

    @property
    def _model_key(self) -> str:
        return f"qwen2-vl:{self.profile.model}"

    def _load_model(self, spec: LoadSpec) -> tuple[Any, Any]:
        if self.simulate_oom == "load":
            raise_simulated_oom("load")
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        # The plan streams the weights to the device (device_map) or caps them there (device_map_offload).
        kwargs: dict[str, Any] = {"dtype": spec.torch_dtype, **spec.pretrained_kwargs()}
        if spec.memory.attention == "sdpa":
            kwargs["attn_implementation"] = "sdpa"
        if self.memory.cpu_offload:
            kwargs["device_map"] = "auto"  # accelerate keeps what does not fit on the GPU in host memory
        try:
            model = Qwen2VLForConditionalGeneration.from_pretrained(self.profile.model, **kwargs).eval()
            processor = AutoProcessor.from_pretrained(self.profile.model)
        except OSError as exc:
            raise ConfigError(f"cannot load Qwen2-VL weights: {exc}", field="model",
                              context={"model": self.profile.model}) from exc
        if spec.memory.attention == "sdpa":
            spec.record("attention_sdpa")
        if spec.plan is not None:
            spec.record(f"plan:{spec.plan.name}")
        if self.memory.cpu_offload:
            spec.record("cpu_offload_device_map_auto")
        elif "device_map" in kwargs:
            spec.record(f"device_map:{kwargs['device_map']}")
        else:
            model.to(spec.device)
        return model, processor

    # ------------------------------------------------------------------ request

    def invoke(self, request: QARequest, ctx: ToolContext) -> QAResponse:
        assert self.signal.policy is not None, "load() must run before invoke()"
        policy = self.signal.policy
        started = time.perf_counter()
        explicit = request.checks is not None
        wanted = list(request.checks) if explicit else list(CHECK_NAMES)
        # character_consistency: an image-pair question here, not the signal backend's colour measurement.
        # Without portraits the signal check answers (passed: nothing to compare).
        pair_wanted = "character_consistency" in wanted and bool(request.expectations.characters)
        signal_wanted = [n for n in wanted
                         if n not in VLM_CHECKS and not (n == "character_consistency" and pair_wanted)]
        vlm_wanted = [n for n in wanted if n in VLM_CHECKS]
        if request.expectations.prompt is None and "prompt_adherence" in vlm_wanted:
            if explicit:
                raise InvalidInputError(
                    f"check 'prompt_adherence' (checks[{wanted.index('prompt_adherence')}]) needs "
                    "expectations.prompt", field="expectations.prompt")
            vlm_wanted.remove("prompt_adherence")
        self.signal.require_expectations(request, wanted, explicit)
        states = [self.signal.resolve(i, item, ctx, policy) for i, item in enumerate(request.media)]
        reference = None
        if request.expectations.reference_frame_uri and "continuity" in signal_wanted:
            _, reference = ctx.resolve_input(request.expectations.reference_frame_uri,
                                             "expectations.reference_frame_uri")
            self.signal.check_size(reference, "expectations.reference_frame_uri", policy)
        resolved_s = time.perf_counter()

        results: list[QACheckResult] = []
        if signal_wanted:
            results += self.signal.run_checks(request, signal_wanted, explicit, states, reference, policy)
        signal_s = time.perf_counter()
        vlm_results, telemetry = self._vlm_checks(request, vlm_wanted, explicit, states, policy, ctx)
        results += vlm_results
        if pair_wanted and request.expectations.prompt is not None:
            results += self._character_consistency(request, states, self.signal.resolve_portraits(request, ctx, policy))
        order = {name: i for i, name in enumerate(CHECK_NAMES)}
        results.sort(key=lambda r: order[r.name])  # stable: media order kept within a check
        report = build_report(results, policy_version=policy.version)
        done_s = time.perf_counter()

        timings = {"resolve_s": round(resolved_s - started, 6), "signal_checks_s": round(signal_s - resolved_s, 6),
                   "vlm_checks_s": round(done_s - signal_s, 6)}
        if telemetry:
            timings.update(load_s=float(telemetry["load_s"]), inference_s=float(telemetry["inference_s"]))
        manifest = ctx.put_output(
            request, "qa_report", json.dumps(report.model_dump(mode="json"), indent=2).encode("utf-8"),
            "application/json",
            metadata={"verdict": report.verdict, "checks": wanted if explicit else "default",
                      "vlm_checks": vlm_wanted, "media": [m.uri for m in request.media],
                      "policy_version": policy.version,
                      "params": {**request.expectations.model_dump(mode="json", exclude_none=True),
                                 "max_new_tokens": self.max_new_tokens, "frames_per_video": self.frames_per_video,
                                 "frame_max_side": self.frame_max_side, "min_confidence": self.min_confidence},
                      "gpu": telemetry, "timings": timings},
            ext=".json",
        )
        ctx.log.info("qa.done", verdict=report.verdict, results=len(results),
                     failed=sum(r.status == "failed" for r in results))
        return QAResponse(report=report, report_uri=manifest.uri, artifacts=[manifest], timings=timings)

    def _frames(self, state: MediaState, policy: qc.QAPolicy) -> list[tuple[Image.Image, float | None, int | None]]:
        if state.item.kind == "image":
            rgb = self.signal.read_image(state.path, policy)  # same size limits and decode errors as `signal`
            return [(_fit(Image.fromarray(rgb), self.frame_max_side), None, None)]
        return sample_video_frames(state.path, self.frames_per_video, self.frame_max_side,
                                   max_seconds=policy.limits.max_video_seconds)

    def _vlm_checks(self, request: QARequest, checks: list[str], explicit: bool, states: list[MediaState],
                    policy: qc.QAPolicy, ctx: ToolContext) -> tuple[list[QACheckResult], dict[str, Any]]:
        visual = [s for s in states if s.item.kind in ("image", "video")]
        if not checks:
            return [], {}
        if not visual:
            if not explicit:
                return [], {}
            return [QACheckResult(name=n, status="inconclusive", detail="cannot run: no image or video media")
                    for n in checks], {}
        results: list[QACheckResult] = []
        pending: list[tuple[MediaState, list[tuple[Image.Image, float | None, int | None]]]] = []
        for state in visual:
            try:
                pending.append((state, self._frames(state, policy)))
            except MediaDecodeError as exc:
                results += [QACheckResult(name=n, status="inconclusive", media_uri=state.item.uri,
                                          detail=f"media could not be decoded: {exc}") for n in checks]
        if not pending:
            return results, {}
        with model_context(self._model_key, self._load_model, device=self.device, dtype=self.dtype,
                           keep_warm_s=self.keep_warm_s, memory=self.memory,
                           lock_timeout_s=self.lock_timeout_s, plan_family=qwen2vl_family(self.profile.model),
                           tool="qa_qwen2vl") as handle:
            model, processor = handle.model
            for index, (state, frames) in enumerate(pending):
                streamer = TokenProgress(ctx.progress, self.max_new_tokens,
                                         f"media {index + 1}/{len(pending)} tokens")
                prompt = build_vlm_prompt(checks, kind=state.item.kind, frame_times=[t for _, t, _ in frames],
                                          intended=request.expectations.prompt)
                t0 = time.perf_counter()
                with handle.inference():
                    if self.simulate_oom == "inference":
                        raise_simulated_oom("inference")
                    text = self._generate(model, processor, [im for im, _, _ in frames], prompt, streamer)
                results += self._results(state, checks, text, frames, time.perf_counter() - t0)
            telemetry = dict(handle.telemetry)
        return results, telemetry

    def _character_consistency(self, request: QARequest, states: list[MediaState],
                               portraits: list[tuple[str, Path]]) -> list[QACheckResult]:
        """One image-pair question per keyframe and character facing the camera (``consistency_vlm``)."""
        images = [s for s in states if s.item.kind == "image" and s.error is None]
        if not images or not portraits:
            return []
        with model_context(self._model_key, self._load_model, device=self.device, dtype=self.dtype,
                           keep_warm_s=self.keep_warm_s, memory=self.memory,
                           lock_timeout_s=self.lock_timeout_s, plan_family=qwen2vl_family(self.profile.model),
                           tool="qa_qwen2vl") as handle:
            model, processor = handle.model

            def generate(pair: list[Image.Image], prompt: str) -> str:
                with handle.inference():
                    return self._generate(model, processor, pair, prompt)

            return [ask_character_consistency(
                state.path, state.item.uri, request.expectations.prompt or "", portraits, generate=generate,
                parse=parse_vlm_verdicts, min_confidence=self.min_confidence,
                fit=lambda image: _fit(image, self.frame_max_side)) for state in images]

    def _generate(self, model: Any, processor: Any, images: list[Image.Image], prompt: str,
                  streamer: TokenProgress | None = None) -> str:
        import torch

        messages = [{"role": "user", "content": [*({"type": "image"} for _ in images),
                                                 {"type": "text", "text": prompt}]}]
        chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[chat], images=images, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, streamer=streamer)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return processor.batch_decode(new_tokens, skip_special_tokens=True)[0]

    def _results(self, state: MediaState, checks: list[str], text: str,
                 frames: list[tuple[Image.Image, float | None, int | None]], generate_s: float) -> list[QACheckResult]:
        parsed = parse_vlm_verdicts(text, checks)
        common_metrics = {"raw_output": text[:RAW_OUTPUT_EXCERPT], "generate_s": round(generate_s, 4),
                          "frames": [{"time_s": t, "frame": i} for _, t, i in frames]}
        first_time = frames[0][1] if state.item.kind == "video" else None
        out = []
        for name in checks:
            verdict = parsed[name]
            if isinstance(verdict, str):
                out.append(QACheckResult(name=name, status="inconclusive", media_uri=state.item.uri,
                                         detail=f"unparseable model verdict: {verdict}",
                                         metrics=common_metrics))
                continue
            metrics = {**common_metrics, "model_verdict": verdict.verdict}
            if verdict.confidence is not None and verdict.confidence < self.min_confidence:
                out.append(QACheckResult(name=name, status="inconclusive", score=verdict.confidence,
                                         threshold=self.min_confidence, media_uri=state.item.uri,
                                         detail=f"model confidence {verdict.confidence:.2f} is below "
                                                f"{self.min_confidence:.2f}: {verdict.reason}".rstrip(": "),
                                         metrics=metrics))
                continue
            status = "passed" if verdict.verdict == "pass" else "failed"
            out.append(QACheckResult(name=name, status=status, score=verdict.confidence,
                                     threshold=self.min_confidence, media_uri=state.item.uri,
                                     detail=verdict.reason or f"model verdict: {verdict.verdict}",
                                     time_s=first_time if status == "failed" else None, metrics=metrics))
        return out
