"""The control panel's widgets and their layout: five tabs (Plan, Review, Production, Artifacts, Final video).

Only construction lives here: which widget exists, its label and where it sits.
:class:`~sparkle_motion.notebook.control_panel.ControlPanel` inherits these
attributes (``panel.prompt``, ``panel.run_button``, ``panel.final_section`` …,
the notebook and its tests address them by name) and wires their callbacks.
Every action button starts disabled; the panel enables what the run state allows.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from sparkle_motion.agents.production_models import STAGES
from sparkle_motion.notebook.plan_review import PlanReview
from sparkle_motion.notebook.preflight import in_colab

__all__ = ["MAX_POLL_INTERVAL_S", "MIN_POLL_INTERVAL_S", "PanelWidgets"]

MIN_POLL_INTERVAL_S = 0.25
MAX_POLL_INTERVAL_S = 60.0


def _button(description: str, icon: str, tooltip: str, style: str = "") -> widgets.Button:
    return widgets.Button(description=description, icon=icon, tooltip=tooltip, button_style=style, disabled=True)


class PanelWidgets:
    """Every widget of the panel, grouped into sections; ``widget`` is the whole panel."""

    def __init__(self, review: PlanReview, *, poll_interval_s: float, auto_fetch: bool) -> None:
        label = {"description_width": "8em"}
        self.review = review
        self.messages_view = widgets.HTML("")
        self.clear_messages_button = widgets.Button(description="Clear messages", icon="eraser",
                                                    layout=widgets.Layout(width="auto"))
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
        self.plan_section = widgets.VBox([
            self.prompt, widgets.HBox([self.title, self.style]), widgets.HBox([self.shots, self.duration, self.seed]),
            self.generate_button, widgets.HBox([self.plan_uri, self.load_plan_button]), review.summary,
        ])
        self.review_section = review.widget

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
        self.poll_toggle = widgets.ToggleButton(value=False, description="Poll status", icon="refresh",
                                                tooltip="Poll GET /status in the background")
        self.poll_interval = widgets.BoundedFloatText(value=poll_interval_s, min=MIN_POLL_INTERVAL_S,
                                                      max=MAX_POLL_INTERVAL_S, step=0.5, description="Interval (s)",
                                                      style=label)
        self.auto_fetch = widgets.Checkbox(value=auto_fetch, description="Auto-fetch artifacts", indent=False)
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
