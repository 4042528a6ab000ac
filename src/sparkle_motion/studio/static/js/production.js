// Production: each stage with its steps, the items in flight with their progress, previews as they land.
import { api, contentPath, mediaUrl } from "./api.js";
import { busy, clear, h } from "./dom.js";
import { on, showTab, state } from "./state.js";
import { poll } from "./status_poll.js";

const STAGES = ["plan_intake", "dialogue_audio", "base_images", "cast", "video_clips", "lipsync", "assemble",
                "qa_publish", "finalize"];
let previewsKey = "";

function stageRows(status) {
  const byStage = new Map();
  for (const step of status.steps) {
    if (!byStage.has(step.stage)) byStage.set(step.stage, new Map());
    byStage.get(step.stage).set(step.item || step.stage, step.status);  // the latest attempt wins
  }
  const inFlight = new Map();
  for (const item of status.items) inFlight.set(`${item.stage}/${item.item || item.stage}`, item);
  return STAGES.filter((s) => byStage.has(s) || status.current_stage === s).map((stage) => {
    const items = [...(byStage.get(stage) || new Map()).entries()];
    const chips = items.map(([item, st]) => {
      const live = inFlight.get(`${stage}/${item}`);
      const pct = live && live.total ? Math.round((100 * live.step) / live.total) : null;
      return h("span", { class: `chip ${st}`, title: live?.summary || st, dataset: { item } },
        item, pct !== null ? ` ${pct}%` : "");
    });
    const live = status.items.filter((i) => i.stage === stage).map((i) =>
      h("div", { class: "muted item-progress" }, i.summary || `${i.item}: ${i.state}`,
        i.total ? h("div", { class: "bar" }, h("div", { style: `width:${Math.round((100 * i.step) / i.total)}%` })) : null));
    return h("div", { class: "stage", dataset: { stage } }, h("strong", {}, stage), h("div", {}, h("div", { class: "chips" }, chips), live));
  });
}

// What each item's latest finished step made: a re-rolled keyframe's old image is no longer shown.
function currentArtifactIds(status) {
  const latest = new Map();
  for (const step of status.steps) {
    if (step.status === "succeeded" || step.status === "cached") latest.set(`${step.stage}/${step.item}`, step.artifact_ids);
  }
  return new Set([...latest.values()].flat());
}

async function previews(box, status) {
  const key = status.steps.filter((s) => s.status === "succeeded" || s.status === "cached").length;
  if (`${status.run_id}:${key}` === previewsKey) return;
  previewsKey = `${status.run_id}:${key}`;
  const view = await api(`/artifacts?run_id=${encodeURIComponent(status.run_id)}`);
  const current = currentArtifactIds(status);
  const shown = view.artifacts.filter((a) => current.has(a.artifact_id) && (
    (a.stage === "base_images" && a.media_type.startsWith("image/"))
    || (["video_clips", "lipsync"].includes(a.stage) && a.media_type === "video/mp4")));
  const cards = await Promise.all(shown.map(async (a) => {
    const url = await mediaUrl(contentPath(a.artifact_id));
    const media = a.media_type.startsWith("image/") ? h("img", { src: url, alt: a.artifact_id })
      : h("video", { src: url, muted: true, loop: true, autoplay: true, playsInline: true });
    return h("div", { class: "card preview", dataset: { stage: a.stage } }, media, h("div", { class: "muted" }, `${a.stage} · ${a.artifact_id}`));
  }));
  clear(box, cards);
}

function controls(status) {
  const act = (action) => {
    const button = h("button", { class: "secondary", id: `control-${action}` }, action);
    button.addEventListener("click", () => busy(button, async () => {
      await api(`/control/${action}`, { method: "POST", body: { run_id: status.run_id } });
      poll();
    }));
    return button;
  };
  const out = [];
  if (status.status === "running") out.push(act("pause"));
  if (status.status === "paused") out.push(act("resume"));
  if (["running", "paused", "pending", "queued", "awaiting_review"].includes(status.status)) out.push(act("stop"));
  if (status.status === "awaiting_review") out.push(h("button", { class: "primary", id: "open-review", onclick: () => showTab("storyboard") }, "Review now"));
  if (status.status === "succeeded") out.push(h("button", { class: "primary", id: "open-final", onclick: () => showTab("final") }, "Watch the film"));
  return out;
}

export function initProduction(root) {
  const head = h("div", { id: "run-head" });
  const stages = h("div", { id: "stages" });
  const box = h("div", { id: "previews", class: "grid" });
  root.append(h("h2", {}, "Production"), head, stages, h("h3", {}, "Previews"), box);
  on("run", () => { previewsKey = ""; clear(box); clear(stages); });
  on("status", (status) => {
    const pct = Math.round(100 * (status.progress || 0));
    clear(head, h("div", {}, h("span", { class: `status ${status.status}`, id: "run-status" }, status.status),
      ` · ${status.run_id} · stage ${status.current_stage || "-"} · `, h("span", { id: "run-progress" }, `${pct}%`)),
      h("div", { class: "bar" }, h("div", { style: `width:${pct}%` })),
      status.error ? h("div", { class: "field-error" }, status.error.message || JSON.stringify(status.error)) : null,
      h("div", {}, controls(status)));
    clear(stages, stageRows(status));
    previews(box, status).catch((err) => console.warn("previews", err));
  });
  if (!state.runId) head.append(h("p", { class: "muted" }, "No run yet: start one from the Plan tab or open one on Runs."));
}
