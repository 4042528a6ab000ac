// Final: the film with its subtitles as a <track> (WebVTT from /studio/subtitles), downloads and the QA verdict.
import { api, contentPath, download, mediaUrl, raw } from "./api.js";
import { busy, clear, h } from "./dom.js";
import { on } from "./state.js";

let shownRun = "";

function pick(artifacts, stage, type) {
  return artifacts.filter((a) => a.stage === stage && a.artifact_type === type).at(-1) || null;
}

function downloadButton(id, label, artifact, filename) {
  if (!artifact) return null;
  const button = h("button", { class: "secondary", id }, label);
  button.addEventListener("click", () => busy(button, () => download(artifact.artifact_id, filename)));
  return button;
}

async function render(root, status) {
  const view = await api(`/artifacts?run_id=${encodeURIComponent(status.run_id)}`);
  const film = pick(view.artifacts, "finalize", "video_final");
  if (!film) throw new Error(`run ${status.run_id} has no final film`);
  const srt = pick(view.artifacts, "assemble", "subtitles");
  const plan = pick(view.artifacts, "plan_intake", "movie_plan") || pick(view.artifacts, "plan_intake", "movie_plan_request");
  const qa = pick(view.artifacts, "qa_publish", "qa_report");
  const summaryArtifact = pick(view.artifacts, "finalize", "run_summary");
  const summary = summaryArtifact ? await (await raw(contentPath(summaryArtifact.artifact_id))).json() : {};
  const verdict = summary.qa_verdict || film.metadata?.qa_verdict || "unknown";

  const video = h("video", { id: "film", controls: true, preload: "auto", src: await mediaUrl(contentPath(film.artifact_id)) });
  if (srt) {
    const vtt = await mediaUrl(`/studio/subtitles/${encodeURIComponent(srt.artifact_id)}.vtt`);
    video.append(h("track", { kind: "subtitles", srclang: "en", label: "English", src: vtt, default: true }));
  }
  const base = summary.title ? summary.title.replace(/[^\w-]+/g, "_").slice(0, 60) : status.run_id;
  clear(root,
    h("h2", {}, summary.title || "Final film"),
    h("div", { class: "card" }, video),
    h("p", {}, "QA verdict: ", h("span", { class: `verdict ${verdict}`, id: "qa-verdict" }, verdict),
      (summary.qa_reasons || []).length ? h("span", { class: "muted" }, ` — ${summary.qa_reasons.join("; ")}`) : null),
    h("p", { class: "muted" }, `${film.duration_s ?? "?"} s · ${film.width}×${film.height} · sha256 ${film.sha256.slice(0, 16)}…`),
    h("div", { class: "downloads" },
      downloadButton("download-mp4", "Film (mp4)", film, `${base}.mp4`),
      downloadButton("download-srt", "Subtitles (srt)", srt, `${base}.srt`),
      downloadButton("download-plan", "Plan (JSON)", plan, `${base}.plan.json`),
      downloadButton("download-qa", "QA report (JSON)", qa, `${base}.qa.json`)));
}

export function initFinal(root) {
  root.append(h("h2", {}, "Final"), h("p", { class: "muted", id: "final-state" }, "The film appears here when a run succeeds."));
  on("run", () => { shownRun = ""; });
  on("status", (status) => {
    if (status.status !== "succeeded" || shownRun === status.run_id) return;
    shownRun = status.run_id;
    render(root, status).catch((err) => {
      shownRun = "";
      clear(root, h("h2", {}, "Final"), h("p", { class: "field-error" }, err.message));
    });
  });
}
