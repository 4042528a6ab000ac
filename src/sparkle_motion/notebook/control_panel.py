"""The notebook control panel: plan, review, produce, watch and download a film with ipywidgets.

Every button callback is Python in the kernel and talks HTTP to script_agent
(``ToolClient``) and production_agent (``ProductionClient``). Nothing a callback
does blocks the kernel: actions run in order on one daemon worker thread, and
``/status`` is polled by a cancellable daemon thread whose interval the user can
change while it runs (:mod:`~sparkle_motion.notebook.panel_threads`). Widget
updates from those threads are serialised by one lock; ipykernel sends comm
messages from any thread under the last cell's parent header.

Buttons follow the run state (Pause only while running, Resume only while
paused, Run Production only with a valid plan and no active run). ``click()``
on a disabled button — which ipywidgets does not prevent — is refused with the
reason shown in the panel. Every endpoint error is shown with the endpoint, the
HTTP status, the remote error code, message, field and details
(:mod:`~sparkle_motion.notebook.panel_messages`).

The widgets are built in :mod:`~sparkle_motion.notebook.panel_widgets`, the run
state, buttons, messages and action queue are :mod:`~sparkle_motion.notebook.panel_core`,
the HTML about a run is :mod:`~sparkle_motion.notebook.panel_views`; this module
holds what the actions do: plan, produce, steer, poll, show artifacts and the film.

Headless use (CI, papermill): click buttons, then ``wait_idle()``,
``wait_for_status()`` and ``raise_for_error()`` so that a cell fails when the
panel shows an error.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import ipywidgets as widgets

from sparkle_motion.agents.production_client import ACTIVE_STATUSES, ENDED_STATUSES, ProductionClient
from sparkle_motion.agents.production_models import STAGES, ProductionAccepted, RunStatus
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.models import URI_PREFIX
from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import InvalidInputError, PlanValidationError, SparkleError, ToolCallError
from sparkle_motion.notebook import panel_views as views
from sparkle_motion.notebook.panel_core import PanelCore
from sparkle_motion.notebook.panel_messages import PanelActionError, PanelMessage
from sparkle_motion.notebook.panel_threads import Poller
from sparkle_motion.notebook.panel_widgets import MAX_POLL_INTERVAL_S, MIN_POLL_INTERVAL_S
from sparkle_motion.notebook.preflight import in_colab
from sparkle_motion.notebook.previews import MAX_PREVIEW_BYTES, read_artifact_bytes, stage_section
from sparkle_motion.plan import load_plan_file, validate_plan
from sparkle_motion.plan.validation import read_plan_json

__all__ = ["ACTIVE_STATUSES", "FINAL_STATUSES", "ControlPanel", "PanelActionError", "PanelMessage",
           "create_control_panel"]

FINAL_STATUSES = ENDED_STATUSES  # succeeded, failed, stopped, interrupted
# Rows per stage in the artifacts viewer: all stages at once stay light; one stage shows more.
ROWS_PER_STAGE, ROWS_ONE_STAGE = 6, 48
# How long a resume waits for a just-stopped run to finish the step it was in.
RUN_WIND_DOWN_S = 60.0
# Rule names load_plan_file gives problems with the file itself (not with the plan in it).
_FILE_RULES = frozenset({"file_unreadable", "file_too_large", "invalid_json"})


class ControlPanel(PanelCore):
    """Widgets + callbacks driving one mesh. Display it as the last expression of a cell."""

    def __init__(self, settings: Settings | None = None, *, poll_interval_s: float = 2.0,
                 script_timeout_s: float = 300.0, http_timeout_s: float = 30.0, auto_poll: bool = True,
                 auto_fetch_artifacts: bool = False, retries: int = 2) -> None:
        from sparkle_motion.services import ToolClient

        settings = settings or get_settings()
        self.script = ToolClient("script_agent", settings, timeout=script_timeout_s, retries=retries)
        self.production = ProductionClient(settings, timeout=http_timeout_s, retries=retries)
        self.auto_poll = auto_poll
        self._poller = Poller(self._poll_tick, self._poll_wait_s, on_crash=lambda exc: self._error("Poll status", exc),
                              on_exit=self._poll_ended, name="sparkle-panel-poll")
        self._last_poll_error: str | None = None
        self._artifact_fingerprint: tuple[str, ...] | None = None
        self._qa_skipped_run: str | None = None
        self._toggle_guard = False
        super().__init__(settings, poll_interval_s=poll_interval_s, auto_fetch=auto_fetch_artifacts)
        self._wire()
        self._sync_buttons()

    def _wire(self) -> None:
        """Connect each button to its action; inputs that change what is allowed re-check the buttons."""
        def clicked(action: Callable[[], Any]) -> Callable[[widgets.Button], None]:
            return lambda _button: action()

        self.clear_messages_button.on_click(clicked(self.clear_messages))
        self.generate_button.on_click(clicked(self.generate_plan))
        self.load_plan_button.on_click(clicked(self.load_plan))
        self.run_button.on_click(clicked(self.run_production))
        self.pause_button.on_click(clicked(lambda: self.control("pause")))
        self.resume_button.on_click(clicked(lambda: self.control("resume")))
        self.stop_button.on_click(clicked(lambda: self.control("stop")))
        self.retry_button.on_click(clicked(lambda: self.resume_from(self.retry_stage.value)))
        self.refresh_artifacts_button.on_click(clicked(self.refresh_artifacts))
        self.final_button.on_click(clicked(self.show_final))
        self.resume_finalize_button.on_click(clicked(lambda: self.resume_from("finalize")))
        self.download_button.on_click(clicked(self.download_final))
        for field in (self.plan_uri, self.send_inline, self.run_id_filter):
            field.observe(lambda _change: self._sync_buttons(), names="value")
        self.poll_toggle.observe(self._on_poll_toggle, names="value")

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
            try:
                answer = self.script.invoke(body)
            except ToolCallError as exc:
                exc.context["endpoint"] = f"POST {self.script.base_url}/invoke"
                raise
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
            data = read_plan_json(path)
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
        return self._submit(action, lambda: self._start_tracking(action, self.production.submit(**body)))

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
        run_id, qa_mode = self.run_id, self.qa_mode.value

        def work() -> None:
            # A run that was just stopped finishes the step in flight before its thread
            # exits; until then production_agent answers 409 run_active. Wait that out.
            deadline = time.monotonic() + RUN_WIND_DOWN_S
            announced = False
            while True:
                try:
                    accepted = self.production.start(run_id=run_id, resume_from=stage, qa_mode=qa_mode)
                    break
                except ToolCallError as exc:
                    if exc.remote_error.get("code") != "run_active" or time.monotonic() >= deadline:
                        raise
                    if not announced:
                        self._info(action, f"run {run_id} is finishing its current step; retrying")
                        announced = True
                    time.sleep(0.25)
            self._start_tracking(action, accepted)

        return self._submit(action, work)

    def _start_tracking(self, action: str, accepted: ProductionAccepted) -> None:
        run_id = accepted.run_id
        with self._ui:
            self.last_accepted = accepted.model_dump(mode="json")
            self.run_id = run_id
            self.run_state = None
            self.final_entry = self.final_path = self.final_missing_reason = None
            self.final_info.value = "<i>No final video yet.</i>"
            self.final_video_box.children = ()
            self.download_link.value = ""
            self.run_id_filter.value = run_id
            self._artifact_fingerprint = None
            self._set_qa_badge(run_id, accepted.qa_mode)
        if accepted.mode == "dry":
            graph = accepted.invocation_graph or []
            estimate = accepted.resource_estimate or {}
            self._info(action, f"dry run {run_id}: {len(graph)} invocations planned; estimate "
                               f"{json.dumps(estimate, sort_keys=True)[:300]}")
        else:
            self._info(action, f"run {run_id} accepted ({accepted.status}, qa={accepted.qa_mode}"
                               f"{', resume_from=' + accepted.resume_from if accepted.resume_from else ''})")
        self._render_status(self.production.status(run_id))
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
            status = self.production.control(action, run_id)  # type: ignore[arg-type]  # checked above
            self._info(label, f"run {run_id} is now {status.status}")
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
            status = self.production.status(self.run_id)
        except SparkleError as exc:
            self._error("Status", exc)
            return None
        self._render_status(status)
        return status.model_dump(mode="json")

    def _render_status(self, status: RunStatus) -> None:
        with self._ui:
            if status.run_id != self.run_id:
                return  # an answer about a run the panel has since left
            previous = self.status
            self.run_state = status
            state = status.status
            self.progress.value = float(status.progress or 0.0)
            self.progress.bar_style = {"succeeded": "success", "failed": "danger", "stopped": "danger",
                                       "interrupted": "danger", "paused": "warning"}.get(state, "info")
            self._set_qa_badge(status.run_id, status.qa_mode)
            self.status_view.value = views.status_html(status)
            self.alert.value = views.alert_html(status)
            self.alert.layout.display = "" if self.alert.value else "none"
            if self.alert.value and views.failed_stage(status) in STAGES:
                self.retry_stage.value = views.failed_stage(status)
            if state == "awaiting_review" and previous != "awaiting_review":
                self._show_review_gallery(status)
            if previous != "succeeded" and state == "succeeded" and status.mode == "run":
                # The deliverable is what the user waits for: fetch it as soon as the run ends.
                # Queued before waiters are woken, so wait_idle() after wait_for_status() covers it.
                run_id = status.run_id
                self._background("Show final video",
                                 lambda: self._fetch_final(run_id) if self.run_id == run_id else None)
        self._sync_buttons()

    def _show_review_gallery(self, status: RunStatus) -> None:
        """The run stopped at a review gate: its keyframe gallery (re-roll, edit, approve) under the status."""
        from sparkle_motion.notebook.review_gallery import ReviewGallery

        def decided(answer: RunStatus) -> None:
            self.run_id = answer.run_id          # a re-roll after the film is a new run
            self.start_polling()

        previous = getattr(self, "review_gallery", None)
        self.review_gallery = ReviewGallery(self.production, status.run_id, self.settings.home, on_decided=decided)
        self.review_gallery.show(status)
        kept = [w for w in self.status_section.children if previous is None or w is not previous.widget]
        self.status_section.children = (*kept, self.review_gallery.widget)

    def _set_qa_badge(self, run_id: str, qa_mode: str | None) -> None:
        # Persistent: a skip-QA run keeps its badge until a run with full QA becomes current.
        with self._ui:
            if qa_mode == "skip":
                self._qa_skipped_run = run_id
            elif qa_mode == "full":
                self._qa_skipped_run = None
            if self._qa_skipped_run:
                self.qa_badge.value = views.qa_badge_html(self._qa_skipped_run)
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
        return self._poller.running

    def start_polling(self) -> None:
        """Poll GET /status every ``poll_interval`` seconds on a daemon thread until the run ends or stop_polling()."""
        self._last_poll_error = None
        if self._poller.start(join_timeout=MAX_POLL_INTERVAL_S):
            self._set_toggle(True)

    def stop_polling(self, timeout: float = 10.0) -> None:
        self._poller.stop(timeout)
        self._set_toggle(False)

    def _poll_wait_s(self) -> float:
        return min(MAX_POLL_INTERVAL_S, max(MIN_POLL_INTERVAL_S, float(self.poll_interval.value)))

    def _poll_tick(self) -> bool:
        """One poll of the current run (and its artifacts when auto-fetch is on); True once the run has ended."""
        run_id = self.run_id
        if run_id is None:
            return False
        try:
            status = self.production.status(run_id)
            if self.auto_fetch.value:
                self._fetch_artifacts(run_id, self.stage_filter.value or None, only_if_changed=True)
        except SparkleError as exc:
            if str(exc) != self._last_poll_error:  # a service restart would otherwise flood the pane
                self._error("Poll status", exc)
                self._last_poll_error = str(exc)
            return False
        self._last_poll_error = None
        self._render_status(status)
        return status.status in FINAL_STATUSES and run_id == self.run_id

    def _poll_ended(self) -> None:
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
        view = self.production.artifacts(run_id, stage)
        fingerprint = (run_id, stage or "", *sorted(a["artifact_id"] for a in view.artifacts))
        if only_if_changed and fingerprint == self._artifact_fingerprint:
            return
        payload = view.model_dump(mode="json")
        per_stage = ROWS_ONE_STAGE if stage else ROWS_PER_STAGE
        sections = [stage_section(s, self.settings.home, max_items=per_stage) for s in payload["stages"]]
        summary = views.artifacts_summary_html(run_id, stage, len(view.artifacts),
                                               [(s.stage, s.count) for s in view.stages])
        with self._ui:
            self.last_artifacts = payload
            self._artifact_fingerprint = fingerprint
            self.artifacts_summary.value = summary
            self.artifacts_view.children = sections

    # -- final deliverable -----------------------------------------------------------------------

    def show_final(self) -> Future[None] | None:
        """Fetch the final film from /artifacts (stage finalize) and show it; if absent, say why."""
        action = "Show final video"
        if self.run_id is None:
            self._refuse(action, "no run yet: run production first")
            return None
        run_id = self.run_id
        return self._submit(action, lambda: self._fetch_final(run_id))

    def _fetch_final(self, run_id: str) -> None:
        entry = self.production.final_film(run_id)
        if entry is None:
            self._show_missing_final(run_id)
            return
        data = read_artifact_bytes(entry, self.settings.home, MAX_PREVIEW_BYTES["video"])
        path = Path(entry["local_path"]).resolve()
        fmt = {"video/mp4": "mp4", "video/webm": "webm"}.get(entry.get("media_type", ""), "mp4")
        video = widgets.Video(value=data, format=fmt, width=640, autoplay=False, loop=False, controls=True)
        with self._ui:
            self.final_entry, self.final_path, self.final_missing_reason = entry, path, None
            self.final_info.value = views.final_info_html(run_id, entry, path, len(data))
            self.final_video_box.children = (video,)
            self.download_link.value = views.link_html(path)
        self._sync_buttons()

    def _show_missing_final(self, run_id: str) -> None:
        status = self.production.status(run_id)
        self._render_status(status)
        reason = views.missing_final_reason(status)
        with self._ui:
            self.final_entry = self.final_path = None
            self.final_missing_reason = reason
            self.final_video_box.children = ()
            self.download_link.value = ""
            self.final_info.value = views.missing_final_html(status, reason)
        self._sync_buttons()

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
            self.download_link.value = views.link_html(target.resolve())
        self._info(action, f"copied to {target}")
        return target

    # ================================================================== headless helpers

    def wait_for_status(self, statuses: Iterable[str], timeout: float = 300.0) -> dict[str, Any]:
        """Block until the current run's status is one of ``statuses`` (polls itself when the poller is off);
        the run's status as JSON."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state
            if state is not None and state.status in wanted:
                return state.model_dump(mode="json")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PanelActionError(f"run {self.run_id} did not reach {sorted(wanted)} within {timeout:.0f} s "
                                       f"(last: {self.status}, stage {state.current_stage if state else None})",
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
