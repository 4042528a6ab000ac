// What the tabs share: the plan being edited, the run being watched; tabs listen for changes.
const listeners = new Map();

export const state = { plan: null, planUri: null, runId: null, castFiles: [] };

export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, []);
  listeners.get(event).push(fn);
}

export function emit(event, value) {
  for (const fn of listeners.get(event) || []) fn(value);
}

export function setPlan(plan, planUri = null) {
  state.plan = plan;
  state.planUri = planUri;
  emit("plan", plan);
}

export function setRun(runId) {
  state.runId = runId;
  document.getElementById("current-run").textContent = runId ? `run ${runId}` : "";
  emit("run", runId);
}

export function showTab(name) { emit("tab", name); }
