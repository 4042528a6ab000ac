// Storyboard: a run stopped at a review gate — re-roll (new seed) or edit the prompt of one item, or approve.
import { api, contentPath, mediaUrl } from "./api.js";
import { busy, clear, h, notice } from "./dom.js";
import { on } from "./state.js";
import { poll } from "./status_poll.js";

const MAX_SEED = 2 ** 32 - 1;
let shownKey = "";

async function review(runId, body) {
  await api(`/runs/${encodeURIComponent(runId)}/review`, { method: "POST", body });
  poll();
}

async function itemCard(runId, item) {
  const url = item.artifact_id ? await mediaUrl(contentPath(item.artifact_id)) : null;
  const isVideo = item.stage === "video_clips" || item.stage === "lipsync";
  const media = !url ? h("div", { class: "muted" }, "no media")
    : isVideo ? h("video", { src: url, controls: true, muted: true }) : h("img", { src: url, alt: item.item });
  const prompt = h("textarea", { rows: 3, class: "item-prompt" }, item.prompt || "");
  const reroll = h("button", { class: "secondary reroll" }, "Re-roll");
  reroll.addEventListener("click", () => busy(reroll, () =>
    review(runId, { regenerate: [{ item: item.item, seed: Math.floor(Math.random() * MAX_SEED) }] })));
  const edit = h("button", { class: "secondary edit" }, "Redo with this prompt");
  edit.addEventListener("click", () => busy(edit, () => review(runId, { regenerate: [{ item: item.item, prompt: prompt.value }] })));
  return h("div", { class: "card review-item", dataset: { item: item.item, artifactId: item.artifact_id || "" } },
    media, h("strong", {}, item.item), h("span", { class: "muted" }, ` seed ${item.seed ?? "-"}`),
    h("label", {}, "Prompt", prompt), reroll, edit);
}

async function render(root, status) {
  const gate = status.review;
  if (status.status !== "awaiting_review" || !gate) {
    shownKey = "";
    clear(root, h("h2", {}, "Storyboard"), h("p", { class: "muted", id: "storyboard-state" },
      `Run ${status.run_id} is ${status.status}. The storyboard opens when a run stops at a review gate ` +
      "(start it with “stop for review after keyframes”)."));
    return;
  }
  const key = `${status.run_id}:${gate.gate}:${gate.plan_revision}:${gate.items.map((i) => i.artifact_id).join(",")}`;
  if (key === shownKey) return;
  shownKey = key;
  const approve = h("button", { class: "primary", id: "approve" }, `Approve ${gate.gate} and continue`);
  approve.addEventListener("click", () => busy(approve, async () => {
    await review(status.run_id, { approve: true });
    notice(`${gate.gate} approved.`);
  }));
  const sheet = gate.contact_sheet_artifact_id
    ? h("a", { href: "#", onclick: async (e) => { e.preventDefault(); window.open(await mediaUrl(contentPath(gate.contact_sheet_artifact_id))); } }, "contact sheet")
    : null;
  const cards = await Promise.all(gate.items.map((item) => itemCard(status.run_id, item)));
  clear(root, h("h2", {}, `Storyboard — review of ${gate.gate}`),
    h("p", { class: "muted" }, `Run ${status.run_id}, plan revision ${gate.plan_revision ?? "-"} `, sheet),
    approve, h("div", { class: "grid", id: "review-items" }, cards));
}

export function initStoryboard(root) {
  root.append(h("h2", {}, "Storyboard"), h("p", { class: "muted", id: "storyboard-state" }, "No run at a review gate."));
  on("status", (status) => render(root, status).catch((err) => notice(err.message, "error")));
}
