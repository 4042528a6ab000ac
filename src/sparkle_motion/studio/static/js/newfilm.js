// New film: an idea and a few knobs → script_agent's plan (through POST /studio/plan) → the Plan tab.
import { api } from "./api.js";
import { busy, h, notice } from "./dom.js";
import { setPlan, showTab, state } from "./state.js";
import { attachCastPhotos } from "./cast.js";

function numberOrNull(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

export function initNewFilm(root) {
  const idea = h("textarea", { id: "idea", rows: 4, placeholder: "Two friends on a neon rooftop reconcile before sunrise." });
  const shots = h("input", { id: "shots", type: "number", min: 1, max: 12, value: "3" });
  const duration = h("input", { id: "duration", type: "number", min: 4, max: 300, step: "0.5", value: "12" });
  const style = h("input", { id: "style", placeholder: "noir, anime, watercolor…" });
  const seed = h("input", { id: "seed", type: "number", min: 0, placeholder: "from the idea" });
  const aspect = h("select", { id: "aspect" }, ["", "16:9", "9:16", "1:1"].map((a) => h("option", { value: a }, a || "profile default")));
  const photos = h("input", { id: "cast-photos", type: "file", accept: "image/png,image/jpeg,image/webp", multiple: true });
  const write = h("button", { id: "write-plan", class: "primary" }, "Write the plan");

  write.addEventListener("click", () => busy(write, async () => {
    notice("");
    const body = { prompt: idea.value, shots: numberOrNull(shots), duration_s: numberOrNull(duration),
                   seed: numberOrNull(seed), style: style.value.trim() || null, aspect: aspect.value || null };
    for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
    const result = await api("/studio/plan", { method: "POST", body });
    state.castFiles = [...photos.files];
    if (state.castFiles.length) await attachCastPhotos(result.plan, state.castFiles);
    setPlan(result.plan, state.castFiles.length ? null : result.plan_uri);
    notice(`Plan written: ${result.plan.title} — edit it, then start production.`);
    showTab("plan");
  }));

  root.append(
    h("h2", {}, "New film"),
    h("label", {}, "Idea", idea),
    h("div", { class: "row" }, h("label", {}, "Shots", shots), h("label", {}, "Duration (s)", duration),
      h("label", {}, "Style", style), h("label", {}, "Seed", seed), h("label", {}, "Aspect", aspect)),
    h("label", {}, "Cast photos (optional, one per character in order)", photos),
    write,
  );
}
