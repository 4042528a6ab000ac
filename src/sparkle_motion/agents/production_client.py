"""ProductionClient: the typed HTTP client of production_agent's API.

The CLI, the notebook panel, the benchmark and the test helpers all start, watch,
steer and collect runs; they do it through this one client, so each answer
arrives as the response model the service declares (``ProductionAccepted``,
``RunStatus``, ``ArtifactsView``, ``RunRecord``) and nobody picks fields such as
the final film out of raw dicts by hand.

It rides on :class:`~sparkle_motion.services.ToolClient` for the transport, so
the retry policy (connection refused and 503 only) and the typed errors are the
mesh's: any failure is a :class:`ToolCallError` whose ``context["endpoint"]``
names the method and full URL that failed.

Request bodies are sent as given (unset fields left out) and validated by the
service alone: its 422 answer carries every violation with its field, which the
callers already show, so a second, client-side validator could only disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from sparkle_motion.agents.production_models import ArtifactsView, ProductionAccepted, RunStatus
from sparkle_motion.config import ClientPolicy, Settings
from sparkle_motion.errors import SparkleError, ToolCallError
from sparkle_motion.runs.models import RUN_STATUSES, RunRecord
from sparkle_motion.services.client import ToolClient

STOPPING_WAIT_S = 60.0  # how long start() re-sends a resume while the run's last step finishes

__all__ = [
    "ACTIVE_STATUSES", "ENDED_STATUSES", "FINAL_FILM_TYPE", "RUN_SUMMARY_TYPE", "ControlAction", "ProductionClient",
    "RunWaitTimeout", "find_artifact",
]

TOOL_ID = "production_agent"
#: artifact_type of the film a successful run delivers (stage finalize), and of its summary.
FINAL_FILM_TYPE = "video_final"
RUN_SUMMARY_TYPE = "run_summary"
#: A run in one of these may still change; any other status is where it ended (awaiting_review: until a
#: reviewer decides, see ``review``).
ACTIVE_STATUSES = frozenset({"pending", "queued", "running", "paused"})
ENDED_STATUSES = frozenset(RUN_STATUSES) - ACTIVE_STATUSES  # succeeded, failed, stopped, cancelled, interrupted, ...

ControlAction = Literal["pause", "resume", "stop"]
ModelT = TypeVar("ModelT", bound=BaseModel)


class RunWaitTimeout(SparkleError):
    """A run did not reach the awaited status in time; ``context`` holds its last known state."""

    code = "run_wait_timeout"
    http_status = 504


def find_artifact(view: ArtifactsView, artifact_type: str) -> dict[str, Any] | None:
    """The first artifact entry of ``artifact_type`` in ``view`` (stage order, then creation order)."""
    return next((entry for entry in view.artifacts if entry.get("artifact_type") == artifact_type), None)


class ProductionClient:
    """Calls production_agent over HTTP and answers with its response models."""

    def __init__(self, settings: Settings | None = None, *, base_url: str | None = None, token: str | None = None,
                 timeout: float = 30.0, retries: int = 4, restart_wait_s: float | None = None) -> None:
        # Starting a run twice is worse than reporting a dropped POST: only reads are redone after a drop.
        self._tool = ToolClient(TOOL_ID, settings=settings, base_url=base_url, timeout=timeout, retries=retries,
                                token=token, restart_wait_s=restart_wait_s, retry_dropped_posts=False)
        policy = settings.client if settings is not None else ClientPolicy()
        #: How long watch() waits for a restarted production_agent (the profile's, not the per-call budget above).
        self.restart_budget_s = policy.restart_wait_s
        self.auto_resume = settings.auto_resume if settings is not None else False

    @property
    def base_url(self) -> str:
        return self._tool.base_url

    # -- runs ---------------------------------------------------------------------------

    def submit(self, *, mode: Literal["dry", "run"], plan: dict[str, Any] | None = None, plan_uri: str | None = None,
               run_id: str | None = None, resume_from: str | None = None,
               qa_mode: Literal["full", "skip"] | None = None,
               review: list[str] | None = None) -> ProductionAccepted:
        """POST /invoke: a dry run (validate + estimate) or a run; ``run_id`` resumes that run; ``review``
        names the gates (plan, cast, keyframes, clips) the run stops at in awaiting_review."""
        body = {"plan": plan, "plan_uri": plan_uri, "run_id": run_id, "resume_from": resume_from,
                "qa_mode": qa_mode, "mode": mode, "review": review or None}
        return self._call(ProductionAccepted, "POST", "/invoke",
                          json={key: value for key, value in body.items() if value is not None})

    def plan(self, **request: Any) -> ProductionAccepted:
        """A dry run: the invocation graph and resource estimate of a plan; nothing is rendered."""
        return self.submit(mode="dry", **request)

    def start(self, **request: Any) -> ProductionAccepted:
        """Start (or, with ``run_id``, resume) a run; it continues in the service after the 202.

        A resume sent while the run is still stopping (409 ``run_stopping``: its last
        step is finishing) is sent again after the ``retry_after`` the service names,
        for up to STOPPING_WAIT_S: a user who stops and resumes at once gets the resume.
        """
        deadline = time.monotonic() + STOPPING_WAIT_S
        while True:
            try:
                return self.submit(mode="run", **request)
            except ToolCallError as exc:
                remote = exc.remote_error or {}
                if "run_stopping" not in (remote.get("code"), exc.code) or time.monotonic() >= deadline:
                    raise
                wait_s = float((remote.get("context") or {}).get("retry_after") or 1.0)
                time.sleep(min(max(wait_s, 0.1), max(0.0, deadline - time.monotonic())))

    def status(self, run_id: str) -> RunStatus:
        """GET /status: the run, its steps and the tail of its log."""
        return self._call(RunStatus, "GET", "/status", params={"run_id": run_id})

    def control(self, action: ControlAction, run_id: str) -> RunStatus:
        """POST /control/pause|resume|stop; answers the run's status after the change."""
        return self._call(RunStatus, "POST", f"/control/{action}", json={"run_id": run_id})

    def review(self, run_id: str, *, approve: bool = False,
               regenerate: list[dict[str, Any]] | None = None) -> RunStatus:
        """POST /runs/{run_id}/review: approve the gate the run waits at, or regenerate items
        (``[{"item": "frame_002", "seed": 123}, {"item": "shot_003", "prompt": "..."}]``) and stop there again.
        After a finished run, regenerating makes a new run: the answer is that run's status."""
        body: dict[str, Any] = {"approve": True} if approve else {"regenerate": regenerate or []}
        return self._call(RunStatus, "POST", f"/runs/{run_id}/review", json=body)

    def approve(self, run_id: str) -> RunStatus:
        return self.review(run_id, approve=True)

    def regenerate(self, run_id: str, items: list[dict[str, Any]]) -> RunStatus:
        return self.review(run_id, regenerate=items)

    def runs(self, limit: int = 50) -> list[RunRecord]:
        """GET /runs: the most recent runs first."""
        data = self._request("GET", "/runs", params={"limit": limit})
        return [self._parse(RunRecord, row, "GET", "/runs") for row in data.get("runs") or []]

    # -- artifacts -----------------------------------------------------------------------

    def artifacts(self, run_id: str, stage: str | None = None) -> ArtifactsView:
        """GET /artifacts: a run's artifacts by stage (one stage when given)."""
        params = {"run_id": run_id, **({"stage": stage} if stage else {})}
        return self._call(ArtifactsView, "GET", "/artifacts", params=params)

    def final_film(self, run_id: str) -> dict[str, Any] | None:
        """The run's final film entry (stage finalize), or None when there is none (yet)."""
        return find_artifact(self.artifacts(run_id, "finalize"), FINAL_FILM_TYPE)

    # -- waiting ------------------------------------------------------------------------

    def watch(self, run_id: str, until: Collection[str] = ENDED_STATUSES, *, interval: float = 0.5,
              timeout: float | None = None, predicate: Callable[[RunStatus], bool] | None = None,
              on_service_lost: Callable[[ToolCallError], None] | None = None) -> Iterator[RunStatus]:
        """Poll GET /status every ``interval`` s, yielding each answer, up to and including the first
        whose status is in ``until`` (and satisfies ``predicate``); RunWaitTimeout after ``timeout`` s.

        With ``on_service_lost``, a production_agent that goes away while the mesh
        supervisor manages it is waited for: ``on_service_lost`` is called once per
        outage (to tell the user), then the watch waits for the restarted service
        (``restart_budget_s``), which with ``auto_resume`` picks the run up again — so
        an ``interrupted`` status right after the restart is not taken as the end.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: RunStatus | None = None
        back_at: float | None = None  # when production_agent answered again after an outage
        while deadline is None or time.monotonic() < deadline:
            try:
                last = self.status(run_id)
            except ToolCallError as exc:
                if on_service_lost is None or exc.code != "tool_unreachable" or not self._tool.supervision().managed:
                    raise
                on_service_lost(exc)
                self._tool.wait_ready(self.restart_budget_s)
                back_at = time.monotonic()
                continue
            yield last
            resuming = (last.status == "interrupted" and self.auto_resume and back_at is not None
                        and time.monotonic() - back_at < self.restart_budget_s)
            if last.status in until and not resuming and (predicate is None or predicate(last)):
                return
            time.sleep(interval)
        state = {} if last is None else {"status": last.status, "current_stage": last.current_stage,
                                         "error": last.error}
        raise RunWaitTimeout(f"run {run_id} did not reach {sorted(until)} in {timeout} s; last: {state}",
                             context={"run_id": run_id, **state})

    def wait_for_status(self, run_id: str, statuses: Collection[str], *, timeout: float = 300.0,
                        interval: float = 0.25, predicate: Callable[[RunStatus], bool] | None = None) -> RunStatus:
        """Block until the run's status is one of ``statuses`` (and ``predicate`` holds); its last status."""
        last: RunStatus | None = None
        for last in self.watch(run_id, statuses, interval=interval, timeout=timeout, predicate=predicate):
            pass
        assert last is not None  # watch() yields at least once or raises
        return last

    # -- plumbing -----------------------------------------------------------------------

    def close(self) -> None:
        self._tool.close()

    def __enter__(self) -> ProductionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _endpoint(self, method: str, path: str) -> str:
        return f"{method} {self.base_url}{path}"

    def _request(self, method: str, path: str, *, json: Any = None,
                 params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            if method == "GET":
                return self._tool.get(path, params=params)
            return self._tool.post(path, json=json)
        except ToolCallError as exc:
            exc.context["endpoint"] = self._endpoint(method, path)
            raise

    def _call(self, model: type[ModelT], method: str, path: str, *, json: Any = None,
              params: dict[str, Any] | None = None) -> ModelT:
        return self._parse(model, self._request(method, path, json=json, params=params), method, path)

    def _parse(self, model: type[ModelT], data: Any, method: str, path: str) -> ModelT:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ToolCallError(f"{TOOL_ID} {method} {path} answered a body that is not a valid {model.__name__}: "
                                f"{exc.error_count()} error(s)", tool_id=TOOL_ID, status=200,
                                code="invalid_tool_response",
                                context={"endpoint": self._endpoint(method, path),
                                         "errors": exc.errors(include_input=False)[:5]}) from None
