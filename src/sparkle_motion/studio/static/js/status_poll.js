// One poller of GET /status for the current run; every tab listens to its "status" event.
import { api } from "./api.js";
import { notice } from "./dom.js";
import { emit, on, state } from "./state.js";

const ENDED = new Set(["succeeded", "failed", "stopped", "cancelled", "interrupted"]);
const EVERY_MS = 1000;
let timer = null;
let generation = 0;

export const lastStatus = { value: null };

async function tick(mine) {
  if (mine !== generation || !state.runId) return;
  try {
    const status = await api(`/status?run_id=${encodeURIComponent(state.runId)}`);
    if (mine !== generation) return;
    lastStatus.value = status;
    emit("status", status);
    if (ENDED.has(status.status)) return;  // poll() starts again after a resume or a review
  } catch (err) {
    notice(`status: ${err.message}`, "error");
  }
  timer = setTimeout(() => tick(mine), EVERY_MS);
}

export function poll() {
  clearTimeout(timer);
  generation += 1;
  tick(generation);
}

on("run", () => { lastStatus.value = null; poll(); });
