"""production_agent's HTTP service (port 5008): start, watch, steer and resume runs.

POST /invoke answers 202 at once; the run continues on a worker thread that
drives the ADK Runner (SqliteSessionService + the project's artifact store as
ADK artifact service). Run state lives in the run registry, so a restarted
service shows runs its crashed predecessor left as ``interrupted`` and resumes
them without redoing finished steps.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse
from google.adk.runners import Runner
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

from sparkle_motion.agents.active_runs import ActiveRuns
from sparkle_motion.agents.film_queue import FilmQueue
from sparkle_motion.agents.production_models import (
    SCHEMA_MODELS,
    STAGES,
    ArtifactsView,
    ControlRequest,
    ProductionAccepted,
    ProductionRequest,
    ReviewRequest,
    RunStatus,
    StageArtifacts,
    StageName,
    StepView,
)
from sparkle_motion.agents.plan_artifacts import check_plan_artifacts
from sparkle_motion.agents.production_estimate import estimate
from sparkle_motion.agents.production_run import ProductionRun, RunStopped, start_adhoc_run
from sparkle_motion.agents.production_workflow import APP_NAME, build_production_workflow
from sparkle_motion.agents.review_actions import ReviewDesk
from sparkle_motion.agents.review_gates import AwaitingReview, review_state, with_review_state
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.adk_service import SparkleArtifactService
from sparkle_motion.artifacts.http_face import create_artifact_router
from sparkle_motion.artifacts.http_protocol import UPLOAD_PATH
from sparkle_motion.artifacts.sweep import sweep_at_start
from sparkle_motion.config import Settings, get_settings
from sparkle_motion.diskspace import Ballast, disk_full_error, is_disk_full
from sparkle_motion.errors import (ConflictError, DiskFullError, InvalidInputError, NotFoundError,
                                   SparkleError)
from sparkle_motion.ids import ID_MAX_LENGTH, ID_PATTERN, new_id
from sparkle_motion.logs import get_logger
from sparkle_motion.plan import MoviePlan, validate_plan
from sparkle_motion.plan.policy import active_policy, screen_plan
from sparkle_motion.plan.render_models import render_models
from sparkle_motion.plan.validation import PLAN_ARTIFACT_KEY
from sparkle_motion.runs import Heartbeat, RunRegistry
from sparkle_motion.services import install_common
from sparkle_motion.services.app import current_request_id
from sparkle_motion.services.openapi import error_responses
from sparkle_motion.studio import install_studio

__all__ = ["SCHEMA_MODELS", "ProductionService", "create_app"]

VERSION = "0.1.0"
HEARTBEAT_S = 2.0
# A run whose owner has not written a heartbeat for this long is taken as dead.
STALE_AFTER_S = 15.0
MAX_PLAN_BYTES = 5 << 20
BALLAST_NAME = ".disk-ballast"  # under SPARKLE_HOME: 1 MB given up to record a disk-full failure

log = get_logger("sparkle_motion.production_service")

RunIdQuery = Annotated[str, Query(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH,
                                  description="a run id (safe id)")]


class ProductionService:
    """Owns the store, the registry, the worker threads and the workflow of one production_agent process.

    The workflow is built over this service's own :class:`ActiveRuns` table, so
    its nodes find the runs this service drives, and a plan sent as a message
    becomes a run in this service's store and registry.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = ArtifactStore(self.settings.home)
        self.registry = RunRegistry(self.settings.db_path)
        # Room to record a run's failure when the disk is full (diskspace.Ballast).
        self.ballast = Ballast(self.settings.home / BALLAST_NAME)
        self.runs = ActiveRuns(adhoc=self.adhoc_run)
        self.workflow = build_production_workflow(self.runs)
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(self.registry, self._live_run_ids, HEARTBEAT_S)
        self.queue = FilmQueue(self.registry, self.settings.max_concurrent_runs, self._start_queued)
        self.review_desk = ReviewDesk(self)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        interrupted = self.registry.mark_interrupted(stale_after_s=STALE_AFTER_S)
        for run_id in interrupted:
            log.warning("run_interrupted", run_id=run_id)
        sweep_at_start(self.settings, log, self.store)  # crash leftovers, before any run writes again
        self.ballast.ensure()
        self._heartbeat.start()
        if self.settings.auto_resume:
            for run_id in interrupted:
                self.auto_resume(run_id)
        self.queue.dispatch()  # the queue survived the restart: start what waits, in order

    def auto_resume(self, run_id: str) -> None:
        """Continue a run that a crashed production_agent left interrupted (profile ``auto_resume``).

        The step cache makes it a resume: finished steps are reused, the step
        that was cut off is done again. A run that cannot be resumed (its plan
        is gone, say) stays interrupted, with the reason in its log.
        """
        run = self.registry.get_run(run_id)
        if run.mode != "run":
            return
        self.registry.log(run_id, "info", "resuming automatically after production_agent restarted")
        try:
            self.submit(ProductionRequest(run_id=run_id, qa_mode=run.qa_mode,
                                          resume_from=run.options.get("resume_from")), ahead_of_queue=True)
        except SparkleError as exc:
            self.registry.log(run_id, "error", f"automatic resume failed: {exc.message}", error=exc.to_dict())
            log.error("auto_resume_failed", run_id=run_id, error=exc.to_dict())
        else:
            log.warning("run_auto_resumed", run_id=run_id)

    def close(self) -> None:
        self._heartbeat.stop()

    def _live_run_ids(self) -> list[str]:
        with self._lock:
            return [run_id for run_id, thread in self._threads.items() if thread.is_alive()]

    # -- plans ---------------------------------------------------------------------

    def load_plan(self, request: ProductionRequest) -> MoviePlan:
        """The request's plan, validated; refused (422) when it names a model this profile cannot serve or breaks the
        content policy (``plan/policy.py``)."""
        plan = self._read_plan(request)
        render_models(plan, self.settings)
        screen_plan(plan, active_policy(self.settings))   # before any tool call, whatever qa_mode says
        check_plan_artifacts(plan, self.store)            # the user's portraits, voice clips and music exist
        return plan

    def _read_plan(self, request: ProductionRequest) -> MoviePlan:
        if request.plan is not None:
            return validate_plan(request.plan)
        uri = request.plan_uri
        if uri is None:
            run = self.registry.get_run(request.run_id)  # type: ignore[arg-type]
            uri = run.plan_uri
            if not uri:
                raise InvalidInputError(f"run {run.run_id} has no recorded plan; send plan or plan_uri", field="plan")
        try:
            manifest = self.store.get(uri)
        except NotFoundError as exc:
            raise InvalidInputError(f"no such plan artifact: {exc.message}", field="plan_uri") from None
        except InvalidInputError as exc:
            raise InvalidInputError(exc.message, field="plan_uri") from None
        if manifest.size_bytes > MAX_PLAN_BYTES:
            raise InvalidInputError(f"plan artifact is {manifest.size_bytes} bytes; the limit is {MAX_PLAN_BYTES}",
                                    field="plan_uri")
        with self.store.open(uri) as stream:
            try:
                data = json.load(stream)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InvalidInputError(f"plan artifact is not JSON: {exc}", field="plan_uri") from None
        if isinstance(data, dict) and PLAN_ARTIFACT_KEY in data:
            data = data[PLAN_ARTIFACT_KEY]
        return validate_plan(data)

    # -- runs ---------------------------------------------------------------------

    def _start_queued(self, run_id: str) -> None:
        """FilmQueue's way to start a run whose turn came (its plan and options are on record)."""
        run = self.registry.get_run(run_id)
        self.submit(ProductionRequest(run_id=run_id, qa_mode=run.qa_mode, resume_from=run.options.get("resume_from")))

    def submit(self, request: ProductionRequest, *, ahead_of_queue: bool = False) -> ProductionAccepted:
        plan = self.load_plan(request)
        self.ballast.ensure()  # given up by a disk-full failure; back once space was freed
        existing = None
        if request.run_id:
            try:
                existing = self.registry.get_run(request.run_id)
            except NotFoundError:
                existing = None
        if existing is not None and self._alive(existing.run_id) and existing.status == "stopped":
            # Stop lands between steps: the thread is finishing the step it was in. A conflict with the run's
            # state (409), not a server that cannot answer: nothing is wrong here, the caller asks a moment early.
            raise ConflictError(f"run {existing.run_id} is stopping: its current step is finishing; "
                                "resume it in a moment", field="run_id", code="run_stopping",
                                context={"run_id": existing.run_id, "retry_after": 1.0})
        if existing is not None and self._alive(existing.run_id):
            raise ConflictError(f"run {existing.run_id} is {existing.status} in this process; "
                                "pause/stop it through /control instead", field="run_id", code="run_active")
        if existing is not None and existing.status in ("succeeded", "stopped", "cancelled"):
            # Finished runs stay as they were; the resume becomes a new run of the same
            # plan, and the step cache makes everything before resume_from free.
            options = {"resume_from": request.resume_from, "resumed_from_run": existing.run_id}
            existing = None
            request = request.model_copy(update={"run_id": None, "plan_uri": request.plan_uri or
                                                  self.registry.get_run(options["resumed_from_run"]).plan_uri})
        else:
            options = with_review_state({"resume_from": request.resume_from}, review_state({"review": {
                "gates": list(dict.fromkeys(request.review))}}))
        if request.mode == "dry":
            graph, resources = estimate(plan, self.settings, request.qa_mode)
            run_id = request.run_id or new_id("dry")
            if existing is None:
                self.registry.create_run(run_id=run_id, plan_id=plan.plan_id, plan_uri=request.plan_uri,
                                         mode="dry", qa_mode=request.qa_mode, options={"graph": graph})
                self.registry.set_status(run_id, "running")
                self.registry.set_status(run_id, "succeeded")
            return ProductionAccepted(request_id=current_request_id(), run_id=run_id, status="succeeded", mode="dry",
                                      qa_mode=request.qa_mode, invocation_graph=graph, resource_estimate=resources)
        if existing is None:
            run_id = request.run_id or new_id("run")
            plan_uri = request.plan_uri
            if plan_uri is None:
                plan_uri = self.store.put_json(run_id, "plan_intake", "movie_plan_request", plan.model_dump(mode="json"),
                                               metadata={"tool": "production_agent"}).uri
            self.registry.create_run(run_id=run_id, plan_id=plan.plan_id, plan_uri=plan_uri, mode="run",
                                     qa_mode=request.qa_mode, options=options)
        else:
            run_id = existing.run_id
        if not self.queue.admit(run_id, ahead_of_queue=ahead_of_queue):
            return ProductionAccepted(request_id=current_request_id(), run_id=run_id, status="queued", mode="run",
                                      qa_mode=request.qa_mode, resume_from=request.resume_from)
        try:
            self.registry.set_status(run_id, "running")
            self.registry.update_run(run_id, progress=0.0)
            run = ProductionRun(run_id, plan, settings=self.settings, store=self.store, registry=self.registry,
                                qa_mode=request.qa_mode, force_from=request.resume_from)
            run.overrides = review_state(self.registry.get_run(run_id).options)["overrides"]
            thread = threading.Thread(target=self._execute, args=(run,), name=f"run-{run_id}", daemon=True)
            with self._lock:
                self._threads[run_id] = thread
            thread.start()
        except BaseException:
            self.queue.release(run_id, dispatch=False)
            raise
        return ProductionAccepted(request_id=current_request_id(), run_id=run_id, status="running", mode="run",
                                  qa_mode=request.qa_mode, resume_from=request.resume_from)

    def adhoc_run(self, message: Any) -> ProductionRun:
        """A run started by a message that carries a plan (the workflow's ad-hoc starter)."""
        return start_adhoc_run(message, settings=self.settings, store=self.store, registry=self.registry)

    def _execute(self, run: ProductionRun) -> None:
        self.runs.add(run)
        started = time.perf_counter()
        self.registry.log(run.run_id, "info", "run started", qa_mode=run.qa_mode, resume_from=run.force_from)
        try:
            asyncio.run(self._drive(run))
        except AwaitingReview:
            pass  # the gate recorded the wait (status, gate, log); a review continues the run
        except RunStopped:
            # /control/stop already moved the run to 'stopped'.
            self.registry.log(run.run_id, "warning", "run stopped; artifacts kept")
        except Exception as caught:  # every failure is recorded on the run, with its stage
            exc = caught
            if is_disk_full(caught) and not isinstance(caught, SparkleError):  # e.g. the ADK session DB
                exc = disk_full_error(getattr(caught, "filename", None), self.settings.home, cause=repr(caught))
            error = exc.to_dict() if isinstance(exc, SparkleError) else {"code": "internal_error", "message": repr(exc)}
            stage = (exc.context.get("stage") if isinstance(exc, SparkleError) else None) or \
                self.registry.get_run(run.run_id).current_stage
            error["stage"] = stage
            log.error("run_failed", run_id=run.run_id, stage=stage, error=error)
            self._record_failure(run.run_id, stage, error)
        else:
            self.registry.set_status(run.run_id, "succeeded")
            self.registry.log(run.run_id, "info", f"run succeeded in {time.perf_counter() - started:.1f} s")
        finally:
            self.runs.remove(run.run_id)
            self.queue.release(run.run_id)  # the next queued film starts on this thread's way out

    def _record_failure(self, run_id: str, stage: str | None, error: dict[str, Any]) -> None:
        """Mark the run failed; on a full disk, give up the ballast so the record (and its why) fits."""
        try:
            self.registry.set_status(run_id, "failed", error=error)
        except DiskFullError:
            released = self.ballast.release()
            log.warning("ballast.released", run_id=run_id, released=released)
            self.registry.set_status(run_id, "failed", error=error)
        self.registry.log(run_id, "error", f"run failed in {stage}: {error.get('message')}")

    async def _drive(self, run: ProductionRun) -> None:
        sessions = SqliteSessionService(str(self.settings.home / "adk_sessions.db"))
        runner = Runner(app_name=APP_NAME, node=self.workflow, session_service=sessions,
                        artifact_service=SparkleArtifactService(self.store))
        session = await sessions.create_session(app_name=APP_NAME, user_id="sparkle",
                                                session_id=f"{run.run_id}-{uuid.uuid4().hex[:8]}",
                                                state={"run_id": run.run_id})
        message = types.Content(role="user", parts=[types.Part(text=json.dumps({"run_id": run.run_id}))])
        async for _event in runner.run_async(user_id="sparkle", session_id=session.id, new_message=message):
            pass

    def control(self, action: str, run_id: str) -> RunStatus:
        run = self.registry.get_run(run_id)
        allowed = {"pause": {"running"}, "resume": {"paused"},
                   "stop": {"running", "paused", "pending", "awaiting_review", "queued"}}[action]
        if run.status not in allowed:
            raise ConflictError(f"cannot {action} a run that is {run.status}", field="run_id", code="invalid_state")
        self.registry.log(run_id, "info", f"{action} requested")
        if run.status == "queued":
            self.queue.cancel(run_id)
        elif action == "resume" and not self._alive(run_id):
            # Paused by a production_agent that has since exited: continue the run here.
            self.submit(ProductionRequest(run_id=run_id, qa_mode=run.qa_mode,
                                          resume_from=run.options.get("resume_from")))
        else:
            target = {"pause": "paused", "resume": "running", "stop": "stopped"}[action]
            self.registry.set_status(run_id, target)
        return self.status(run_id)

    def settle(self, run_id: str, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for the thread that drove the run to end, e.g. after it stopped at a gate."""
        with self._lock:
            thread = self._threads.get(run_id)
        if thread is not None:
            thread.join(timeout)

    def _alive(self, run_id: str) -> bool:
        with self._lock:
            thread = self._threads.get(run_id)
        return thread is not None and thread.is_alive()

    def status(self, run_id: str) -> RunStatus:
        run = self.registry.get_run(run_id)
        steps = [StepView(**s.model_dump(include=set(StepView.model_fields))) for s in self.registry.list_steps(run_id)]
        tail = [e.model_dump(mode="json") if hasattr(e, "model_dump") else dict(e) for e in self.registry.log_tail(run_id, 50)]
        data = run.model_dump(mode="json")
        active = self.runs.get(run_id)   # only the process driving the run knows what is in flight
        items = active.in_flight.snapshot() if active is not None else []
        return RunStatus(request_id=current_request_id(), steps=steps, log_tail=tail, items=items,
                         queue_position=self.queue.position(run_id), review=self.review_desk.view(run),
                         **{k: v for k, v in data.items() if k in RunStatus.model_fields
                            and k not in ("steps", "log_tail", "items", "queue_position", "review")})

    def artifacts(self, run_id: str, stage: str | None) -> ArtifactsView:
        self.registry.get_run(run_id)
        seen: dict[str, tuple[str, Any]] = {}
        for step in self.registry.list_steps(run_id):
            if step.status not in ("succeeded", "cached"):
                continue
            for artifact_id in step.artifact_ids:
                try:
                    seen.setdefault(artifact_id, (step.stage, self.store.get(artifact_id)))
                except SparkleError:
                    continue  # deleted by a retention prune; the step record outlives it
        for manifest in self.store.list(run_id):
            seen.setdefault(manifest.artifact_id, (manifest.stage, manifest))
        by_stage: dict[str, list[dict[str, Any]]] = {}
        for step_stage, manifest in seen.values():
            if stage and step_stage != stage:
                continue
            entry = manifest.model_dump(mode="json")
            entry["stage"] = step_stage
            entry["checksum"] = f"sha256:{manifest.sha256}"
            by_stage.setdefault(step_stage, []).append(entry)
        stages = []
        for name, entries in by_stage.items():
            entries.sort(key=lambda e: (e["created_at"], e["artifact_id"]))
            preview = next((e for e in entries if e["artifact_type"] == "video_final"), None) or \
                next((e for e in entries if e["media_type"].startswith(("video/", "image/", "audio/"))), None)
            stages.append(StageArtifacts(
                stage=name, count=len(entries), artifact_types=sorted({e["artifact_type"] for e in entries}),
                media_types=sorted({e["media_type"] for e in entries}),
                preview={k: preview[k] for k in ("uri", "local_path", "media_type", "artifact_type")} if preview else None,
                artifacts=entries,
            ))
        flat = [e for s in stages for e in s.artifacts]
        return ArtifactsView(request_id=current_request_id(), run_id=run_id, stages=stages, artifacts=flat)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = ProductionService(settings)
    app = FastAPI(title="production_agent", version=VERSION, docs_url=None, redoc_url=None,
                  description="Executes MoviePlans through the Sparkle Motion FunctionTools.")
    install_common(app, "production_agent", VERSION, settings,
                   body_limits={UPLOAD_PATH: settings.store.max_upload_bytes})
    app.include_router(create_artifact_router(lambda: service.store, settings))
    service.start()
    app.state.production = service
    install_studio(app, service.store, settings)

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return {"tool_id": "production_agent", "version": VERSION, "stages": list(STAGES),
                "profile": settings.profile_name, "request_id": current_request_id(),
                "backends": {t: p.backend for t, p in settings.profile.items()},
                "request_schema": ProductionRequest.model_json_schema()}

    @app.post("/invoke", status_code=202, response_model=ProductionAccepted,
              responses={200: {"model": ProductionAccepted, "description": "mode=dry: the estimate, nothing ran"},
                         **error_responses(404, 409, 503, 507)})
    def invoke(request: ProductionRequest) -> Any:
        accepted = service.submit(request)
        if accepted.mode == "dry":
            return JSONResponse(accepted.model_dump(mode="json"), status_code=200)
        return accepted

    @app.get("/status", response_model=RunStatus, responses=error_responses(404))
    def status(run_id: RunIdQuery) -> RunStatus:
        return service.status(run_id)

    @app.get("/artifacts", response_model=ArtifactsView, responses=error_responses(404))
    def artifacts(run_id: RunIdQuery, stage: StageName | None = Query(None)) -> ArtifactsView:
        return service.artifacts(run_id, stage)

    @app.get("/runs")
    def runs(limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        places = service.queue.positions()
        return {"request_id": current_request_id(),
                "runs": [r.model_copy(update={"queue_position": places.get(r.run_id)}).model_dump(mode="json")
                         for r in service.registry.list_runs(limit=limit)]}

    def control_route(action: str) -> Any:
        def control(request: ControlRequest) -> RunStatus:
            return service.control(action, request.run_id)

        return control

    @app.post("/runs/{run_id}/review", response_model=RunStatus, responses=error_responses(404, 409, 503, 507))
    def review(run_id: Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH)],
               request: ReviewRequest) -> RunStatus:
        """Approve the gate the run waits at, or regenerate items and stop at it again (after a finished run:
        a new run with the regenerated items; its status is the answer)."""
        return service.review_desk.decide(run_id, request)

    for action in ("pause", "resume", "stop"):
        # resume may restart the run here, so it can also be busy or find the disk full.
        errors = error_responses(404, 409, 503, 507) if action == "resume" else error_responses(404, 409)
        app.post(f"/control/{action}", response_model=RunStatus, name=f"control_{action}",
                 responses=errors)(control_route(action))

    return app
