"""The control panel's core: its run state, which buttons that state allows, its messages, its action queue.

:class:`PanelCore` is what every panel action builds on: an action is queued on the
one worker thread (``_submit``: refused while another runs, shown as busy
meanwhile), reports through the message pane (``_info``, ``_error``,
``_refuse``), and the buttons are re-checked against the run state after every
change (``_sync_buttons``). What the actions do lives in
:mod:`~sparkle_motion.notebook.control_panel`.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

from sparkle_motion.agents.production_client import ACTIVE_STATUSES
from sparkle_motion.agents.production_models import RunStatus
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.models import URI_PREFIX
from sparkle_motion.config import Settings
from sparkle_motion.logs import get_logger
from sparkle_motion.notebook.panel_messages import PanelActionError, PanelMessage, message_for, messages_html
from sparkle_motion.notebook.panel_threads import ActionWorker
from sparkle_motion.notebook.panel_widgets import PanelWidgets
from sparkle_motion.notebook.plan_review import PlanReview

__all__ = ["PanelCore"]

log = get_logger("sparkle_motion.notebook")


class PanelCore(PanelWidgets):
    """The panel's widgets plus its state, messages and action queue (no HTTP of its own)."""

    def __init__(self, settings: Settings, *, poll_interval_s: float, auto_fetch: bool) -> None:
        self.settings = settings
        self.messages: list[PanelMessage] = []
        self.run_id: str | None = None
        self.run_state: RunStatus | None = None
        self.last_accepted: dict[str, Any] | None = None
        self.last_artifacts: dict[str, Any] | None = None
        self.final_entry: dict[str, Any] | None = None
        self.final_path: Path | None = None
        self.final_missing_reason: str | None = None
        self._busy: str | None = None
        self._futures: list[Future[None]] = []
        self._ui = threading.RLock()  # serialises widget updates from the worker and poller threads
        self._changed = threading.Condition(self._ui)
        self._worker = ActionWorker("sparkle-panel-actions")
        self._closed = False
        super().__init__(PlanReview(on_change=lambda _r: self._sync_buttons(),
                                    store_factory=lambda: ArtifactStore(settings.home)),
                         poll_interval_s=poll_interval_s,
                         auto_fetch=auto_fetch)

    # ================================================================== state + buttons

    @property
    def run_status(self) -> dict[str, Any] | None:
        """The current run's last GET /status answer as JSON (``run_state`` is the same as a RunStatus)."""
        return None if self.run_state is None else self.run_state.model_dump(mode="json")

    @property
    def status(self) -> str | None:
        return None if self.run_state is None else self.run_state.status

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
            dry = self.run_state is not None and self.run_state.mode == "dry"
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
            self.messages_view.value = messages_html(self.messages)

    def _error(self, action: str, exc: BaseException) -> None:
        self._message(message_for(action, exc))

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

    # ================================================================== the action queue

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

        return self._queue(run)

    def _background(self, action: str, body: Callable[[], None]) -> Future[None]:
        """Queue work the panel starts by itself (no busy state); its errors are shown like any action's."""

        def run() -> None:
            try:
                body()
            except Exception as exc:  # noqa: BLE001 - shown in the panel, not lost in a future
                self._error(action, exc)

        return self._queue(run)

    def _queue(self, run: Callable[[], None]) -> Future[None]:
        future = self._worker.submit(run)
        with self._ui:
            self._futures = [f for f in self._futures if not f.done()] + [future]
        return future

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
