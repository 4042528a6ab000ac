"""POST /runs/{run_id}/review, and what /status shows of a run waiting at a gate.

The service side of review gates (``review_gates`` is the run's side). A
decision is written to the run's options in the registry, then the run is
submitted again, like a resume: it replays from the start through the step
cache and either passes the approved gate or stops at the same one again.

- approve: the waiting gate joins ``approved``;
- regenerate: each named item gets a new seed (the one given, or a random one
  when only the item is named) kept in ``overrides``, and/or an edited prompt,
  written into a new plan revision: a new plan artifact whose metadata names the
  previous one, validated by the service exactly like a submitted plan;
- a finished run is never changed: regenerating after it makes a new run of the
  (revised) plan with the overrides, which takes every untouched step from the cache.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from sparkle_motion.agents.contact_sheet import CONTACT_SHEET_ITEM
from sparkle_motion.agents.production_models import (
    STAGES,
    ProductionRequest,
    RegenerateItem,
    ReviewItem,
    ReviewRequest,
    ReviewView,
    RunStatus,
)
from sparkle_motion.agents.review_gates import GATE_STAGES, fresh_seed, review_state, with_review_state
from sparkle_motion.errors import ConflictError, InvalidInputError, PlanValidationError, SparkleError
from sparkle_motion.ids import new_id
from sparkle_motion.logs import get_logger
from sparkle_motion.plan import MoviePlan
from sparkle_motion.runs.models import RunRecord

if TYPE_CHECKING:
    from sparkle_motion.agents.production_service import ProductionService

__all__ = ["ReviewDesk"]

log = get_logger("sparkle_motion.review")

REVISION_TYPE = "movie_plan_revision"
#: how long a decision waits for the thread that just stopped at the gate to end
SETTLE_S = 30.0
#: the stages reviewable items belong to, in order; a gate offers the items at or before its own stage
ITEM_STAGE_ORDER = ("plan_intake", "cast", "base_images", "video_clips")


def _field(index: int, name: str) -> str:
    return f"regenerate[{index}].{name}"


class ReviewDesk:
    """Review decisions for one production service: one at a time (a lock), each continuing the run."""

    def __init__(self, service: ProductionService) -> None:
        self.service = service
        self._lock = threading.Lock()

    # -- what a reviewer sees -------------------------------------------------------

    def view(self, record: RunRecord) -> ReviewView | None:
        state = review_state(record.options)
        gate = state["waiting"]
        if record.status != "awaiting_review" or gate is None:
            return None
        stage = GATE_STAGES[gate]
        try:
            offered = self._reviewable(self._plan(record), gate)
        except SparkleError as exc:
            # /status must answer even when the plan artifact is gone (pruned): the gate, without its items.
            log.warning("review_view_without_plan", run_id=record.run_id, error=exc.to_dict())
            offered = {}
        latest = self._latest_outputs(record.run_id)
        items = []
        for item, (item_stage, prompt) in offered.items():
            step = latest.get((item_stage, item))
            output = (step.output or {}) if step else {}
            items.append(ReviewItem(item=item, stage=item_stage, artifact_id=step.artifact_ids[0] if step and
                                    step.artifact_ids else None, uri=output.get("uri"), prompt=prompt,
                                    seed=output.get("seed")))
        sheet = next((s for (st, it), s in sorted(latest.items(), key=lambda kv: kv[1].started_at, reverse=True)
                      if it == CONTACT_SHEET_ITEM and s.artifact_ids), None)
        return ReviewView(gate=gate, stage=stage, items=items, plan_revision=state["revision"],
                          contact_sheet_artifact_id=sheet.artifact_ids[0] if sheet else None)

    def _latest_outputs(self, run_id: str) -> dict[tuple[str, str | None], Any]:
        latest: dict[tuple[str, str | None], Any] = {}
        for step in self.service.registry.list_steps(run_id):
            if step.status in ("succeeded", "cached"):
                latest[(step.stage, step.item)] = step
        return latest

    @staticmethod
    def _items_of(plan: MoviePlan) -> dict[str, tuple[str, str]]:
        """Every item a reviewer may name: item → (its stage, its prompt); portraits once a cast stage exists."""
        items: dict[str, tuple[str, str]] = {f"cast_{c.id}": ("cast", c.description) for c in plan.characters
                                             if "cast" in STAGES}
        items.update({b.id: ("base_images", b.prompt) for b in plan.base_images})
        items.update({s.id: ("video_clips", s.visual_description) for s in plan.shots})
        return items

    def _reviewable(self, plan: MoviePlan, gate: str | None) -> dict[str, tuple[str, str]]:
        """The items a gate offers: all of them at the plan gate and after the run, else those rendered by now."""
        items = self._items_of(plan)
        if gate in (None, "plan"):
            return items
        limit = ITEM_STAGE_ORDER.index(GATE_STAGES[gate])
        return {k: v for k, v in items.items() if ITEM_STAGE_ORDER.index(v[0]) <= limit}

    def _plan(self, record: RunRecord) -> MoviePlan:
        return self.service.load_plan(ProductionRequest(run_id=record.run_id))

    # -- decisions --------------------------------------------------------------------

    def decide(self, run_id: str, request: ReviewRequest) -> RunStatus:
        with self._lock:
            record = self.service.registry.get_run(run_id)   # 404 for an unknown run
            if record.status == "succeeded" and request.regenerate:
                return self._regenerate_finished(record, request.regenerate)
            if record.status != "awaiting_review":
                raise ConflictError(f"run {run_id} is {record.status}, not awaiting review"
                                    + ("; regenerating is possible after it succeeded" if request.approve else ""),
                                    field="run_id", code="not_awaiting_review",
                                    context={"run_id": run_id, "status": record.status})
            self.service.settle(run_id, SETTLE_S)   # the thread that stopped at the gate is ending
            state = review_state(record.options)
            options = dict(record.options)
            if request.approve:
                state["approved"] = [*state["approved"], state["waiting"]]
                self.service.registry.log(run_id, "info", f"review: gate {state['waiting']} approved")
            else:
                plan_uri = self._apply(record, state, request.regenerate, self._reviewable(self._plan(record),
                                                                                           state["waiting"]))
                if plan_uri != record.plan_uri:
                    self.service.registry.update_run(run_id, plan_uri=plan_uri)
            state["waiting"] = None
            self.service.registry.update_run(run_id, options=with_review_state(options, state))
            self.service.submit(ProductionRequest(run_id=run_id, qa_mode=record.qa_mode,
                                                  resume_from=options.get("resume_from")))
            return self.service.status(run_id)

    def _regenerate_finished(self, record: RunRecord, items: list[RegenerateItem]) -> RunStatus:
        """After the film: a new run of the (revised) plan with the re-rolls; the cache supplies the rest."""
        state = review_state(record.options)
        state.update(gates=[], approved=[], waiting=None)
        offered = self._reviewable(self._plan(record), None)
        self._check_items(items, offered)   # before a run is made for them
        new_run = self.service.registry.create_run(run_id=new_id("run"), plan_id=record.plan_id,
                                                   plan_uri=record.plan_uri, mode="run", qa_mode=record.qa_mode,
                                                   options={"regenerated_from": record.run_id})
        new_run_id = new_run.run_id
        try:
            plan_uri = self._apply(new_run, state, items, offered, seeds_from=record.run_id)
        except InvalidInputError:
            self.service.registry.set_status(new_run_id, "failed", error={"code": "plan_invalid",
                                                                          "message": "the edited plan is invalid"})
            raise
        self.service.registry.update_run(new_run_id, plan_uri=plan_uri,
                                         options=with_review_state(new_run.options, state))
        self.service.registry.log(record.run_id, "info", f"review: regenerating in run {new_run_id}",
                                  items=[i.item for i in items])
        self.service.submit(ProductionRequest(run_id=new_run_id, qa_mode=record.qa_mode))
        return self.service.status(new_run_id)

    @staticmethod
    def _check_items(items: list[RegenerateItem], offered: dict[str, tuple[str, str]]) -> None:
        seen: set[str] = set()
        for index, entry in enumerate(items):
            if entry.item not in offered:
                raise InvalidInputError(f"no reviewable item {entry.item!r} here; items: {', '.join(offered)}",
                                        field=_field(index, "item"))
            if entry.item in seen:
                raise InvalidInputError(f"{entry.item!r} is named twice", field=_field(index, "item"))
            seen.add(entry.item)

    def _apply(self, record: RunRecord, state: dict[str, Any], items: list[RegenerateItem],
               offered: dict[str, tuple[str, str]], *, seeds_from: str | None = None) -> str | None:
        """Record seeds in ``state`` and prompts in a new plan revision; the plan URI the run continues with."""
        self._check_items(items, offered)
        latest = self._latest_outputs(seeds_from or record.run_id)
        overrides = {k: dict(v) for k, v in state["overrides"].items()}
        for entry in items:
            if entry.seed is not None or entry.prompt is None:
                stage = offered[entry.item][0]
                previous = (getattr(latest.get((stage, entry.item)), "output", None) or {}).get("seed")
                overrides.setdefault(entry.item, {})["seed"] = entry.seed if entry.seed is not None else \
                    fresh_seed(previous)
        state["overrides"] = overrides
        edits = [(index, entry) for index, entry in enumerate(items) if entry.prompt is not None]
        return self._revise_plan(record, state, edits, offered) if edits else record.plan_uri

    def _edited_plan(self, record: RunRecord, edits: list[tuple[int, RegenerateItem]],
                     offered: dict[str, tuple[str, str]]) -> MoviePlan:
        """The run's plan with the edited prompts, validated as any submitted plan is."""
        data = self._plan(record).model_dump(mode="json")
        where = {"cast": ("characters", "description"), "base_images": ("base_images", "prompt"),
                 "video_clips": ("shots", "visual_description")}
        for _, entry in edits:
            section, key = where[offered[entry.item][0]]
            for element in data[section]:
                if entry.item in (element["id"], f"cast_{element['id']}"):
                    element[key] = entry.prompt
        # The service's own intake: the plan validators (422 plan_invalid naming the field), the profile's
        # models, and whatever else it checks of a submitted plan.
        try:
            return self.service.load_plan(ProductionRequest(plan=data))
        except PlanValidationError as exc:
            # The violations name plan paths (details); the answer names the first as its field too.
            if exc.field is None and exc.details:
                exc.field = exc.details[0].get("path")
            raise

    def _revise_plan(self, record: RunRecord, state: dict[str, Any], edits: list[tuple[int, RegenerateItem]],
                     offered: dict[str, tuple[str, str]]) -> str:
        """Write the edited prompts into a new plan revision; its metadata names the revision before it."""
        plan = self._edited_plan(record, edits, offered)
        revision = state["revision"] + 1
        manifest = self.service.store.put_json(
            record.run_id, "plan_intake", REVISION_TYPE, plan.model_dump(mode="json"),
            metadata={"tool": "production_agent", "plan_id": plan.plan_id, "revision": revision,
                      "previous_uri": record.plan_uri, "edited": [e.item for _, e in edits]})
        history = state["revisions"] or ([record.plan_uri] if record.plan_uri else [])
        state.update(revision=revision, revisions=[*history, manifest.uri])
        self.service.registry.log(record.run_id, "info", f"review: plan revision {revision}",
                                  edited=[e.item for _, e in edits], plan_uri=manifest.uri)
        return manifest.uri
