// Runs: every run production_agent knows, newest first; open, resume or cancel one.
import { api } from "./api.js";
import { busy, clear, h, notice } from "./dom.js";
import { on, setRun, showTab } from "./state.js";

const RESUMABLE = new Set(["interrupted", "failed", "stopped"]);
const CANCELLABLE = new Set(["running", "paused", "pending", "queued", "awaiting_review"]);

function action(label, cls, fn) {
  const button = h("button", { class: `secondary ${cls}` }, label);
  button.addEventListener("click", () => busy(button, fn));
  return button;
}

function row(run, refresh) {
  const open = () => { setRun(run.run_id); showTab(run.status === "succeeded" ? "final" : "production"); };
  const resume = async () => {
    if (run.status === "paused") await api("/control/resume", { method: "POST", body: { run_id: run.run_id } });
    else {
      const accepted = await api("/invoke", { method: "POST", body: { run_id: run.run_id, qa_mode: run.qa_mode || "full" } });
      notice(`resumed as ${accepted.run_id}`);
      setRun(accepted.run_id);
    }
    await refresh();
  };
  const cancel = async () => { await api("/control/stop", { method: "POST", body: { run_id: run.run_id } }); await refresh(); };
  return h("tr", { dataset: { runId: run.run_id } },
    h("td", {}, run.run_id), h("td", {}, h("span", { class: `status ${run.status}` }, run.status)),
    h("td", {}, run.current_stage || "-"), h("td", {}, `${Math.round(100 * (run.progress || 0))}%`),
    h("td", {}, run.queue_position != null ? `#${run.queue_position}` : ""), h("td", { class: "muted" }, run.created_at || ""),
    h("td", {}, action("Open", "open", async () => open()),
      run.mode === "run" && (RESUMABLE.has(run.status) || run.status === "paused") ? action("Resume", "resume", resume) : null,
      CANCELLABLE.has(run.status) ? action("Cancel", "cancel", cancel) : null));
}

export function initRuns(root) {
  const body = h("tbody");
  const refresh = async () => {
    const { runs } = await api("/runs?limit=100");
    clear(body, runs.filter((r) => r.mode !== "dry").map((r) => row(r, refresh)));
  };
  const reload = h("button", { class: "secondary", id: "refresh-runs" }, "Refresh");
  reload.addEventListener("click", () => busy(reload, refresh));
  root.append(h("h2", {}, "Runs"), reload, h("table", {}, h("thead", {}, h("tr", {},
    ["run", "status", "stage", "progress", "queue", "created", ""].map((t) => h("th", {}, t)))), body));
  on("tab", (name) => { if (name === "runs") refresh().catch((err) => notice(err.message, "error")); });
}
