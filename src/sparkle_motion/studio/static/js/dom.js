// h("div", {class: "card", onclick: fn}, child, "text") — the one DOM helper the pages use.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function notice(message, kind = "info") {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = kind === "error" ? "notice error" : "notice";
  box.hidden = !message;
}

// Run an async action from a button: disabled while it runs, errors shown in the notice bar.
export async function busy(button, action) {
  button.disabled = true;
  try {
    return await action();
  } catch (err) {
    notice(err.message || String(err), "error");
    return undefined;
  } finally {
    button.disabled = false;
  }
}
