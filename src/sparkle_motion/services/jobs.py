"""Jobs: a tool's long work as ``POST /jobs``, ``GET /jobs/{id}`` and ``DELETE /jobs/{id}``.

A real Wan2.1 clip renders for 15-25 minutes: no HTTP request should stay open
that long, and nobody should wait for one without knowing how far it got. A job
is the same backend call as ``POST /invoke`` — same request model, same slots,
same ToolContext and cancel token — run in the background of the tool process:

* ``POST /jobs`` validates the request and answers 202 at once with the job's
  view and a ``Location`` header. The job waits for a free slot (``queued``)
  instead of answering 503 busy; only when ``MAX_ACTIVE_JOBS`` are already queued
  or running does a submission get 503 + Retry-After.
* ``GET /jobs/{id}``: ``state`` (queued | running | succeeded | failed |
  cancelled), ``progress`` as the backend reports it through
  ``ToolContext.progress(step, total, phase)`` with the mean seconds per step and
  an ETA once two steps of a phase are timed, the tool's response when it
  succeeded and the error body when it failed.
* ``DELETE /jobs/{id}`` sets the call's cancel token: a queued job ends at once, a
  running one at the backend's next step (which leaves ``model_context``, so the
  device lock is released and the memory of the call freed). 409 for a job that
  already ended.

Jobs live in the tool process's memory only: a restarted process knows none of
them (404), and a caller reports such a job *lost* and submits the work again.
The last ``MAX_FINISHED_JOBS`` ended jobs are kept for their callers to read;
older ones are forgotten (404). The profile's ``max_job_s`` for the tool cancels
a job that runs longer, which then fails with ``job_timeout``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from typing import Any, Literal

from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model

from sparkle_motion.db import utc_now
from sparkle_motion.errors import Cancelled, ConflictError, NotFoundError, ServiceBusyError, SparkleError
from sparkle_motion.ids import new_id
from sparkle_motion.services.context import CancelToken
from sparkle_motion.services.models import ToolResponse
from sparkle_motion.services.openapi import error_responses, json_body_doc
from sparkle_motion.services.request_id import current_request_id

#: Ended jobs kept in memory for their callers to read (oldest forgotten first).
MAX_FINISHED_JOBS = 128
#: Queued + running jobs one tool process accepts; a submission beyond gets 503 busy.
MAX_ACTIVE_JOBS = 64
JOB_ID_PATTERN = r"^job_[0-9a-f]{12}$"
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ENDED_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
CANCEL_REASON = "cancel requested (DELETE /jobs)"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class JobEndedError(ConflictError):
    code = "job_ended"


class JobTimeoutError(SparkleError):
    """The job ran past the profile's ``max_job_s`` and was cancelled."""

    code = "job_timeout"
    http_status = 504


class JobProgress(BaseModel):
    step: int = Field(description="units of the current phase done (denoising steps, frames, tokens, chunks)")
    total: int | None = Field(None, description="units in the phase, when the backend knows them")
    phase: str = Field("", description="what the backend is doing, e.g. 'full', 'chunk 2/3', 'frames'")
    step_s: float | None = Field(None, description="mean seconds per unit in this phase, once two are timed")
    eta_s: float | None = Field(None, description="seconds left in this phase at that pace")
    updated_at: str


class JobView(BaseModel):
    """What ``GET /jobs/{id}`` answers; ``response`` is the tool's own response model."""

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    tool_id: str
    state: JobState
    request_id: str = Field(description="the id of the submitting request; the work's logs and artifacts carry it")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    cancel_requested: bool = False
    progress: JobProgress | None = None
    response: dict[str, Any] | None = Field(None, description="the tool's response, once succeeded")
    error: dict[str, Any] | None = Field(None, description="the error body ({code, message, ...}) when failed "
                                                           "or cancelled")
    error_status: int | None = Field(None, description="the HTTP status /invoke would have answered with that "
                                                       "error (503: busy, worth submitting again)")


def job_view_model(response_model: type[ToolResponse]) -> type[JobView]:
    """JobView with ``response`` typed as the tool's response model (for the OpenAPI document)."""
    name = f"{response_model.__name__.removesuffix('Response')}JobView"
    return create_model(name, __base__=JobView, response=(response_model | None, None))  # type: ignore[call-overload]


class ProgressTracker:
    """The last progress report of a job and the pace of its phase (thread-safe: the backend reports from a worker thread).

    The pace is timed from the phase's first report, not from the job's start, so a
    model load before the first step does not inflate the ETA.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[int, int | None, str] | None = None
        self._first: tuple[float, int] | None = None   # (when, step) of the phase's first report
        self._step_s: float | None = None
        self._at = 0.0
        self._updated_at = ""

    def report(self, step: int, total: int | None, phase: str) -> None:
        now = time.monotonic()
        with self._lock:
            if self._last is None or self._last[2] != phase or step < self._last[0]:
                self._first, self._step_s = (now, step), None
            elif self._first is not None and step > self._first[1]:
                self._step_s = (now - self._first[0]) / (step - self._first[1])
            self._last, self._at, self._updated_at = (step, total, phase), now, utc_now()

    def view(self) -> JobProgress | None:
        with self._lock:
            if self._last is None:
                return None
            step, total, phase = self._last
            eta = None
            if self._step_s is not None and total is not None:
                eta = max(0.0, self._step_s * (total - step) - (time.monotonic() - self._at))
            return JobProgress(step=step, total=total, phase=phase,
                               step_s=None if self._step_s is None else round(self._step_s, 3),
                               eta_s=None if eta is None else round(eta, 1), updated_at=self._updated_at)


class Job:
    """One submitted call: its request, cancel token, progress and outcome."""

    def __init__(self, tool_id: str, request: Any) -> None:
        self.job_id = new_id("job")
        self.tool_id = tool_id
        self.request = request
        self.request_id = current_request_id()
        self.token = CancelToken()
        self.tracker = ProgressTracker()
        self.state: str = "queued"
        self.created_at = utc_now()
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.response: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.error_status: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.timed_out = False

    def view(self) -> JobView:
        return JobView(job_id=self.job_id, tool_id=self.tool_id, state=self.state,  # type: ignore[arg-type]
                       request_id=self.request_id, created_at=self.created_at, started_at=self.started_at,
                       finished_at=self.finished_at, cancel_requested=self.token.is_set(),
                       progress=self.tracker.view(), response=self.response, error=self.error,
                       error_status=self.error_status)

    def end(self, state: str, *, error: SparkleError | None = None) -> None:
        self.state, self.finished_at = state, utc_now()
        if error is not None:
            self.error, self.error_status = error.to_dict(), error.http_status


class JobTable:
    """The jobs of one tool process. Every method runs on the server's event loop (no locks needed)."""

    def __init__(self, runtime: Any, *, max_finished: int = MAX_FINISHED_JOBS,
                 max_active: int = MAX_ACTIVE_JOBS) -> None:
        self.runtime = runtime
        self.max_finished = max_finished
        self.max_active = max_active
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def submit(self, body: bytes) -> Job:
        request = self.runtime.parse_request(body)
        active = sum(1 for job in self._jobs.values() if job.state not in ENDED_STATES)
        if active >= self.max_active:
            raise ServiceBusyError(f"{self.runtime.spec.tool_id} has {active} jobs queued or running (the most "
                                   f"it takes); submit again later", retry_after=30.0,
                                   context={"max_active_jobs": self.max_active})
        job = Job(self.runtime.spec.tool_id, request)
        self._jobs[job.job_id] = job
        job.task = asyncio.get_running_loop().create_task(self._execute(job), name=job.job_id)
        self.runtime.log.info("job.submitted", job_id=job.job_id, active=active + 1)
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id} in this {self.runtime.spec.tool_id} process (it ended long "
                                   "ago, or the process restarted since it was submitted)", field="job_id",
                                   context={"job_id": job_id})
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in ENDED_STATES:
            raise JobEndedError(f"job {job_id} already ended ({job.state}); nothing to cancel", field="job_id",
                                context={"job_id": job_id, "state": job.state})
        job.token.cancel(CANCEL_REASON)
        if job.state == "queued" and job.task is not None:
            job.task.cancel()   # waiting for a slot: it ends now (anyio gives back a slot granted meanwhile)
            job.end("cancelled", error=Cancelled(f"job {job_id} cancelled while queued",
                                                 context={"reason": CANCEL_REASON}))
        self.runtime.log.info("job.cancel_requested", job_id=job_id, state=job.state)
        return job

    def shutdown(self) -> None:
        """The process is stopping: every job's backend stops at its next step."""
        for job in self._jobs.values():
            job.token.cancel("the tool process is stopping")

    async def _execute(self, job: Job) -> None:
        runtime = self.runtime
        try:
            await runtime.slots.acquire()    # a job waits its turn; only /invoke answers 503 busy
        except asyncio.CancelledError:
            return                            # cancelled while queued: cancel() recorded it
        timer: asyncio.TimerHandle | None = None
        try:
            job.state, job.started_at = "running", utc_now()
            limit = runtime.profile.max_job_s
            if limit is not None:
                timer = asyncio.get_running_loop().call_later(limit, self._time_out, job, limit)
            job.response = await runtime.run_backend(job.request, cancel_token=job.token,
                                                     progress_sink=job.tracker.report)
            job.end("succeeded")
        except Cancelled as exc:
            if job.timed_out:
                job.end("failed", error=JobTimeoutError(
                    f"job {job.job_id} ran past max_job_s ({runtime.profile.max_job_s:g} s) and was cancelled",
                    context={"max_job_s": runtime.profile.max_job_s}))
            else:
                job.end("cancelled", error=exc)
        except SparkleError as exc:          # run_backend already made any other failure a typed one
            job.end("failed", error=exc)
        except Exception as exc:  # noqa: BLE001 - recorded on the job; the server stays up
            runtime.log.exception("job.failed_unexpectedly", job_id=job.job_id)
            job.end("failed", error=SparkleError(f"{type(exc).__name__}: {exc}", code="internal_error"))
        finally:
            if timer is not None:
                timer.cancel()
            runtime.slots.release()
            runtime.log.info("job.ended", job_id=job.job_id, state=job.state)
            self._forget_old()

    def _time_out(self, job: Job, limit: float) -> None:
        if job.state == "running":
            job.timed_out = True
            job.token.cancel(f"ran past max_job_s ({limit:g} s)")

    def _forget_old(self) -> None:
        ended = [job_id for job_id, job in self._jobs.items() if job.state in ENDED_STATES]
        for job_id in ended[:max(0, len(ended) - self.max_finished)]:
            del self._jobs[job_id]


def install_jobs(app: FastAPI, table: JobTable) -> None:
    """Add the ``/jobs`` routes of ``table``'s tool to ``app`` (which keeps the table as ``app.state.jobs``)."""
    runtime = table.runtime
    app.state.jobs = table
    view_model = job_view_model(runtime.spec.response_model)
    tool_id = runtime.spec.tool_id
    job_id_param = Path(..., pattern=JOB_ID_PATTERN, description="the id POST /jobs answered")
    unknown = {404: {**error_responses(404)[404],
                     "description": "no such job in this process: it ended long ago or the process restarted"}}

    def answer(job: Job, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
        body = job.view().model_dump(mode="json")
        return JSONResponse(body, status_code=status_code, headers=headers)

    @app.post("/jobs", status_code=202, response_model=view_model, summary=f"submit {tool_id} work as a job",
              openapi_extra=json_body_doc(app, runtime.spec.request_model),
              responses={202: {"description": "accepted: queued for a slot (Location: /jobs/{job_id})",
                               "headers": {"Location": {"schema": {"type": "string"},
                                                        "description": "the job's URL"}}},
                         **error_responses(503)})
    async def submit_job(request: Request) -> JSONResponse:
        # The body is read by hand, as /invoke does, so every problem gets our JSON errors.
        runtime.readiness.check()
        job = table.submit(await request.body())
        return answer(job, 202, {"Location": f"/jobs/{job.job_id}"})

    @app.get("/jobs/{job_id}", response_model=view_model, summary="a job's state, progress, response or error",
             responses=unknown)
    async def get_job(job_id: str = job_id_param) -> JSONResponse:
        return answer(table.get(job_id))

    @app.delete("/jobs/{job_id}", status_code=202, response_model=view_model,
                summary="cancel a job: at once when queued, at the backend's next step when running",
                responses={**unknown, 409: {**error_responses(409)[409], "description": "the job already ended"}})
    async def cancel_job(job_id: str = job_id_param) -> JSONResponse:
        return answer(table.cancel(job_id), 202)
