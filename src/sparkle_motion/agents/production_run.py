"""One production run: the work of every stage, step by step, cached and resumable.

The ADK workflow (``production_workflow``) decides the order and the retry
routes; this module does the work of each node. Every unit of work is a *step*
recorded in the run registry and keyed by a hash of its inputs (stage, item,
tool backend and model, seed, request payload, input artifact URIs). A step
whose hash already succeeded — in this run or any earlier one — is not redone:
it is recorded as ``cached`` and its outputs are reused. That single mechanism
gives "re-running the same plan recomputes nothing", crash resume, and
``resume_from`` (which bypasses the cache for that stage and every later one;
new upstream artifacts then change every downstream hash).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from function_tools.assemble_ffmpeg.models import AssembleOptions, AssembleRequest, ClipRef, MusicTrack, Subtitle
from function_tools.images_sdxl.models import ImagesSdxlRequest
from function_tools.lipsync_wav2lip.models import LipsyncOptions, LipsyncRequest
from function_tools.qa_qwen2vl.models import QAExpectations, QAMedia, QARequest, TimeInterval
from function_tools.videos_wan.models import VideosWanRequest
from sparkle_motion.agents import cast_stage, dialogue_stage
from sparkle_motion.agents.dialogue_stage import TIMELINE_SAMPLE_RATE
from sparkle_motion.agents.fan_out import fan_out, tool_capacity
from sparkle_motion.agents.item_progress import InFlightItems
from sparkle_motion.agents.production_estimate import render_geometry
from sparkle_motion.agents.production_models import STAGES
from sparkle_motion.agents.production_steps import StageFailed, StepOutcome, canonical_json, tool_payload
from sparkle_motion.agents.qa_checks import RunQaChecks
from sparkle_motion.agents.review_gates import item_seed
from sparkle_motion.agents.run_control import RunControl, RunStopped
from sparkle_motion.agents.shot_timing import frame_counts, shot_bounds, words_by_shot
from sparkle_motion.agents.stage_overlap import BackgroundStages
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import Settings
from sparkle_motion.errors import InvalidInputError, SparkleError, ToolCallError
from sparkle_motion.ids import new_id
from sparkle_motion.logs import get_logger
from sparkle_motion.media import read_wav, write_wav
from sparkle_motion.plan import MoviePlan, validate_plan
from sparkle_motion.plan.policy import active_policy, screen_plan
from sparkle_motion.plan.render_models import render_models
from sparkle_motion.runs import RunRegistry
from sparkle_motion.services import ToolClient, ToolRequest

log = get_logger("sparkle_motion.production")

QA_RETRY_BUDGET = 2  # regenerations with a new seed after a failed QA, per item
SEED_STRIDE = 7919  # a prime: retry seeds never collide with neighbouring items' seeds
JOB_LOST_RESUBMITS = 2  # a tool job lost to a tool restart is submitted again this often (the step is redone)


def _artifact_id(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


class ProductionRun:
    """Executes the stages of one MoviePlan through the FunctionTools over HTTP."""

    def __init__(
        self,
        run_id: str,
        plan: MoviePlan,
        *,
        settings: Settings,
        store: ArtifactStore,
        registry: RunRegistry,
        qa_mode: str = "full",
        force_from: str | None = None,
        client_factory: Callable[[str], ToolClient] | None = None,
    ) -> None:
        self.run_id = run_id
        self.plan = plan
        self.settings = settings
        self.store = store
        self.registry = registry
        self.qa_mode = qa_mode
        self.force_from = force_from
        self.control = RunControl(registry, run_id)
        self._client_factory = client_factory or (lambda tool_id: ToolClient(tool_id, settings=settings))
        self._clients: dict[str, ToolClient] = {}
        self._lock = threading.Lock()
        self._capacities: dict[str, int] = {}
        # Outputs passed between stages (also mirrored into the ADK session state).
        self.results: dict[str, Any] = {}
        self.attempts: dict[str, int] = {"base_images": 0, "video_clips": 0}
        # A reviewer's re-rolls, item -> {"seed": n} (the run's review options; review_gates.item_seed).
        self.overrides: dict[str, dict[str, Any]] = {}
        self.in_flight = InFlightItems()   # what /status shows as items (with tool job progress)
        self.background = BackgroundStages(run_id)  # dialogue_audio runs beside the picture stages
        self.qa_checks = RunQaChecks(lambda: self.client("qa_qwen2vl"), lambda message, checks: registry.log(
            run_id, "warning", message, not_available=checks))   # what the QA backend answers (qa_checks.py)
        self._done_units = 0
        self._total_units = self._count_units()
        self.fps, self.width, self.height = render_geometry(plan, settings)
        self.frame_counts = frame_counts(plan, self.fps)

    # -- plumbing -----------------------------------------------------------------

    def client(self, tool_id: str) -> ToolClient:
        with self._lock:
            if tool_id not in self._clients:
                self._clients[tool_id] = self._client_factory(tool_id)
            return self._clients[tool_id]

    def _count_units(self) -> int:
        plan = self.plan
        qa = 2 if self.qa_mode == "full" else 1
        lines = sum(1 for e in plan.dialogue_timeline if e.type == "dialogue")
        closeups = sum(1 for s in plan.shots if s.is_talking_closeup)
        portraits = sum(qa if c.reference_image_id is None else 1 for c in plan.characters)
        return 1 + portraits + lines + 1 + qa * len(plan.base_images) + qa * len(plan.shots) + closeups + 1 + 1 + 1

    def _forced(self, stage: str) -> bool:
        return self.force_from is not None and STAGES.index(stage) >= STAGES.index(self.force_from)

    def _tool_identity(self, tool_id: str | None) -> dict[str, str]:
        if tool_id is None:
            return {}
        profile = self.settings.tool_profile(tool_id)
        return {"tool": tool_id, "backend": profile.backend, "model": profile.model}

    def begin_stage(self, stage: str) -> None:
        self.registry.update_run(self.run_id, current_stage=stage)
        self.registry.log(self.run_id, "info", f"stage {stage} started", stage=stage)
        log.info("stage_started", run_id=self.run_id, stage=stage)

    def _advance(self) -> None:
        with self._lock:
            self._done_units += 1
        progress = min(0.99, self._done_units / max(1, self._total_units))
        self.registry.update_run(self.run_id, progress=progress)

    def step(self, stage: str, item: str | None, tool_id: str | None, inputs: dict[str, Any],
             work: Callable[[], StepOutcome]) -> dict[str, Any]:
        """Run one cached, recorded unit of work and return its output."""
        self.control.checkpoint()
        key = {"stage": stage, "item": item, **self._tool_identity(tool_id), "inputs": inputs}
        input_hash = hashlib.sha256(canonical_json(key).encode()).hexdigest()
        cached = None if self._forced(stage) else self.registry.find_cached_step(stage, item, input_hash)
        if cached is not None and self._artifacts_present(cached.artifact_ids):
            rec = self.registry.start_step(self.run_id, stage, item=item, input_hash=input_hash)
            self.registry.finish_step(rec.step_id, "cached", artifact_ids=cached.artifact_ids, output=cached.output)
            self._advance()
            return dict(cached.output or {})
        rec = self.registry.start_step(self.run_id, stage, item=item, input_hash=input_hash)
        try:
            with self.in_flight.working_on(stage, item, tool_id):
                outcome = work()
        except Exception as exc:
            error = exc.to_dict() if isinstance(exc, SparkleError) else {"code": "internal_error", "message": repr(exc)}
            self.registry.finish_step(rec.step_id, "failed", error=error)
            raise
        self.registry.finish_step(rec.step_id, "succeeded", artifact_ids=outcome.artifact_ids, output=outcome.output)
        self._advance()
        return outcome.output

    def capacity(self, tool_id: str) -> int:
        """How many calls the tool takes at once (asked once per run; see ``fan_out``)."""
        if tool_id not in self._capacities:
            self._capacities[tool_id] = tool_capacity(self.client(tool_id))
        return self._capacities[tool_id]

    def _artifacts_present(self, artifact_ids: list[str]) -> bool:
        for artifact_id in artifact_ids:
            try:
                if not self.store.path_for(artifact_id).is_file():
                    return False
            except SparkleError:
                return False
        return True

    @contextmanager
    def building(self, tool_id: str, stage: str) -> Iterator[None]:
        """Around building a tool request: one the tool would refuse fails the stage here, as the tool's 422 would."""
        try:
            yield
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise StageFailed(f"{tool_id} failed in stage {stage}: {first['msg']} ({where})",
                              context={"stage": stage, "tool_id": tool_id, "status": 422,
                                       "remote_error": {"code": "invalid_input", "message": first["msg"],
                                                        "field": where}}) from None

    def invoke(self, tool_id: str, request: ToolRequest, *, stage: str) -> dict[str, Any]:
        """Call the tool (a job, for a long-running one: its progress goes to ``in_flight``, a stop cancels it)."""
        payload = {**tool_payload(request), "run_id": self.run_id, "stage": stage}
        for resubmit in range(JOB_LOST_RESUBMITS + 1):
            try:
                return self.client(tool_id).invoke(payload, on_progress=self.in_flight.on_job_view,
                                                   cancel_check=self.control.stop_requested)
            except ToolCallError as exc:
                if exc.code == "job_cancelled" and self.control.stop_requested():
                    raise RunStopped("run stopped by request; the tool job in flight was cancelled",
                                     context={"run_id": self.run_id, "stage": stage}) from exc
                if exc.code != "job_lost" or resubmit == JOB_LOST_RESUBMITS:
                    raise self._stage_failed(tool_id, stage, exc) from exc
                self.registry.log(self.run_id, "warning", f"{tool_id} lost the job of this step ({exc.message}); "
                                  "submitting it again", stage=stage, error=exc.to_dict())
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _stage_failed(tool_id: str, stage: str, exc: ToolCallError) -> StageFailed:
        remote = exc.remote_error or {}
        detail = remote.get("message") or exc.message
        where = f" ({remote['field']})" if remote.get("field") else ""
        # A tool's full disk is the run's full disk (code disk_full, 507): freeing space and resuming fixes it.
        full = remote.get("code") == "disk_full"
        return StageFailed(f"{tool_id} failed in stage {stage}: {detail}{where}",
                           code="disk_full" if full else None, http_status=507 if full else None,
                           context={"stage": stage, "tool_id": tool_id, "status": exc.status,
                                    "remote_error": remote})

    # -- stages ---------------------------------------------------------------------

    def plan_intake(self) -> dict[str, Any]:
        self.begin_stage("plan_intake")
        screen_plan(self.plan, active_policy(self.settings))   # a blocked term fails the run before any tool call
        plan_json = self.plan.model_dump(mode="json")

        def work() -> StepOutcome:
            manifest = self.store.put_json(self.run_id, "plan_intake", "movie_plan", plan_json,
                                           metadata={"tool": "production_agent", "plan_id": self.plan.plan_id,
                                                     "render_models": render_models(self.plan, self.settings)})
            return StepOutcome({"plan_uri": manifest.uri}, [manifest.artifact_id])

        out = self.step("plan_intake", None, None, {"plan": plan_json}, work)
        self.results["plan_intake"] = {**out, "frame_counts": self.frame_counts, "fps": self.fps}
        return self.results["plan_intake"]

    def cast(self) -> dict[str, Any]:
        return cast_stage.cast(self)

    def dialogue_audio(self) -> dict[str, Any]:
        return dialogue_stage.dialogue_audio(self)

    def _stitch_timeline(self, lines: list[dict[str, Any]]) -> StepOutcome:
        return dialogue_stage.stitch_timeline(self, lines)

    def _characters_in(self, text: str) -> list[str]:
        lowered = text.lower()
        return [c.name for c in self.plan.characters if c.name.lower() in lowered][:8]

    def base_images(self) -> str:
        """Render every keyframe once; returns the route: 'retry' (QA failed, budget left) or 'done'."""
        self.begin_stage("base_images")
        attempt = self.attempts["base_images"] = self.attempts["base_images"] + 1
        state = self.results.setdefault("base_images", {"images": {}, "qa": {}})
        base_seed = int(self.plan.metadata.seed or 0)
        for index, base in enumerate(self.plan.base_images):
            if state["qa"].get(base.id) == "passed" or (attempt > 1 and base.id not in state["failed"]):
                continue
            seed = item_seed(self, base.id, base.seed if base.seed is not None else base_seed + 1000 * index,
                             attempt, SEED_STRIDE)
            negative = {} if base.negative_prompt is None else {"negative_prompt": base.negative_prompt}
            names = self._characters_in(base.prompt)
            with self.building("images_sdxl", "base_images"):
                refs = cast_stage.references(self, names)
                request = ImagesSdxlRequest(prompt=base.prompt, **negative, seed=seed, width=self.width,
                                            height=self.height, count=1, characters=names,
                                            **({"references": refs} if refs else {}))

            def work(request: ImagesSdxlRequest = request) -> StepOutcome:
                response = self.invoke("images_sdxl", request, stage="base_images")
                image = response["artifacts"][0]
                return StepOutcome({"uri": image["uri"], "seed": request.seed}, [image["artifact_id"]])

            out = self.step("base_images", base.id, "images_sdxl", tool_payload(request), work)
            state["images"][base.id] = out["uri"]
            if self.qa_mode == "full":
                selection = self.qa_checks.select("keyframe")
                with self.building("qa_qwen2vl", "base_images"):
                    # character_consistency compares with the cast's portraits: asked only when there are some.
                    cast_checks, cast_expectations = cast_stage.consistency_request(self, names)
                    checks = [c for c in selection.checks if c not in cast_stage.CAST_CHECKS or c in cast_checks]
                    qa = QARequest(media=[QAMedia(uri=out["uri"], kind="image")], checks=checks,
                                   expectations=QAExpectations(prompt=base.prompt, **cast_expectations))
                verdict = self._qa("base_images", f"{base.id}.qa", qa, selection.not_available)
                state["qa"][base.id] = "passed" if verdict != "fail" else "failed"
        return self._route_after_qa("base_images", state)

    def _qa(self, stage: str, item: str, request: QARequest, not_available: list[str] | None = None) -> str:
        def work() -> StepOutcome:
            response = self.invoke("qa_qwen2vl", request, stage=stage)
            report = response.get("report") or {}
            ids = [a["artifact_id"] for a in response.get("artifacts", [])]
            return StepOutcome({"verdict": report.get("verdict"), "reasons": report.get("reasons", []),
                                "report_uri": response["artifacts"][0]["uri"] if response.get("artifacts") else None,
                                "not_available": list(not_available or [])}, ids)

        out = self.step(stage, item, "qa_qwen2vl", tool_payload(request), work)
        if out["verdict"] == "fail":
            self.registry.log(self.run_id, "warning", f"QA failed for {item}", reasons=out["reasons"])
        return out["verdict"]

    def _route_after_qa(self, stage: str, state: dict[str, Any]) -> str:
        failed = sorted(k for k, v in state["qa"].items() if v == "failed")
        state["failed"] = failed
        if not failed:
            return "done"
        if self.attempts[stage] <= QA_RETRY_BUDGET:
            self.registry.log(self.run_id, "info", f"{stage}: regenerating {', '.join(failed)} with new seeds")
            return "retry"
        raise StageFailed(f"{stage}: QA still fails for {', '.join(failed)} after {QA_RETRY_BUDGET} regenerations",
                          context={"stage": stage, "failed": failed})

    def video_clips(self) -> str:
        self.begin_stage("video_clips")
        attempt = self.attempts["video_clips"] = self.attempts["video_clips"] + 1
        state = self.results.setdefault("video_clips", {"clips": {}, "qa": {}})
        todo = [(index, shot) for index, shot in enumerate(self.plan.shots)
                if not (state["qa"].get(shot.id) == "passed" or (attempt > 1 and shot.id not in state["failed"]))]
        outcomes = fan_out(todo, lambda item: self._clip(*item, attempt), lambda: self.capacity("videos_wan"))
        for (_, shot), (uri, verdict) in zip(todo, outcomes):  # committed in plan order
            state["clips"][shot.id] = uri
            if verdict is not None:
                state["qa"][shot.id] = "passed" if verdict != "fail" else "failed"
        return self._route_after_qa("video_clips", state)

    def _clip(self, index: int, shot: Any, attempt: int) -> tuple[str, str | None]:
        """One shot's clip and, in full QA, its check: (clip uri, QA verdict or None)."""
        images = self.results["base_images"]["images"]
        with self.building("videos_wan", "video_clips"):
            request = VideosWanRequest(
                start_frame_uri=images[shot.start_base_image_id], end_frame_uri=images[shot.end_base_image_id],
                motion_prompt=shot.motion_prompt, prompt=shot.visual_description, fps=self.fps,
                num_frames=self.frame_counts[index], width=self.width, height=self.height,
                seed=item_seed(self, shot.id, int(self.plan.metadata.seed or 0) + 100 * index, attempt, SEED_STRIDE),
            )

        def work() -> StepOutcome:
            response = self.invoke("videos_wan", request, stage="video_clips")
            clip = response["artifacts"][0]
            return StepOutcome({"uri": clip["uri"], "seed": request.seed}, [clip["artifact_id"]])

        out = self.step("video_clips", shot.id, "videos_wan", tool_payload(request), work)
        if self.qa_mode != "full":
            return out["uri"], None
        duration = self.frame_counts[index] / self.fps
        still = images[shot.start_base_image_id] == images[shot.end_base_image_id] or \
            "static" in shot.motion_prompt.lower()
        selection = self.qa_checks.select("clip")
        with self.building("qa_qwen2vl", "video_clips"):
            holds = {"allow_holds": [TimeInterval(start_s=0.0, end_s=duration)]} if still else {}
            qa = QARequest(media=[QAMedia(uri=out["uri"], kind="video")], checks=selection.checks,
                           expectations=QAExpectations(duration_s=duration, prompt=shot.visual_description,
                                                       reference_frame_uri=images[shot.start_base_image_id],
                                                       **holds))
        return out["uri"], self._qa("video_clips", f"{shot.id}.qa", qa, selection.not_available)

    def _shot_bounds(self) -> list[tuple[float, float]]:
        return shot_bounds(self.frame_counts, self.fps)

    def lipsync(self) -> dict[str, Any]:
        self.begin_stage("lipsync")
        clips = dict(self.results["video_clips"]["clips"])
        audio = self.results["dialogue_audio"]
        bounds = self._shot_bounds()
        # Each word names its speaker as the storyboard names the figure, so mux opens the right mouth.
        spoken = [{**w, "speaker": self._name(line["character_id"])} for line in audio["lines"]
                  for w in line["word_timings"]]
        per_shot = words_by_shot(spoken, bounds, TIMELINE_SAMPLE_RATE,
                                 round(self.plan.runtime_s * TIMELINE_SAMPLE_RATE))
        closeups = [(shot, span, words) for shot, span, words in zip(self.plan.shots, bounds, per_shot)
                    if shot.is_talking_closeup]

        def sync(item: tuple[Any, tuple[float, float], list[dict[str, Any]]]) -> str:
            shot, (start, end), words = item
            inputs = {"clip": clips[shot.id], "timeline": audio["timeline_uri"], "start": start, "end": end}

            def work(shot_id: str = shot.id, start: float = start, end: float = end,
                     words: list[dict[str, Any]] = words) -> StepOutcome:
                samples, sr = read_wav(self.store.path_for(audio["timeline_uri"]))
                segment = samples[round(start * sr):round(end * sr)]
                staging = self.store.staging_dir() / f"{self.run_id}_{shot_id}_audio.wav"
                write_wav(staging, segment, sr)
                shot_audio = self.store.put(self.run_id, "lipsync", "shot_audio", staging, "audio/wav",
                                            metadata={"tool": "production_agent", "shot_id": shot_id},
                                            media={"duration_s": len(segment) / sr, "sample_rate": sr}, move=True)
                with self.building("lipsync_wav2lip", "lipsync"):
                    request = LipsyncRequest(video_uri=clips[shot_id], audio_uri=shot_audio.uri,
                                             options=LipsyncOptions(fit="pad_or_trim", word_timings=words))
                response = self.invoke("lipsync_wav2lip", request, stage="lipsync")
                ids = [shot_audio.artifact_id] + [a["artifact_id"] for a in response["artifacts"]]
                video = next(a for a in response["artifacts"] if a["media_type"].startswith("video/"))
                return StepOutcome({"uri": video["uri"]}, ids)

            return self.step("lipsync", shot.id, "lipsync_wav2lip", inputs, work)["uri"]

        uris = fan_out(closeups, sync, lambda: self.capacity("lipsync_wav2lip"))
        synced = {shot.id: uri for (shot, _, _), uri in zip(closeups, uris)}
        clips.update(synced)
        self.results["lipsync"] = {"clips": clips, "synced": synced}
        return self.results["lipsync"]

    def assemble(self) -> dict[str, Any]:
        self.begin_stage("assemble")
        clips = self.results["lipsync"]["clips"]
        audio = self.results["dialogue_audio"]
        with self.building("assemble_ffmpeg", "assemble"):
            subtitles = [Subtitle(start_s=round(line["start_actual_s"], 3), end_s=round(line["end_actual_s"], 3),
                                  text=f"{self._name(line['character_id'])}: {line['text']}")
                         for line in audio["lines"]]
            request = AssembleRequest(clips=[ClipRef(uri=clips[shot.id]) for shot in self.plan.shots],
                                      audio_uri=audio["timeline_uri"], subtitles=subtitles,
                                      music=self._music_track(), options=AssembleOptions(loudness_lufs=-16.0))

        def work() -> StepOutcome:
            response = self.invoke("assemble_ffmpeg", request, stage="assemble")
            video = next(a for a in response["artifacts"] if a["media_type"] == "video/mp4")
            srt = next((a for a in response["artifacts"] if a["uri"] != video["uri"]), None)
            return StepOutcome({"video_uri": video["uri"], "srt_uri": srt["uri"] if srt else None,
                                "metadata": video.get("metadata", {})},
                               [a["artifact_id"] for a in response["artifacts"]])

        out = self.step("assemble", None, "assemble_ffmpeg", tool_payload(request), work)
        self.results["assemble"] = out
        return out

    def _music_track(self) -> MusicTrack | None:
        """The plan's music bed as assemble's request field; an id the store does not hold fails the stage."""
        bed = self.plan.music
        if bed is None:
            return None
        try:
            uri = self.store.get(bed.artifact_id, field="music.artifact_id").uri
        except SparkleError as exc:
            raise StageFailed(f"music bed {bed.artifact_id!r}: {exc.message}",
                              context={"stage": "assemble", "field": "music.artifact_id"}) from exc
        return MusicTrack(uri=uri, level_lufs=bed.level_lufs, duck_db=bed.duck_db, fade_s=bed.fade_s)

    def _name(self, character_id: str) -> str:
        return next((c.name for c in self.plan.characters if c.id == character_id), character_id)

    def qa_publish(self) -> dict[str, Any]:
        self.begin_stage("qa_publish")
        if self.qa_mode == "skip":
            self.registry.log(self.run_id, "warning", "QA skipped (qa_mode=skip)")
            self.results["qa_publish"] = {"verdict": "skipped", "reasons": ["qa_mode=skip"]}
            return self.results["qa_publish"]
        audio = self.results["dialogue_audio"]
        with self.building("qa_qwen2vl", "qa_publish"):
            holds = [TimeInterval(start_s=s, end_s=e) for shot, (s, e) in zip(self.plan.shots, self._shot_bounds())
                     if "static" in shot.motion_prompt.lower() or shot.start_base_image_id == shot.end_base_image_id]
            request = QARequest(
                media=[QAMedia(uri=self.results["assemble"]["video_uri"], kind="video")],
                # A music bed is sound between the lines by design: speech is then only checked for being there.
                checks=["black_frames", "frozen_frames", "duration_mismatch"]
                + ([] if self.plan.music else ["unexpected_speech"]) + ["clipping"]
                # A film without dialogue is silent by design: nothing to find, nothing to normalise.
                + (["missing_speech", "loudness"] if audio["lines"] else []),
                expectations=QAExpectations(
                    duration_s=sum(self.frame_counts) / self.fps,
                    speech_intervals=[TimeInterval(start_s=ln["start_actual_s"], end_s=ln["end_actual_s"])
                                      for ln in audio["lines"]],
                    loudness_lufs=-16.0, allow_holds=holds,
                ),
            )
        verdict = self._qa("qa_publish", "final.qa", request)
        out = self.registry_last_output("qa_publish", "final.qa")
        self.results["qa_publish"] = out
        if verdict == "fail":
            raise StageFailed(f"final QA failed: {'; '.join(map(str, out.get('reasons', [])))}",
                              context={"stage": "qa_publish", "report_uri": out.get("report_uri")})
        return out

    def registry_last_output(self, stage: str, item: str) -> dict[str, Any]:
        steps = [s for s in self.registry.list_steps(self.run_id, stage=stage)
                 if s.item == item and s.status in ("succeeded", "cached")]
        return dict(steps[-1].output or {}) if steps else {}

    def finalize(self) -> dict[str, Any]:
        self.begin_stage("finalize")
        film_uri = self.results["assemble"]["video_uri"]
        qa = self.results.get("qa_publish", {})
        inputs = {"film": film_uri, "qa": qa.get("verdict")}

        def work() -> StepOutcome:
            film = self.store.get(film_uri)
            with self.store.open(film_uri) as stream:
                final = self.store.put(self.run_id, "finalize", "video_final", stream, "video/mp4",
                                       metadata={"tool": "production_agent", "source_uri": film_uri,
                                                 "plan_id": self.plan.plan_id, "qa_verdict": qa.get("verdict")},
                                       media={"duration_s": film.duration_s, "fps": film.fps,
                                              "width": film.width, "height": film.height})
            summary = {
                "run_id": self.run_id, "title": self.plan.title, "plan_id": self.plan.plan_id,
                "runtime_s": sum(self.frame_counts) / self.fps, "shots": len(self.plan.shots),
                "dialogue_lines": len(self.results["dialogue_audio"]["lines"]),
                "qa_verdict": qa.get("verdict"), "qa_reasons": qa.get("reasons", []),
                "qa_not_available": sorted(self.qa_checks.not_available),
                "video_final_uri": final.uri, "srt_uri": self.results["assemble"].get("srt_uri"),
            }
            summary_manifest = self.store.put_json(self.run_id, "finalize", "run_summary", summary,
                                                   metadata={"tool": "production_agent"})
            return StepOutcome({**summary, "local_path": final.local_path, "checksum": final.sha256},
                               [final.artifact_id, summary_manifest.artifact_id])

        out = self.step("finalize", None, None, inputs, work)
        self.results["finalize"] = out
        return out


def start_adhoc_run(message: Any, *, settings: Settings, store: ArtifactStore,
                    registry: RunRegistry) -> ProductionRun:
    """Record a run started by a message that carries a plan (e.g. typed into `adk web`)."""
    if not isinstance(message, dict) or not message:
        raise InvalidInputError("send a MoviePlan JSON object (or {'plan': {...}})", field="message")
    plan = validate_plan(message.get("plan", message))
    render_models(plan, settings)   # a model the profile cannot serve fails here, at intake
    run_id = new_id("run")
    plan_uri = store.put_json(run_id, "plan_intake", "movie_plan_request", plan.model_dump(mode="json"),
                              metadata={"tool": "production_agent", "source": "adk"}).uri
    registry.create_run(run_id=run_id, plan_id=plan.plan_id, plan_uri=plan_uri, mode="run",
                        qa_mode=message.get("qa_mode", "full"))
    registry.set_status(run_id, "running")
    return ProductionRun(run_id, plan, settings=settings, store=store, registry=registry,
                         qa_mode=message.get("qa_mode", "full"))
