// The studio's entry: tab switching, the token prompt, and each page's module.
import { onTokenNeeded, setToken } from "./api.js";
import { on, setRun, showTab } from "./state.js";
import { initNewFilm } from "./newfilm.js";
import { initPlan } from "./plan_editor.js";
import { initStoryboard } from "./storyboard.js";
import { initProduction } from "./production.js";
import { initFinal } from "./final.js";
import { initRuns } from "./runs.js";

function askToken() {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => { setToken(input.value); resolve(input.value); }, { once: true });
    if (!dialog.open) dialog.showModal();
  });
}

function switchTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const section of document.querySelectorAll("main > .tab")) {
    section.hidden = section.id !== `tab-${name}`;
  }
  location.hash = name;
  document.body.dataset.tab = name;
}

onTokenNeeded(askToken);
on("tab", switchTab);
for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}

initNewFilm(document.getElementById("tab-new"));
initPlan(document.getElementById("tab-plan"));
initStoryboard(document.getElementById("tab-storyboard"));
initProduction(document.getElementById("tab-production"));
initFinal(document.getElementById("tab-final"));
initRuns(document.getElementById("tab-runs"));

const params = new URLSearchParams(location.search);
if (params.get("run")) setRun(params.get("run"));
showTab(location.hash.slice(1) || "new");
document.body.dataset.ready = "1";
