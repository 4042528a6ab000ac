// The plan editor's form: one labelled input per plan field, each tagged with its JSON path (data-path).
import { h } from "./dom.js";
import { getPath } from "./paths.js";

const NUMBER_FIELDS = /(duration_sec|start_time_sec|seed)$/;

export function field(plan, path, label, { type = "text", rows = 0, options = null } = {}) {
  const value = getPath(plan, path);
  let input;
  if (options) {
    input = h("select", {}, options.map((o) => h("option", { value: o, selected: o === value }, o)));
  } else if (type === "checkbox") {
    input = h("input", { type: "checkbox", checked: Boolean(value) });
  } else if (rows) {
    input = h("textarea", { rows }, value ?? "");
  } else {
    input = h("input", { type: NUMBER_FIELDS.test(path) ? "number" : type, step: "any", value: value ?? "" });
  }
  input.dataset.path = path;
  input.name = path;
  return h("div", { class: "field", dataset: { path } }, h("label", {}, label, input));
}

export function readInput(input) {
  if (input.type === "checkbox") return input.checked;
  if (input.type === "number") return input.value.trim() === "" ? null : Number(input.value);
  return input.value;
}

function card(path, title, ...children) {
  return h("div", { class: "card", dataset: { path } }, h("strong", {}, title), ...children);
}

export function planForm(plan, { onPhoto }) {
  const baseIds = (plan.base_images || []).map((b) => b.id);
  const characterIds = (plan.characters || []).map((c) => c.id);
  const characters = (plan.characters || []).map((c, i) => {
    const p = `characters[${i}]`;
    const photo = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", onchange: (e) => onPhoto(i, e.target.files[0]) });
    return card(p, c.id, field(plan, `${p}.name`, "Name"), field(plan, `${p}.description`, "Description", { rows: 2 }),
      field(plan, `${p}.voice_profile.language`, "Voice language"),
      h("label", {}, `Reference photo ${c.reference_image_id ? `(${c.reference_image_id})` : ""}`, photo));
  });
  const bases = (plan.base_images || []).map((b, i) => {
    const p = `base_images[${i}]`;
    return card(p, b.id, field(plan, `${p}.prompt`, "Prompt", { rows: 3 }), field(plan, `${p}.seed`, "Seed"));
  });
  const shots = (plan.shots || []).map((s, i) => {
    const p = `shots[${i}]`;
    return card(p, s.id, field(plan, `${p}.duration_sec`, "Duration (s)"),
      field(plan, `${p}.visual_description`, "Visual description", { rows: 2 }),
      field(plan, `${p}.setting`, "Setting"), field(plan, `${p}.motion_prompt`, "Motion"),
      h("div", { class: "row" }, field(plan, `${p}.start_base_image_id`, "Starts on", { options: baseIds }),
        field(plan, `${p}.end_base_image_id`, "Ends on", { options: baseIds })),
      field(plan, `${p}.is_talking_closeup`, "Talking close-up", { type: "checkbox" }));
  });
  const lines = (plan.dialogue_timeline || []).map((entry, i) => {
    const p = `dialogue_timeline[${i}]`;
    const timing = h("div", { class: "row" }, field(plan, `${p}.start_time_sec`, "Start (s)"),
      field(plan, `${p}.duration_sec`, "Duration (s)"));
    if (entry.type !== "dialogue") return card(p, `silence ${i + 1}`, timing);
    return card(p, `line ${i + 1}`, field(plan, `${p}.character_id`, "Speaker", { options: characterIds }),
      field(plan, `${p}.text`, "Text", { rows: 2 }), timing);
  });
  return [
    field(plan, "title", "Title"),
    h("h3", {}, "Characters"), h("div", { class: "grid" }, characters),
    h("h3", {}, "Keyframe prompts (base images)"), h("div", { class: "grid" }, bases),
    h("h3", {}, "Shots"), h("div", { class: "grid" }, shots),
    h("h3", {}, "Dialogue"), h("div", { class: "grid" }, lines),
  ];
}
