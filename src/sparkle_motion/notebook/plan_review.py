"""Plan review: the shots, keyframe prompts and dialogue timeline of a MoviePlan as editable widgets.

Every edit lands in a draft (a plain dict, the plan's JSON) and is validated at
once with :func:`sparkle_motion.plan.plan_violations` — the same validators
production_agent runs — so the panel can refuse production while any violation
stands and show each one with its JSON path. Fields are addressed by that same
path (``shots[0].duration_sec``), which is how a headless notebook edits them.
"""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from sparkle_motion.notebook.cast_upload import cast_rows
from sparkle_motion.plan import MAX_PLAN_FILE_BYTES, MoviePlan, format_path, plan_violations, validate_plan
from sparkle_motion.plan.policy import plan_policy_violations

__all__ = ["PlanReview"]

PathParts = tuple[str | int, ...]
_ERROR_BORDER = "2px solid #b91c1c"
_WIDE = widgets.Layout(width="98%")


def _set_in(data: Any, path: PathParts, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _get_in(data: Any, path: PathParts) -> Any:
    """The value at ``path``; None when the last key is absent (an optional field left out)."""
    for part in path[:-1]:
        data = data[part]
    return data.get(path[-1]) if isinstance(data, dict) else data[path[-1]]


class PlanReview:
    """Editable view of one plan; ``on_change(review)`` runs after every validation."""

    def __init__(self, on_change: Callable[[PlanReview], None] | None = None,
                 store_factory: Callable[[], Any] | None = None) -> None:
        self._on_change = on_change
        self.store_factory = store_factory  # the ArtifactStore the Cast tab uploads portraits to (None: no upload)
        self.source: str | None = None
        self.original: dict[str, Any] | None = None
        self.draft: dict[str, Any] | None = None
        self.plan: MoviePlan | None = None
        self.violations: list[dict[str, str]] = []
        self.fields: dict[str, widgets.ValueWidget] = {}
        self._rebuilding = False

        self.summary = widgets.HTML("<i>No plan loaded: generate one or load a plan JSON.</i>")
        self.violations_view = widgets.HTML("")
        self.shots_view = widgets.Accordion()
        self.keyframes_view = widgets.Accordion()
        self.dialogue_view = widgets.VBox()
        self.cast_view = widgets.VBox()
        self.json_editor = widgets.Textarea(placeholder="plan JSON", layout=widgets.Layout(width="98%", height="18em"),
                                            continuous_update=False)
        self.apply_json_button = widgets.Button(description="Apply JSON", icon="check", disabled=True,
                                                tooltip="Replace the draft with the JSON above and validate it")
        self.revert_button = widgets.Button(description="Revert edits", icon="undo", disabled=True)
        self.apply_json_button.on_click(lambda _b: self.apply_json(self.json_editor.value))
        self.revert_button.on_click(lambda _b: self.revert())
        json_box = widgets.VBox([self.json_editor, widgets.HBox([self.apply_json_button, self.revert_button])])
        self.sections = widgets.Tab(children=[self.shots_view, self.keyframes_view, self.dialogue_view, self.cast_view,
                                              json_box],
                                    titles=("Shots", "Keyframe prompts", "Dialogue timeline", "Cast", "Plan JSON"))
        self.widget = widgets.VBox([self.summary, self.violations_view, self.sections])

    # -- state ---------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.draft is not None

    @property
    def is_valid(self) -> bool:
        return self.draft is not None and not self.violations

    @property
    def edited(self) -> bool:
        return self.draft is not None and self.draft != self.original

    def load(self, data: dict[str, Any], source: str) -> None:
        """Show ``data`` (a plan's JSON, valid or not) and validate it."""
        self.source = source
        self.original = copy.deepcopy(data)
        self.draft = copy.deepcopy(data)
        self._rebuild()
        self.validate()

    def revert(self) -> None:
        if self.original is not None:
            self.load(self.original, self.source or "")

    def set_field(self, path: str, value: Any) -> None:
        """Edit one field by its JSON path, exactly as typing into its widget does."""
        try:
            widget = self.fields[path]
        except KeyError:
            raise KeyError(f"no editable field {path!r}; editable: {', '.join(self.fields)}") from None
        widget.value = value

    def apply_json(self, text: str) -> None:
        """Replace the draft with edited JSON (size-capped); a parse error is shown as a violation at '$'."""
        if self.draft is None:
            return
        if len(text.encode("utf-8")) > MAX_PLAN_FILE_BYTES:
            self._show_violations([{"path": "$", "rule": "file_too_large",
                                    "message": f"plan JSON is larger than the {MAX_PLAN_FILE_BYTES} byte limit"}])
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            self._show_violations([{"path": "$", "rule": "invalid_json",
                                    "message": f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"}])
            return
        if not isinstance(data, dict):
            self._show_violations([{"path": "$", "rule": "model_type",
                                    "message": f"must be a JSON object holding a MoviePlan (got {type(data).__name__})"}])
            return
        self.draft = data
        self._rebuild()
        self.validate()

    def validate(self) -> list[dict[str, str]]:
        """Run the MoviePlan validators on the draft; updates summary, errors and field borders."""
        if self.draft is None:
            return []
        violations = plan_violations(self.draft)
        self.plan = validate_plan(self.draft) if not violations else None
        if self.plan is not None:   # the content policy plan intake applies (sparkle_motion.plan.policy)
            violations = plan_policy_violations(self.plan)
            self.plan = None if violations else self.plan
        self._show_violations(violations)
        return violations

    # -- rendering ---------------------------------------------------------------------------

    def _show_violations(self, violations: list[dict[str, str]]) -> None:
        self.violations = violations
        if violations:
            items = "".join(f"<li><code>{html.escape(v['path'])}</code>: {html.escape(v['message'])}</li>"
                            for v in violations)
            self.violations_view.value = (f"<div style='color:#b91c1c'><b>{len(violations)} problem(s) — fix them "
                                          f"before production:</b><ul>{items}</ul></div>")
        else:
            note = " (edited: the edited plan is sent inline)" if self.edited else ""
            self.violations_view.value = f"<span style='color:#15803d'>✔ plan is valid{note}</span>"
        bad = [v["path"] for v in violations]
        for path, widget in self.fields.items():
            # Outline the field itself, anything below it, and the fields of an entry a rule names
            # as a whole (e.g. ``dialogue_timeline[4]`` for a timeline that ends at the wrong time).
            container = path.rsplit(".", 1)[0]
            hit = any(b in (path, container) or b.startswith((path + ".", path + "[")) for b in bad)
            widget.layout.border = _ERROR_BORDER if hit else ""
        self.summary.value = self._summary_html()
        self.revert_button.disabled = not self.edited
        self.apply_json_button.disabled = self.draft is None
        if not self._rebuilding and self.draft is not None:
            self._rebuilding = True
            try:
                self.json_editor.value = json.dumps(self.draft, indent=2, ensure_ascii=False)
            finally:
                self._rebuilding = False
        if self._on_change is not None:
            self._on_change(self)

    def _summary_html(self) -> str:
        data = self.draft or {}
        if self.plan is not None:
            plan = self.plan
            facts = [("plan id", plan.plan_id), ("title", plan.title), ("shots", len(plan.shots)),
                     ("base images", len(plan.base_images)), ("dialogue lines", len(plan.dialogue_lines)),
                     ("characters", ", ".join(c.name for c in plan.characters) or "—"),
                     ("runtime", f"{plan.runtime_s:.2f} s")]
        else:
            lines = [e for e in data.get("dialogue_timeline") or [] if isinstance(e, dict) and e.get("type") == "dialogue"]
            facts = [("plan id", (data.get("metadata") or {}).get("plan_id") or "— (invalid plan)"),
                     ("title", data.get("title", "—")), ("shots", len(data.get("shots") or [])),
                     ("base images", len(data.get("base_images") or [])), ("dialogue lines", len(lines))]
        cells = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
        return f"<table>{cells}</table><small>source: {html.escape(self.source or '—')}</small>"

    def _field(self, widget: widgets.ValueWidget, path: PathParts) -> widgets.ValueWidget:
        key = format_path(list(path))
        self.fields[key] = widget

        def changed(change: dict[str, Any]) -> None:
            if self._rebuilding or self.draft is None:
                return
            value = change["new"]
            if isinstance(value, str) and value == "" and _get_in(self.draft, path) is None:
                return  # an optional text left empty stays absent
            _set_in(self.draft, path, value)
            self.validate()

        widget.observe(changed, names="value")
        return widget

    def _text(self, path: PathParts, label: str, *, area: bool = False) -> widgets.ValueWidget:
        value = _get_in(self.draft, path)
        cls = widgets.Textarea if area else widgets.Text
        return self._field(cls(value="" if value is None else str(value), description=label, layout=_WIDE,
                               continuous_update=False, style={"description_width": "9em"}), path)

    def _number(self, path: PathParts, label: str) -> widgets.ValueWidget:
        value = _get_in(self.draft, path)
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
        return self._field(widgets.FloatText(value=number, description=label, step=0.1, continuous_update=False,
                                             style={"description_width": "9em"}), path)

    def _rebuild(self) -> None:
        """Recreate the field widgets for the draft's structure (after load or a JSON edit)."""
        self._rebuilding = True
        try:
            self.fields = {}
            draft = self.draft or {}
            self.shots_view.children = [self._shot_box(i, shot) for i, shot in enumerate(draft.get("shots") or [])
                                        if isinstance(shot, dict)]
            self.shots_view.titles = tuple(
                f"{s.get('id', i)} · {s.get('duration_sec', '?')} s" for i, s in enumerate(draft.get("shots") or [])
                if isinstance(s, dict))
            images = [(i, b) for i, b in enumerate(draft.get("base_images") or []) if isinstance(b, dict)]
            self.keyframes_view.children = [self._keyframe_box(i) for i, _ in images]
            self.keyframes_view.titles = tuple(str(b.get("id", i)) for i, b in images)
            self.dialogue_view.children = self._dialogue_rows(draft)
            self.cast_view.children = cast_rows(self, self.store_factory)
        finally:
            self._rebuilding = False

    def _shot_box(self, index: int, shot: dict[str, Any]) -> widgets.Widget:
        base = ("shots", index)
        keyframes = widgets.HTML(f"<small>from keyframe <code>{html.escape(str(shot.get('start_base_image_id')))}</code>"
                                 f" to <code>{html.escape(str(shot.get('end_base_image_id')))}</code></small>")
        children = [keyframes]
        if "duration_sec" in shot:
            children.append(self._number((*base, "duration_sec"), "duration (s)"))
        for key, label, area in (("setting", "setting", False), ("visual_description", "visual", True),
                                 ("motion_prompt", "motion", True)):
            if key in shot:
                children.append(self._text((*base, key), label, area=area))
        if "is_talking_closeup" in shot:
            closeup = widgets.Checkbox(value=bool(shot["is_talking_closeup"]), description="talking close-up")
            children.append(self._field(closeup, (*base, "is_talking_closeup")))
        return widgets.VBox(children)

    def _keyframe_box(self, index: int) -> widgets.Widget:
        base = ("base_images", index)
        image = self.draft["base_images"][index]  # type: ignore[index]
        children = []
        if "prompt" in image:
            children.append(self._text((*base, "prompt"), "prompt", area=True))
        children.append(self._text((*base, "negative_prompt"), "negative prompt"))
        return widgets.VBox(children)

    def _dialogue_rows(self, draft: dict[str, Any]) -> list[widgets.Widget]:
        characters = [c for c in draft.get("characters") or [] if isinstance(c, dict) and "id" in c]
        options = [(f"{c.get('name', c['id'])} ({c['id']})", c["id"]) for c in characters]
        shots = [s for s in draft.get("shots") or [] if isinstance(s, dict)]
        starts, t = [], 0.0
        for shot in shots:
            duration = shot.get("duration_sec")
            starts.append(f"{shot.get('id')}: {t:.2f}–{t + duration:.2f} s" if isinstance(duration, (int, float))
                          else f"{shot.get('id')}: ?")
            t += duration if isinstance(duration, (int, float)) else 0.0
        rows: list[widgets.Widget] = [widgets.HTML(f"<small>shots — {html.escape('; '.join(starts))}</small>")]
        for i, entry in enumerate(draft.get("dialogue_timeline") or []):
            if not isinstance(entry, dict):
                continue
            base = ("dialogue_timeline", i)
            cells: list[widgets.Widget] = [widgets.HTML(f"<b>{i}</b> {html.escape(str(entry.get('type', '?')))}",
                                                        layout=widgets.Layout(width="7em"))]
            for key, label in (("start_time_sec", "start"), ("duration_sec", "length")):
                if key in entry:
                    number = self._number((*base, key), label)
                    number.layout.width = "13em"
                    number.style.description_width = "4em"
                    cells.append(number)
            if entry.get("type") == "dialogue":
                current = entry.get("character_id")
                choices = options + ([] if any(v == current for _, v in options) else [(f"? {current}", current)])
                speaker = widgets.Dropdown(options=choices, value=current, layout=widgets.Layout(width="14em"))
                cells.append(self._field(speaker, (*base, "character_id")))
                text = self._text((*base, "text"), "")
                text.layout = widgets.Layout(width="40%")
                cells.append(text)
            rows.append(widgets.HBox(cells))
        return rows
