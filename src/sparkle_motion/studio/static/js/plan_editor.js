// Plan: the structured MoviePlan editor; the validators' errors appear next to the field they name.
import { api } from "./api.js";
import { busy, clear, h, notice } from "./dom.js";
import { ancestors, setPath } from "./paths.js";
import { planForm, readInput } from "./plan_fields.js";
import { uploadReference } from "./cast.js";
import { on, setRun, showTab, state } from "./state.js";

const REVIEW_GATES = ["plan", "cast", "keyframes", "clips"];
let timer = null;

function showErrors(root, errors) {
  for (const el of root.querySelectorAll(".field-error, .errors-box")) el.remove();
  for (const el of root.querySelectorAll(".invalid")) el.classList.remove("invalid");
  const unplaced = [];
  for (const error of errors) {
    const holder = ancestors(error.path).map((p) => root.querySelector(`[data-path="${CSS.escape(p)}"]:not(input):not(select):not(textarea)`))
      .find(Boolean);
    if (!holder) { unplaced.push(error); continue; }
    holder.querySelector(`[data-path="${CSS.escape(error.path)}"]`)?.classList.add("invalid");
    holder.append(h("div", { class: "field-error", dataset: { errorPath: error.path } }, error.message));
  }
  if (unplaced.length) {
    root.querySelector("#plan-form").prepend(h("div", { class: "errors-box" },
      unplaced.map((e) => h("div", { class: "field-error", dataset: { errorPath: e.path } }, `${e.path}: ${e.message}`))));
  }
  root.querySelector("#plan-state").textContent = errors.length ? `${errors.length} problem(s)` : "plan is valid";
}

async function validate(root) {
  const result = await api("/studio/validate", { method: "POST", body: { plan: state.plan } });
  showErrors(root, result.errors);
  return result.valid;
}

function startControls(root) {
  const qa = h("select", { id: "qa-mode" }, h("option", { value: "full" }, "full QA"), h("option", { value: "skip" }, "skip QA"));
  const gates = REVIEW_GATES.map((gate) => h("label", {}, h("input", { type: "checkbox", value: gate, class: "review-gate",
    checked: gate === "keyframes" }), ` stop for review after ${gate}`));
  const start = h("button", { id: "start-production", class: "primary" }, "Start production");
  start.addEventListener("click", () => busy(start, async () => {
    if (!(await validate(root))) throw new Error("fix the plan's problems first");
    const review = gates.map((g) => g.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    const body = { mode: "run", qa_mode: qa.value, ...(state.planUri ? { plan_uri: state.planUri } : { plan: state.plan }) };
    if (review.length) body.review = review;
    const accepted = await api("/invoke", { method: "POST", body });
    notice(`Run ${accepted.run_id} started.`);
    setRun(accepted.run_id);
    showTab("production");
  }));
  const save = h("button", { class: "secondary", onclick: () => {
    const blob = new Blob([JSON.stringify(state.plan, null, 2)], { type: "application/json" });
    const link = h("a", { href: URL.createObjectURL(blob), download: `${state.plan.metadata?.plan_id || "plan"}.json` });
    link.click();
  } }, "Download plan JSON");
  const check = h("button", { class: "secondary" }, "Validate");
  check.addEventListener("click", () => busy(check, () => validate(root)));
  return h("div", { class: "card" }, h("div", { class: "row" }, h("label", {}, "QA", qa), h("div", {}, gates)), start, check, save,
    h("span", { id: "plan-state", class: "muted" }));
}

function render(root) {
  if (!state.plan) {
    clear(root, h("h2", {}, "Plan"), h("p", { class: "muted" }, "Write a plan on the New film tab first."));
    return;
  }
  const onPhoto = async (index, file) => {
    state.plan.characters[index].reference_image_id = await uploadReference(file);
    state.planUri = null;
    render(root);
  };
  const form = h("div", { id: "plan-form" }, planForm(state.plan, { onPhoto }));
  form.addEventListener("input", (event) => {
    const path = event.target.dataset.path;
    if (!path) return;
    setPath(state.plan, path, readInput(event.target));
    state.planUri = null;  // edited: send the plan itself
    clearTimeout(timer);
    timer = setTimeout(() => validate(root).catch((err) => notice(err.message, "error")), 400);
  });
  clear(root, h("h2", {}, "Plan"), startControls(root), form);
  validate(root).catch((err) => notice(err.message, "error"));
}

export function initPlan(root) {
  on("plan", () => render(root));
  render(root);
}
