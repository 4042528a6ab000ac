"""The notebook control panel: plan, review, produce, watch and download a film with ipywidgets.

Every button callback is Python in the kernel and talks HTTP (``ToolClient``) to
script_agent and production_agent. Nothing a callback does blocks the kernel:
actions run in order on one daemon worker thread, and ``/status`` is polled by a
cancellable daemon thread whose interval the user can change while it runs.
Widget updates from those threads are serialised by one lock; ipykernel sends
comm messages from any thread under the last cell's parent header.

Buttons follow the run state (Pause only while running, Resume only while
paused, Run Production only with a valid plan and no active run). ``click()``
on a disabled button — which ipywidgets does not prevent — is refused with the
reason shown in the panel. Every endpoint error is shown with the endpoint, the
HTTP status, the remote error code, message, field and details.

Headless use (CI, papermill): click buttons, then ``wait_idle()``,
``wait_for_status()`` and ``raise_for_error()`` so that a cell fails when the
panel shows an error.
"""

from __future__ import annotations

import html
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime
from pathlib import Path
from queue import Queue
from typing import Any
from urllib.parse import unquote, urlparse

import ipywidgets as widgets
from pydantic import BaseModel, Field

from sparkle_motion.agents.production_models import STAGES
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.models import URI_PREFIX
from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import InvalidInputError, PlanValidationError, SparkleError, ToolCallError
from sparkle_motion.logs import get_logger
from sparkle_motion.notebook.plan_review import PlanReview
from sparkle_motion.notebook.preflight import in_colab
from sparkle_motion.notebook.previews import MAX_PREVIEW_BYTES, read_artifact_bytes, stage_section
from sparkle_motion.plan import load_plan_file, validate_plan
from sparkle_motion.plan.validation import PLAN_ARTIFACT_KEY
from sparkle_motion.runs.models import RUN_STATUSES

__all__ = ["ACTIVE_STATUSES", "FINAL_STATUSES", "ControlPanel", "PanelActionError", "PanelMessage",
           "create_control_panel"]

ACTIVE_STATUSES = frozenset({"pending", "running", "paused"})
FINAL_STATUSES = frozenset(RUN_STATUSES) - ACTIVE_STATUSES  # succeeded, failed, stopped, interrupted
MIN_POLL_INTERVAL_S = 0.25
MAX_POLL_INTERVAL_S = 60.0
# Rows per stage in the artifacts viewer: all stages at once stay light; one stage shows more.
ROWS_PER_STAGE, ROWS_ONE_STAGE = 6, 48
MESSAGES_SHOWN = 6
# How long a resume waits for a just-stopped run to finish the step it was in.
RUN_WIND_DOWN_S = 60.0
# Rule names load_plan_file gives problems with the file itself (not with the plan in it).
_FILE_RULES = frozenset({"file_unreadable", "file_too_large", "invalid_json"})
_STATUS_COLORS = {"pending": "#6b7280", "running": "#1d4ed8", "paused": "#b45309", "succeeded": "#15803d",
                  "failed": "#b91c1c", "stopped": "#7f1d1d", "interrupted": "#b91c1c"}

log = get_logger("sparkle_motion.notebook")


def _seconds(value: Any) -> str:
    return "" if value is None else f"{float(value):.2f} s"


class PanelActionError(SparkleError):
    """A panel action failed or was refused; raised by the headless helpers, shown otherwise."""

    code = "panel_action_failed"
    http_status = 500


class PanelMessage(BaseModel):
    """One line of the panel's message pane: an endpoint error, a refused click or a note."""

    level: str  # "error" | "info"
    action: str
    message: str
    endpoint: str | None = None
    status: int | None = None
    code: str | None = None
    field: str | None = None
    details: list[dict[str, Any]] = Field(default_factory=list)
    at: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%H:%M:%S"))

    def text(self) -> str:
        where = f"{self.endpoint} → " if self.endpoint else ""
        status = f"{self.status} " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        field = f"[{self.field}] " if self.field else ""
        return f"{self.action}: {where}{status}{code}{field}{self.message}"


class _EndpointError(SparkleError):
    """A ToolCallError with the endpoint (method and full URL) it came from."""

    def __init__(self, endpoint: str, exc: ToolCallError) -> None:
        remote = exc.remote_error or {}
        super().__init__(remote.get("message") or exc.message, field=remote.get("field") or exc.field,
                         code=remote.get("code") or exc.code, http_status=exc.status or exc.http_status,
                         context=exc.context, details=remote.get("details") or exc.details)
        self.endpoint = endpoint
        self.status = exc.status


class _Worker:
    """One daemon thread running submitted actions in order (never blocks the kernel's shell thread)."""

    def __init__(self, name: str) -> None:
        self._queue: Queue[tuple[Callable[[], None], Future[None]] | None] = Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, future = item
            if future.set_running_or_notify_cancel():
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - the action already reported it; keep the future honest
                    future.set_exception(exc)
                else:
                    future.set_result(None)

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        self._queue.put((fn, future))
        return future

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def close(self) -> None:
        self._queue.put(None)


def _button(description: str, icon: str, tooltip: str, style: str = "") -> widgets.Button:
    return widgets.Button(description=description, icon=icon, tooltip=tooltip, button_style=style, disabled=True)


class ControlPanel:
    """Widgets + callbacks driving one mesh. Display it as the last expression of a cell."""

    def __init__(self, settings: Settings | None = None, *, poll_interval_s: float = 2.0,
                 script_timeout_s: float = 300.0, http_timeout_s: float = 30.0, auto_poll: bool = True,
                 auto_fetch_artifacts: bool = False, retries: int = 2) -> None:
        from sparkle_motion.services import ToolClient

        self.settings = settings or get_settings()
        self.script = ToolClient("script_agent", self.settings, timeout=script_timeout_s, retries=retries)
        self.production = ToolClient("production_agent", self.settings, timeout=http_timeout_s, retries=retries)
        self.auto_poll = auto_poll
        self.messages: list[PanelMessage] = []
        self.run_id: str | None = None
        self.run_status: dict[str, Any] | None = None
        self.last_artifacts: dict[str, Any] | None = None
        self.final_entry: dict[str, Any] | None = None
        self.final_path: Path | None = None
        self.final_missing_reason: str | None = None
        self.last_accepted: dict[str, Any] | None = None
        self._busy: str | None = None
        self._futures: list[Future[None]] = []
        self._ui = threading.RLock()
        self._changed = threading.Condition(self._ui)
        self._worker = _Worker("sparkle-panel-actions")
        self._poll_thread: threading.Thread | None = None
        self._poll_stop = threading.Event()
        self._artifact_fingerprint: tuple[str, ...] | None = None
        self._qa_skipped_run: str | None = None
        self._toggle_guard = False
        self._closed = False
        self._build(poll_interval_s, auto_fetch_artifacts)
        self._sync_buttons()

    # ================================================================== layout

    def _build(self, poll_interval_s: float, auto_fetch: bool) -> None:
        label = {"description_width": "8em"}
        self.messages_view = widgets.HTML("")
        self.clear_messages_button = widgets.Button(description="Clear messages", icon="eraser",
                                                    layout=widgets.Layout(width="auto"))
        self.clear_messages_button.on_click(lambda _b: self.clear_messages())
        self.qa_badge = widgets.HTML("", layout=widgets.Layout(display="none"))

        # -- plan
        self.prompt = widgets.Textarea(description="Idea", placeholder="A lighthouse keeper befriends a storm",
                                       layout=widgets.Layout(width="98%", height="4em"), style=label)
        self.title = widgets.Text(description="Title", placeholder="(planner chooses)", style=label)
        self.shots = widgets.BoundedIntText(value=0, min=0, max=12, description="Shots (0=auto)", style=label)
        self.duration = widgets.BoundedFloatText(value=0.0, min=0.0, max=300.0, step=1.0,
                                                 description="Seconds (0=auto)", style=label)
        self.seed = widgets.Text(description="Seed", placeholder="(from the idea)", style=label)
        self.style = widgets.Text(description="Style", placeholder="e.g. noir", style=label)
        self.generate_button = _button("Generate Plan", "magic", "POST script_agent /invoke", "primary")
        self.plan_uri = widgets.Text(description="Plan URI", placeholder="artifact+fs://… or a plan .json path",
                                     layout=widgets.Layout(width="70%"), style=label)
        self.load_plan_button = _button("Load Plan JSON", "folder-open", "Read, validate and review the plan")
        self.generate_button.on_click(lambda _b: self.generate_plan())
        self.load_plan_button.on_click(lambda _b: self.load_plan())
        self.plan_uri.observe(lambda _c: self._sync_buttons(), names="value")
        self.review = PlanReview(on_change=lambda _r: self._sync_buttons())
        self.plan_section = widgets.VBox([
            self.prompt, widgets.HBox([self.title, self.style]), widgets.HBox([self.shots, self.duration, self.seed]),
            self.generate_button, widgets.HBox([self.plan_uri, self.load_plan_button]), self.review.summary,
        ])
        self.review_section = self.review.widget

        # -- production
        self.mode = widgets.Dropdown(options=[("run (render the film)", "run"), ("dry (validate + estimate)", "dry")],
                                     value="run", description="Mode", style=label)
        self.qa_mode = widgets.Dropdown(options=[("full QA", "full"), ("skip QA", "skip")], value="full",
                                        description="QA mode", style=label)
        self.send_inline = widgets.Checkbox(value=False, description="Send plan inline", indent=False)
        self.inline_note = widgets.HTML("")
        self.run_button = _button("Run Production", "play", "POST production_agent /invoke", "success")
        self.pause_button = _button("Pause", "pause", "POST /control/pause", "warning")
        self.resume_button = _button("Resume", "play-circle", "POST /control/resume", "info")
        self.stop_button = _button("Stop", "stop", "POST /control/stop", "danger")
        self.retry_stage = widgets.Dropdown(options=list(STAGES), value="finalize", description="Resume from",
                                            style=label)
        self.retry_button = _button("Resume from stage", "redo", "POST /invoke with run_id and resume_from")
        self.run_button.on_click(lambda _b: self.run_production())
        self.pause_button.on_click(lambda _b: self.control("pause"))
        self.resume_button.on_click(lambda _b: self.control("resume"))
        self.stop_button.on_click(lambda _b: self.control("stop"))
        self.retry_button.on_click(lambda _b: self.resume_from(self.retry_stage.value))
        self.send_inline.observe(lambda _c: self._sync_buttons(), names="value")

        self.poll_toggle = widgets.ToggleButton(value=False, description="Poll status", icon="refresh",
                                                tooltip="Poll GET /status in the background")
        self.poll_interval = widgets.BoundedFloatText(value=poll_interval_s, min=MIN_POLL_INTERVAL_S,
                                                      max=MAX_POLL_INTERVAL_S, step=0.5, description="Interval (s)",
                                                      style=label)
        self.auto_fetch = widgets.Checkbox(value=auto_fetch, description="Auto-fetch artifacts", indent=False)
        self.poll_toggle.observe(self._on_poll_toggle, names="value")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress", style=label)
        self.status_view = widgets.HTML("<i>No run yet.</i>")
        self.alert = widgets.HTML("", layout=widgets.Layout(display="none"))
        self.production_section = widgets.VBox([
            widgets.HBox([self.mode, self.qa_mode]), widgets.HBox([self.send_inline, self.inline_note]),
            widgets.HBox([self.run_button, self.pause_button, self.resume_button, self.stop_button]),
            widgets.HBox([self.poll_toggle, self.poll_interval, self.auto_fetch]),
        ])
        self.status_section = widgets.VBox([self.progress, self.alert, widgets.HBox([self.retry_stage, self.retry_button]),
                                            self.status_view])

        # -- artifacts
        self.run_id_filter = widgets.Text(description="Run ID", style=label)
        self.stage_filter = widgets.Dropdown(options=[("all stages", "")] + [(s, s) for s in STAGES], value="",
                                             description="Stage", style=label)
        self.refresh_artifacts_button = _button("Refresh Artifacts", "refresh", "GET /artifacts")
        self.refresh_artifacts_button.on_click(lambda _b: self.refresh_artifacts())
        self.run_id_filter.observe(lambda _c: self._sync_buttons(), names="value")
        self.artifacts_summary = widgets.HTML("")
        self.artifacts_view = widgets.VBox()
        self.artifacts_section = widgets.VBox([
            widgets.HBox([self.run_id_filter, self.stage_filter, self.refresh_artifacts_button]),
            self.artifacts_summary, self.artifacts_view,
        ])

        # -- final deliverable
        self.final_button = _button("Show final video", "film", "GET /artifacts?stage=finalize", "primary")
        self.resume_finalize_button = _button('Resume from "finalize"', "redo",
                                              "POST /invoke with resume_from=finalize", "warning")
        self.download_button = _button("Download" if in_colab() else "Copy next to notebook", "download",
                                       "google.colab.files.download" if in_colab() else
                                       "Copy the film into ./sparkle_downloads and link it")
        self.final_button.on_click(lambda _b: self.show_final())
        self.resume_finalize_button.on_click(lambda _b: self.resume_from("finalize"))
        self.download_button.on_click(lambda _b: self.download_final())
        self.final_info = widgets.HTML("<i>No final video yet.</i>")
        self.final_video_box = widgets.VBox()
        self.download_link = widgets.HTML("")
        self.final_section = widgets.VBox([
            widgets.HBox([self.final_button, self.resume_finalize_button, self.download_button]),
            self.qa_badge, self.final_info, self.final_video_box, self.download_link,
        ])

        self.header = widgets.VBox([self.qa_badge, self.messages_view])
        tabs = widgets.Tab(children=[self.plan_section, self.review_section,
                                     widgets.VBox([self.production_section, self.status_section]),
                                     self.artifacts_section, self.final_section],
                           titles=("Plan", "Review", "Production", "Artifacts", "Final video"))
        self.widget = widgets.VBox([widgets.HTML("<h3 style='margin:4px 0'>Sparkle Motion</h3>"), self.header, tabs,
                                    self.clear_messages_button])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # ================================================================== state + buttons

    @property
    def status(self) -> str | None:
        return (self.run_status or {}).get("status")

    @property
    def busy(self) -> str | None:
        return self._busy

    def _forced_inline_reason(self) -> str | None:
        if self.review.edited:
            return "the plan was edited"
        uri = self.plan_uri.value.strip()
        if self.review.loaded and not uri.startswith(URI_PREFIX):
            return "the plan comes from a file, not an artifact"
        return None

    def _sync_buttons(self) -> None:
        with self._ui:
            busy = self._busy is not None
            status = self.status
            active = status in ACTIVE_STATUSES
            self.generate_button.disabled = busy
            self.load_plan_button.disabled = busy or not self.plan_uri.value.strip()
            self.run_button.disabled = busy or not self.review.is_valid or active
            self.pause_button.disabled = busy or status != "running"
            self.resume_button.disabled = busy or status != "paused"
            self.stop_button.disabled = busy or not active
            self.retry_button.disabled = busy or self.run_id is None or active or status is None
            self.refresh_artifacts_button.disabled = busy or not self.run_id_filter.value.strip()
            self.final_button.disabled = busy or self.run_id is None
            dry = (self.run_status or {}).get("mode") == "dry"
            self.resume_finalize_button.disabled = (busy or self.final_missing_reason is None or active or dry
                                                    or self.run_id is None)
            self.download_button.disabled = busy or self.final_path is None
            forced = self._forced_inline_reason()
            if forced:
                self.send_inline.disabled = True
                self.inline_note.value = f"<small>plan sent inline: {html.escape(forced)}</small>"
            else:
                self.send_inline.disabled = False
                self.inline_note.value = ""
            self._changed.notify_all()

    # ================================================================== messages

    def _message(self, message: PanelMessage) -> None:
        with self._ui:
            self.messages.append(message)
            if message.level == "error":
                log.warning("panel_error", **message.model_dump(exclude={"level"}))
            shown = self.messages[-MESSAGES_SHOWN:][::-1]
            items = []
            for m in shown:
                color = "#b91c1c" if m.level == "error" else "#374151"
                details = "".join(f"<li><code>{html.escape(str(d.get('path') or d.get('field') or '$'))}</code>: "
                                  f"{html.escape(str(d.get('message', d)))}</li>" for d in m.details[:20])
                items.append(f"<div style='color:{color}'>[{m.at}] {html.escape(m.text())}"
                             f"{f'<ul>{details}</ul>' if details else ''}</div>")
            self.messages_view.value = "".join(items)

    def _error(self, action: str, exc: BaseException) -> None:
        if isinstance(exc, _EndpointError):
            msg = PanelMessage(level="error", action=action, endpoint=exc.endpoint, status=exc.status, code=exc.code,
                               message=exc.message, field=exc.field, details=exc.details)
        elif isinstance(exc, SparkleError):
            msg = PanelMessage(level="error", action=action, code=exc.code, message=exc.message, field=exc.field,
                               details=exc.details)
        else:  # a bug in the panel or an unexpected library error: shown in full, never swallowed
            log.exception("panel_action_crashed", action=action)
            msg = PanelMessage(level="error", action=action, code="internal_error",
                               message=f"{type(exc).__name__}: {exc}")
        self._message(msg)

    def _info(self, action: str, text: str) -> None:
        self._message(PanelMessage(level="info", action=action, message=text))

    def _refuse(self, action: str, reason: str) -> None:
        self._message(PanelMessage(level="error", action=action, code="not_allowed", message=reason))

    def clear_messages(self) -> None:
        with self._ui:
            self.messages.clear()
            self.messages_view.value = ""

    @property
    def errors(self) -> list[PanelMessage]:
        return [m for m in self.messages if m.level == "error"]

    def raise_for_error(self) -> None:
        """Raise PanelActionError for the errors shown (headless cells fail on them)."""
        errors = self.errors
        if errors:
            raise PanelActionError("; ".join(e.text() for e in errors), code=errors[-1].code,
                                   context={"errors": [e.model_dump() for e in errors]})

    # ================================================================== actions

    def _submit(self, action: str, body: Callable[[], None]) -> Future[None] | None:
        with self._ui:
            if self._closed:
                self._refuse(action, "the panel is closed")
                return None
            if self._busy is not None:
                self._refuse(action, f"busy with {self._busy}; wait for it to finish")
                return None
            self._busy = action
        self._sync_buttons()

        def run() -> None:
            try:
                body()
            except Exception as exc:  # noqa: BLE001 - shown in the panel with its endpoint; the future stays clean
                self._error(action, exc)
            finally:
                with self._ui:
                    self._busy = None
                self._sync_buttons()

        future = self._worker.submit(run)
        with self._ui:
            self._futures = [f for f in self._futures if not f.done()] + [future]
        return future

    def _background(self, action: str, body: Callable[[], None]) -> Future[None]:
        """Queue work the panel starts by itself (no busy state); its errors are shown like any action's."""

        def run() -> None:
            try:
                body()
            except Exception as exc:  # noqa: BLE001 - shown in the panel, not lost in a future
                self._error(action, exc)

        future = self._worker.submit(run)
        with self._ui:
            self._futures = [f for f in self._futures if not f.done()] + [future]
        return future

    def _call(self, client: Any, method: str, path: str, *, json_body: Any = None,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        endpoint = f"{method} {client.base_url}{path}"
        try:
            if method == "GET":
                return client.get(path, params=params)
            return client.post(path, json=json_body)
        except ToolCallError as exc:
            raise _EndpointError(endpoint, exc) from exc

    # -- plan ---------------------------------------------------------------------------

    def plan_request(self) -> dict[str, Any]:
        """The script_agent body from the inputs; blank/zero inputs are left to the planner."""
        body: dict[str, Any] = {"prompt": self.prompt.value.strip()}
        if not body["prompt"]:
            raise InvalidInputError("enter the film idea", field="prompt")
        if self.title.value.strip():
            body["title"] = self.title.value.strip()
        if self.shots.value:
            body["shots"] = int(self.shots.value)
        if self.duration.value:
            body["duration_s"] = float(self.duration.value)
        if self.seed.value.strip():
            try:
                body["seed"] = int(self.seed.value.strip())
            except ValueError:
                raise InvalidInputError(f"must be a whole number (got {self.seed.value.strip()!r})",
                                        field="seed") from None
        if self.style.value.strip():
            body["style"] = self.style.value.strip()
        return body

    def generate_plan(self) -> Future[None] | None:
        action = "Generate Plan"
        try:
            body = self.plan_request()
        except InvalidInputError as exc:
            self._error(action, exc)
            return None

        def work() -> None:
            answer = self._call(self.script, "POST", "/invoke", json_body=body)
            summary = answer.get("plan_summary") or {}
            with self._ui:
                self.plan_uri.value = answer["artifact_uri"]
            self._info(action, f"plan {answer.get('plan_id')} “{summary.get('title')}”: {summary.get('shots')} shots, "
                               f"{summary.get('dialogue_lines')} lines, {summary.get('runtime_s')} s "
                               f"({summary.get('model')}) → {answer['artifact_uri']}")
            self._load_plan(answer["artifact_uri"])

        return self._submit(action, work)

    def load_plan(self) -> Future[None] | None:
        action = "Load Plan JSON"
        ref = self.plan_uri.value.strip()
        if not ref:
            self._refuse(action, "enter a plan URI (artifact+fs://…) or a path to a plan .json")
            return None
        return self._submit(action, lambda: self._load_plan(ref))

    def _plan_path(self, ref: str) -> Path:
        if ref.startswith(URI_PREFIX):
            store = ArtifactStore(self.settings.home)
            try:
                return store.path_for(ref, field="plan_uri")
            finally:
                store.close()
        if ref.startswith("file://"):
            return Path(unquote(urlparse(ref).path))
        if "://" in ref:
            raise InvalidInputError(f"unsupported URI scheme in {ref!r}; use artifact+fs://, file:// or a path",
                                    field="plan_uri")
        return Path(ref).expanduser()

    def _load_plan(self, ref: str) -> None:
        path = self._plan_path(ref)
        try:
            data = load_plan_file(path).model_dump(mode="json")
        except PlanValidationError as exc:
            if any(d.get("rule") in _FILE_RULES for d in exc.details):
                raise
            # Readable JSON holding an invalid plan: show it for repair, with every violation.
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            if isinstance(data, dict) and PLAN_ARTIFACT_KEY in data and "shots" not in data:
                data = data[PLAN_ARTIFACT_KEY]
        with self._ui:
            self.review.load(data, ref)
        state = "valid" if self.review.is_valid else f"{len(self.review.violations)} problem(s) to fix"
        self._info("Load Plan JSON", f"loaded {ref}: {state}")

    # -- production ------------------------------------------------------------------------

    def production_request(self) -> dict[str, Any]:
        """The production_agent body: the reviewed plan inline, or the plan's artifact URI."""
        if not self.review.loaded:
            raise InvalidInputError("no plan loaded: generate or load one first", field="plan")
        if not self.review.is_valid:
            raise PlanValidationError(f"the plan has {len(self.review.violations)} problem(s); fix them in Review",
                                      details=self.review.violations, field="plan")
        body: dict[str, Any] = {"mode": self.mode.value, "qa_mode": self.qa_mode.value}
        if self.send_inline.value or self._forced_inline_reason():
            # Validated again here: the draft is what leaves the notebook.
            body["plan"] = validate_plan(self.review.draft or {}).model_dump(mode="json")
        else:
            body["plan_uri"] = self.plan_uri.value.strip()
        return body

    def run_production(self) -> Future[None] | None:
        action = "Run Production"
        if self.status in ACTIVE_STATUSES:
            self._refuse(action, f"run {self.run_id} is {self.status}: pause, resume or stop it first")
            return None
        try:
            body = self.production_request()
        except InvalidInputError as exc:
            self._error(action, exc)
            return None

        def work() -> None:
            accepted = self._call(self.production, "POST", "/invoke", json_body=body)
            self._start_tracking(action, accepted)

        return self._submit(action, work)

    def resume_from(self, stage: str) -> Future[None] | None:
        """POST /invoke {run_id, resume_from}: redo ``stage`` and everything after it (earlier steps come from cache)."""
        action = f"Resume from {stage}"
        if stage not in STAGES:
            self._error(action, InvalidInputError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}",
                                                  field="resume_from"))
            return None
        if self.run_id is None:
            self._refuse(action, "no run to resume")
            return None
        if self.status in ACTIVE_STATUSES:
            self._refuse(action, f"run {self.run_id} is {self.status}; stop it before resuming from a stage")
            return None
        body = {"run_id": self.run_id, "resume_from": stage, "mode": "run", "qa_mode": self.qa_mode.value}

        def work() -> None:
            # A run that was just stopped finishes the step in flight before its thread
            # exits; until then production_agent answers 409 run_active. Wait that out.
            deadline = time.monotonic() + RUN_WIND_DOWN_S
            announced = False
            while True:
                try:
                    accepted = self._call(self.production, "POST", "/invoke", json_body=body)
                    break
                except _EndpointError as exc:
                    if exc.code != "run_active" or time.monotonic() >= deadline:
                        raise
                    if not announced:
                        self._info(action, f"run {body['run_id']} is finishing its current step; retrying")
                        announced = True
                    time.sleep(0.25)
            self._start_tracking(action, accepted)

        return self._submit(action, work)

    def _start_tracking(self, action: str, accepted: dict[str, Any]) -> None:
        run_id = accepted["run_id"]
        with self._ui:
            self.last_accepted = accepted
            self.run_id = run_id
            self.run_status = None
            self.final_entry = self.final_path = self.final_missing_reason = None
            self.final_info.value = "<i>No final video yet.</i>"
            self.final_video_box.children = ()
            self.download_link.value = ""
            self.run_id_filter.value = run_id
            self._artifact_fingerprint = None
            self._set_qa_badge(run_id, accepted.get("qa_mode"))
        if accepted.get("mode") == "dry":
            graph = accepted.get("invocation_graph") or []
            estimate = accepted.get("resource_estimate") or {}
            self._info(action, f"dry run {run_id}: {len(graph)} invocations planned; estimate "
                               f"{json.dumps(estimate, sort_keys=True)[:300]}")
        else:
            self._info(action, f"run {run_id} accepted ({accepted.get('status')}, qa={accepted.get('qa_mode')}"
                               f"{', resume_from=' + accepted['resume_from'] if accepted.get('resume_from') else ''})")
        self._render_status(self._call(self.production, "GET", "/status", params={"run_id": run_id}))
        if self.auto_poll and self.status in ACTIVE_STATUSES:
            self.start_polling()

    def control(self, action: str) -> Future[None] | None:
        """POST /control/pause|resume|stop for the current run."""
        label = action.capitalize()
        allowed = {"pause": {"running"}, "resume": {"paused"}, "stop": set(ACTIVE_STATUSES)}.get(action)
        if allowed is None:
            self._error(label, InvalidInputError(f"unknown control {action!r}; pause, resume or stop",
                                                 field="action"))
            return None
        if self.run_id is None or self.status not in allowed:
            self._refuse(label, f"cannot {action} run {self.run_id or '(none)'} while it is {self.status or 'not started'}")
            return None
        run_id = self.run_id

        def work() -> None:
            status = self._call(self.production, "POST", f"/control/{action}", json_body={"run_id": run_id})
            self._info(label, f"run {run_id} is now {status.get('status')}")
            self._render_status(status)
            if action == "resume" and self.auto_poll:
                self.start_polling()

        return self._submit(label, work)

    # -- status ---------------------------------------------------------------------------

    def refresh_status(self) -> dict[str, Any] | None:
        """GET /status for the current run now, in the calling thread; errors are shown and returned as None."""
        if self.run_id is None:
            return None
        try:
            status = self._call(self.production, "GET", "/status", params={"run_id": self.run_id})
        except SparkleError as exc:
            self._error("Status", exc)
            return None
        self._render_status(status)
        return status

    def _render_status(self, status: dict[str, Any]) -> None:
        with self._ui:
            if status.get("run_id") != self.run_id:
                return  # an answer about a run the panel has since left
            previous = self.status
            self.run_status = status
            state = status.get("status", "?")
            self.progress.value = float(status.get("progress") or 0.0)
            self.progress.bar_style = {"succeeded": "success", "failed": "danger", "stopped": "danger",
                                       "interrupted": "danger", "paused": "warning"}.get(state, "info")
            self._set_qa_badge(status["run_id"], status.get("qa_mode"))
            self.status_view.value = self._status_html(status)
            error = status.get("error") or {}
            if state in ("failed", "stopped", "interrupted"):
                stage = error.get("stage") or status.get("current_stage") or "?"
                reason = error.get("message") or {"stopped": "stopped by request",
                                                  "interrupted": "its production_agent exited"}.get(state, "")
                self.alert.value = (f"<div style='background:#fee2e2;color:#7f1d1d;padding:6px;border-radius:4px'>"
                                    f"<b>Run {html.escape(state)} in {html.escape(stage)}</b>: {html.escape(reason)}"
                                    f" — pick a stage below and press “Resume from stage”.</div>")
                self.alert.layout.display = ""
                if stage in STAGES:
                    self.retry_stage.value = stage
            else:
                self.alert.value = ""
                self.alert.layout.display = "none"
            if previous != "succeeded" and state == "succeeded" and status.get("mode") == "run":
                # The deliverable is what the user waits for: fetch it as soon as the run ends.
                # Queued before waiters are woken, so wait_idle() after wait_for_status() covers it.
                run_id = status["run_id"]
                self._background("Show final video",
                                 lambda: self._fetch_final(run_id) if self.run_id == run_id else None)
        self._sync_buttons()

    @staticmethod
    def _status_html(status: dict[str, Any]) -> str:
        state = str(status.get("status", "?"))
        color = _STATUS_COLORS.get(state, "#374151")
        head = (f"<b>run</b> <code>{html.escape(str(status.get('run_id')))}</code> "
                f"<span style='background:{color};color:white;padding:1px 8px;border-radius:4px'>"
                f"{html.escape(state)}</span> stage <b>{html.escape(str(status.get('current_stage') or '—'))}</b> · "
                f"{100 * float(status.get('progress') or 0):.0f}% · mode {html.escape(str(status.get('mode')))} · "
                f"QA {html.escape(str(status.get('qa_mode')))}")
        steps = status.get("steps") or []
        rows = "".join(
            f"<tr><td>{html.escape(str(s.get('stage')))}</td><td>{html.escape(str(s.get('shot_id') or ''))}</td>"
            f"<td>{s.get('attempt')}</td><td style='color:{_STATUS_COLORS.get(str(s.get('status')), '#374151')}'>"
            f"{html.escape(str(s.get('status')))}</td>"
            f"<td>{_seconds(s.get('duration_s'))}</td></tr>"
            for s in steps[-30:])
        table = (f"<table><tr><th>stage</th><th>shot</th><th>try</th><th>status</th><th>time</th></tr>{rows}</table>"
                 if rows else "")
        tail = status.get("log_tail") or []
        lines = "\n".join(f"{e.get('level', '')[:4]:4} {e.get('message', '')}" for e in tail[-8:])
        logs = f"<pre style='font-size:85%;max-height:10em;overflow:auto'>{html.escape(lines)}</pre>" if lines else ""
        return f"<div>{head}</div>{table}{logs}"

    def _set_qa_badge(self, run_id: str, qa_mode: str | None) -> None:
        # Persistent: a skip-QA run keeps its badge until a run with full QA becomes current.
        with self._ui:
            if qa_mode == "skip":
                self._qa_skipped_run = run_id
            elif qa_mode == "full":
                self._qa_skipped_run = None
            if self._qa_skipped_run:
                self.qa_badge.value = (f"<span style='background:#b45309;color:white;padding:2px 10px;border-radius:4px;"
                                       f"font-weight:bold'>QA skipped</span> run <code>{html.escape(self._qa_skipped_run)}"
                                       f"</code> was produced with qa_mode=skip: not validated — review it before "
                                       f"sharing.")
                self.qa_badge.layout.display = ""
            else:
                self.qa_badge.value = ""
                self.qa_badge.layout.display = "none"

    @property
    def qa_skipped(self) -> bool:
        return self._qa_skipped_run is not None

    # -- polling ---------------------------------------------------------------------------

    def _on_poll_toggle(self, change: dict[str, Any]) -> None:
        if self._toggle_guard:
            return
        if change["new"]:
            self.start_polling()
        else:
            self.stop_polling()

    def _set_toggle(self, value: bool) -> None:
        with self._ui:
            self._toggle_guard = True
            try:
                self.poll_toggle.value = value
            finally:
                self._toggle_guard = False

    @property
    def polling(self) -> bool:
        thread = self._poll_thread
        return thread is not None and thread.is_alive() and not self._poll_stop.is_set()

    def start_polling(self) -> None:
        """Poll GET /status every ``poll_interval`` seconds on a daemon thread until the run ends or stop_polling()."""
        previous = self._poll_thread
        if previous is not None and previous.is_alive():
            if not self._poll_stop.is_set():
                return
            if previous is not threading.current_thread():
                # A stopping poller finishes first (outside the lock: its last update needs it).
                previous.join(timeout=MAX_POLL_INTERVAL_S)
        with self._ui:
            if self.polling:
                return
            self._poll_stop = threading.Event()
            self._poll_thread = threading.Thread(target=self._poll_loop, args=(self._poll_stop,),
                                                 name="sparkle-panel-poll", daemon=True)
            self._poll_thread.start()
        self._set_toggle(True)

    def stop_polling(self, timeout: float = 10.0) -> None:
        self._poll_stop.set()
        thread = self._poll_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)
        self._set_toggle(False)

    def _poll_loop(self, stop: threading.Event) -> None:
        last_error: str | None = None
        try:
            while not stop.is_set():
                run_id = self.run_id
                if run_id is not None:
                    try:
                        status = self._call(self.production, "GET", "/status", params={"run_id": run_id})
                        if self.auto_fetch.value:
                            self._fetch_artifacts(run_id, self.stage_filter.value or None, only_if_changed=True)
                    except SparkleError as exc:
                        if str(exc) != last_error:  # a service restart would otherwise flood the pane
                            self._error("Poll status", exc)
                            last_error = str(exc)
                    else:
                        last_error = None
                        self._render_status(status)
                        if status.get("status") in FINAL_STATUSES and run_id == self.run_id:
                            break
                stop.wait(min(MAX_POLL_INTERVAL_S, max(MIN_POLL_INTERVAL_S, float(self.poll_interval.value))))
        except Exception as exc:  # noqa: BLE001 - a crashed poller must say so, not vanish
            self._error("Poll status", exc)
        finally:
            stop.set()
            self._set_toggle(False)
            self._sync_buttons()

    # -- artifacts ---------------------------------------------------------------------------

    def refresh_artifacts(self) -> Future[None] | None:
        action = "Refresh Artifacts"
        run_id = self.run_id_filter.value.strip()
        if not run_id:
            self._refuse(action, "enter a run id")
            return None
        stage = self.stage_filter.value or None
        return self._submit(action, lambda: self._fetch_artifacts(run_id, stage))

    def _fetch_artifacts(self, run_id: str, stage: str | None, *, only_if_changed: bool = False) -> None:
        params = {"run_id": run_id, **({"stage": stage} if stage else {})}
        payload = self._call(self.production, "GET", "/artifacts", params=params)
        fingerprint = (run_id, stage or "", *sorted(a["artifact_id"] for a in payload.get("artifacts") or []))
        if only_if_changed and fingerprint == self._artifact_fingerprint:
            return
        per_stage = ROWS_ONE_STAGE if stage else ROWS_PER_STAGE
        sections = [stage_section(s, self.settings.home, max_items=per_stage) for s in payload.get("stages") or []]
        total = len(payload.get("artifacts") or [])
        with self._ui:
            self.last_artifacts = payload
            self._artifact_fingerprint = fingerprint
            self.artifacts_summary.value = (
                f"<b>{total}</b> artifact(s) of run <code>{html.escape(run_id)}</code>"
                f"{' in stage ' + html.escape(stage) if stage else ''}: "
                + html.escape(", ".join(f"{s['stage']} ({s['count']})" for s in payload.get("stages") or []))
                if total else f"No artifacts for run <code>{html.escape(run_id)}</code>"
                              f"{' in stage ' + html.escape(stage) if stage else ''} yet.")
            self.artifacts_view.children = sections

    # -- final deliverable -----------------------------------------------------------------------

    def show_final(self) -> Future[None] | None:
        """Fetch ``video_final`` from /artifacts (stage finalize) and show it; if absent, say why."""
        action = "Show final video"
        if self.run_id is None:
            self._refuse(action, "no run yet: run production first")
            return None
        run_id = self.run_id
        return self._submit(action, lambda: self._fetch_final(run_id))

    def _fetch_final(self, run_id: str) -> None:
        payload = self._call(self.production, "GET", "/artifacts", params={"run_id": run_id, "stage": "finalize"})
        entry = next((a for s in payload.get("stages") or [] for a in s.get("artifacts") or []
                      if a.get("artifact_type") == "video_final"), None)
        if entry is None:
            self._show_missing_final(run_id)
            return
        data = read_artifact_bytes(entry, self.settings.home, MAX_PREVIEW_BYTES["video"])
        path = Path(entry["local_path"]).resolve()
        fmt = {"video/mp4": "mp4", "video/webm": "webm"}.get(entry.get("media_type", ""), "mp4")
        video = widgets.Video(value=data, format=fmt, width=640, autoplay=False, loop=False, controls=True)
        facts = [f"{entry.get('duration_s') or 0:.2f} s" if entry.get("duration_s") else None,
                 f"{entry['width']}×{entry['height']}" if entry.get("width") else None,
                 f"{entry.get('size_bytes', len(data)) / 1e6:.2f} MB", entry.get("checksum")]
        with self._ui:
            self.final_entry, self.final_path, self.final_missing_reason = entry, path, None
            self.final_info.value = (f"<b>Final video</b> of run <code>{html.escape(run_id)}</code> · "
                                     f"{html.escape(' · '.join(f for f in facts if f))}<br>"
                                     f"<code>{html.escape(entry['uri'])}</code><br><code>{html.escape(str(path))}</code>")
            self.final_video_box.children = (video,)
            self.download_link.value = self._link_html(path)
        self._sync_buttons()

    def _show_missing_final(self, run_id: str) -> None:
        status = self._call(self.production, "GET", "/status", params={"run_id": run_id})
        self._render_status(status)
        state = status.get("status")
        stage = (status.get("error") or {}).get("stage") or status.get("current_stage") or "?"
        if status.get("mode") == "dry":
            reason = "this was a dry run: it validates and estimates but renders nothing — choose Mode = run"
        elif state in ACTIVE_STATUSES:
            reason = f"the run is still {state} (stage {stage}); finalize has not run yet"
        elif state == "failed":
            reason = f"the run failed in {stage}: {(status.get('error') or {}).get('message', 'no message')}"
        elif state == "stopped":
            reason = f"the run was stopped in {stage} before finalize"
        elif state == "interrupted":
            reason = f"the run was interrupted in {stage} (its production_agent exited)"
        else:
            reason = ("the run succeeded but its video_final artifact is gone (removed by a retention prune?)")
        with self._ui:
            self.final_entry = self.final_path = None
            self.final_missing_reason = reason
            self.final_video_box.children = ()
            self.download_link.value = ""
            offer = "" if state in ACTIVE_STATUSES or status.get("mode") == "dry" else \
                ' Press <b>Resume from "finalize"</b> to produce it (earlier steps come from the cache).'
            self.final_info.value = (f"<div style='color:#b91c1c'><b>No final video for run "
                                     f"<code>{html.escape(run_id)}</code></b>: {html.escape(reason)}.{offer}</div>")
        self._sync_buttons()

    @staticmethod
    def _link_html(path: Path) -> str:
        try:
            relative = path.relative_to(Path.cwd().resolve())
        except ValueError:
            return (f"<small>The film is outside the notebook folder ({html.escape(str(path))}); "
                    f"“Copy next to notebook” puts a copy you can download here.</small>")
        from IPython.display import FileLink

        return f"Download: {FileLink(str(relative))._repr_html_()}"

    def download_final(self) -> Path | None:
        """Colab: google.colab.files.download; elsewhere copy to ./sparkle_downloads and link the copy."""
        action = "Download"
        if self.final_path is None or self.run_id is None:
            self._refuse(action, "no final video shown yet: press “Show final video”")
            return None
        try:
            if in_colab():
                from google.colab import files  # type: ignore[import-not-found]  # Colab only

                files.download(str(self.final_path))
                return self.final_path
            target_dir = Path.cwd() / "sparkle_downloads"
            target_dir.mkdir(exist_ok=True)
            target = target_dir / f"{self.run_id}{self.final_path.suffix}"
            shutil.copyfile(self.final_path, target)
        except Exception as exc:  # noqa: BLE001 - OSError, Colab's own errors: shown with the action
            self._error(action, exc if isinstance(exc, SparkleError) else
                        SparkleError(f"{type(exc).__name__}: {exc}", code="download_failed"))
            return None
        with self._ui:
            self.download_link.value = self._link_html(target.resolve())
        self._info(action, f"copied to {target}")
        return target

    # ================================================================== headless helpers

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Block until every submitted action has finished (PanelActionError after ``timeout``)."""
        with self._ui:
            pending = list(self._futures)
        # Work queued by the poller (e.g. the auto final fetch) finishes before this marker.
        pending.append(self._worker.submit(lambda: None))
        _done, not_done = wait_futures(pending, timeout=timeout)
        if not_done:
            raise PanelActionError(f"panel still busy with {self._busy or 'queued work'} after {timeout:.0f} s",
                                   code="panel_timeout")

    def wait_for_status(self, statuses: Iterable[str], timeout: float = 300.0) -> dict[str, Any]:
        """Block until the current run's status is one of ``statuses`` (polls itself when the poller is off)."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            if self.status in wanted and self.run_status is not None:
                return self.run_status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PanelActionError(f"run {self.run_id} did not reach {sorted(wanted)} within {timeout:.0f} s "
                                       f"(last: {self.status}, stage {(self.run_status or {}).get('current_stage')})",
                                       code="panel_timeout")
            if self.polling:
                with self._changed:
                    self._changed.wait(min(remaining, 0.5))
            else:
                self.refresh_status()
                time.sleep(min(remaining, MIN_POLL_INTERVAL_S))

    def close(self) -> None:
        """Stop polling and the worker, close the HTTP clients."""
        with self._ui:
            self._closed = True
        self.stop_polling()
        self._worker.close()
        self._worker.thread.join(timeout=30)
        self.script.close()
        self.production.close()


def create_control_panel(settings: Settings | None = None, **options: Any) -> ControlPanel:
    """The quickstart: a panel on the current settings (SPARKLE_HOME / SPARKLE_PROFILE)."""
    return ControlPanel(settings, **options)
