"""The keyframe gallery of a run waiting at a review gate: re-roll or edit each keyframe, then approve.

One card per item of the gate (``RunStatus.review``): the picture it rendered,
its seed, its prompt in an editable box, a *Re-roll* button (a new seed) and an
*Edit* button (sends the box's prompt: a new plan revision). *Approve* lets the
run go on. Every button is ``POST /runs/{run_id}/review`` through
:class:`ProductionClient`; the answer (or the error, with its field) is shown
under the cards. The production service answers as soon as the run is back on
its way; :meth:`ReviewGallery.wait_for_gate` (headless use) waits for the next
stop and redraws.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.agents.production_models import ReviewItem, RunStatus
from sparkle_motion.errors import SparkleError
from sparkle_motion.notebook.previews import preview_widget

__all__ = ["ReviewGallery"]

STOPPED_AT = frozenset({"awaiting_review", "succeeded", "failed", "stopped", "interrupted"})


class ReviewGallery:
    """Cards for the items a run waits on; display ``gallery.widget``."""

    def __init__(self, client: ProductionClient, run_id: str, root: Path,
                 on_decided: Callable[[RunStatus], None] | None = None) -> None:
        self.client = client
        self.on_decided = on_decided   # e.g. the control panel starts polling the run again
        self.run_id = run_id
        self.root = Path(root)
        self.status: RunStatus | None = None
        self.header = widgets.HTML("")
        self.cards = widgets.GridBox(layout=widgets.Layout(grid_template_columns="repeat(auto-fill, 260px)"))
        self.approve_button = widgets.Button(description="Approve", button_style="success", icon="check")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.message = widgets.HTML("")
        self.approve_button.on_click(lambda _b: self.approve())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.reroll_buttons: dict[str, widgets.Button] = {}
        self.edit_buttons: dict[str, widgets.Button] = {}
        self.prompts: dict[str, widgets.Textarea] = {}
        self.widget = widgets.VBox([self.header, self.cards, widgets.HBox([self.approve_button, self.refresh_button]),
                                    self.message])

    # -- drawing -------------------------------------------------------------------------

    def refresh(self) -> RunStatus | None:
        try:
            status = self.client.status(self.run_id)
        except SparkleError as exc:
            self._show_error(exc)
            return None
        self.show(status)
        return status

    def show(self, status: RunStatus) -> None:
        self.status = status
        self.run_id = status.run_id
        view = status.review
        waiting = status.status == "awaiting_review" and view is not None
        self.approve_button.disabled = not waiting
        if not waiting:
            self.header.value = f"<b>{html.escape(status.run_id)}</b> is {html.escape(status.status)}: no gate to review"
            self.cards.children = []
            return
        assert view is not None
        self.header.value = (f"<b>{html.escape(status.run_id)}</b> awaits review at gate <b>{view.gate}</b> "
                             f"(after {view.stage}; plan revision {view.plan_revision})")
        entries = {e.get("artifact_id"): e for e in self.client.artifacts(status.run_id).artifacts}
        self.reroll_buttons, self.edit_buttons, self.prompts = {}, {}, {}
        self.cards.children = [self._card(number, item, entries.get(item.artifact_id))
                               for number, item in enumerate(view.items, start=1)]

    def _card(self, number: int, item: ReviewItem, entry: dict[str, Any] | None) -> widgets.Widget:
        picture: widgets.Widget = widgets.HTML("<i>not rendered yet</i>")
        if entry is not None:
            try:
                picture = preview_widget(entry, self.root) or picture
            except SparkleError as exc:
                picture = widgets.HTML(f"<span style='color:#b45309'>no preview: {html.escape(exc.message)}</span>")
        prompt = widgets.Textarea(value=item.prompt or "", layout=widgets.Layout(width="250px", height="5em"))
        reroll = widgets.Button(description="Re-roll", icon="random", tooltip=f"{item.item} with a new seed")
        edit = widgets.Button(description="Edit", icon="pencil", tooltip=f"{item.item} with the prompt above")
        reroll.on_click(self._on(lambda: self.reroll(item.item)))
        edit.on_click(self._on(lambda: self.edit(item.item, prompt.value)))
        self.reroll_buttons[item.item], self.edit_buttons[item.item], self.prompts[item.item] = reroll, edit, prompt
        label = widgets.HTML(f"<b>#{number} {html.escape(item.item)}</b> · seed {item.seed if item.seed is not None else '-'}")
        return widgets.VBox([label, picture, prompt, widgets.HBox([reroll, edit])],
                            layout=widgets.Layout(border="1px solid #ddd", padding="4px", margin="2px"))

    @staticmethod
    def _on(action: Callable[[], Any]) -> Callable[[widgets.Button], None]:
        return lambda _button: action()

    # -- decisions ----------------------------------------------------------------------

    def reroll(self, item: str, seed: int | None = None) -> RunStatus | None:
        return self._decide(regenerate=[{"item": item, **({} if seed is None else {"seed": seed})}])

    def edit(self, item: str, prompt: str) -> RunStatus | None:
        return self._decide(regenerate=[{"item": item, "prompt": prompt}])

    def approve(self) -> RunStatus | None:
        return self._decide(approve=True)

    def _decide(self, **body: Any) -> RunStatus | None:
        try:
            status = self.client.review(self.run_id, **body)
        except SparkleError as exc:
            self._show_error(exc)
            return None
        what = "approved" if body.get("approve") else "regenerating " + ", ".join(i["item"] for i in body["regenerate"])
        self.message.value = f"{html.escape(what)}: run {html.escape(status.run_id)} is {html.escape(status.status)}"
        self.show(status)
        if self.on_decided is not None:
            self.on_decided(status)
        return status

    def wait_for_gate(self, timeout: float = 600.0) -> RunStatus:
        """Block until the run stops again (at a gate or its end) and redraw; for headless use."""
        status = self.client.wait_for_status(self.run_id, STOPPED_AT, timeout=timeout)
        self.show(status)
        return status

    def _show_error(self, exc: SparkleError) -> None:
        remote = getattr(exc, "remote_error", None) or {}
        field = remote.get("field") or exc.field
        text = remote.get("message") or exc.message
        self.message.value = (f"<span style='color:#b91c1c'>{html.escape(str(field) + ': ' if field else '')}"
                              f"{html.escape(text)}</span>")
