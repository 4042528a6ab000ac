// Every request to production_agent goes through here: JSON in/out, and the bearer token when the mesh has one.
// Media: <video src>/<img src> cannot send an Authorization header, so with a token set they are fetched here
// and shown through blob: URLs; without a token they are plain URLs of the artifact face (Range requests work).

const TOKEN_KEY = "sparkle.token";
let askToken = null;  // set by app.js: () => Promise<string>

export function onTokenNeeded(ask) { askToken = ask; }
export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(value) { sessionStorage.setItem(TOKEN_KEY, value.trim()); }

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code;
    this.field = err.field;
    this.details = err.details;
  }
}

async function send(path, init) {
  const headers = new Headers(init.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  return fetch(path, { ...init, headers });
}

export async function raw(path, init = {}) {
  let response = await send(path, init);
  if (response.status === 401 && askToken) {
    setToken(await askToken());
    response = await send(path, init);
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    throw new ApiError(response.status, body);
  }
  return response;
}

export async function api(path, { method = "GET", body, headers } = {}) {
  const init = { method, headers: { ...(headers || {}) } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  return (await raw(path, init)).json();
}

export function contentPath(artifactId, download = false) {
  return `/artifacts/${encodeURIComponent(artifactId)}/content${download ? "?download=1" : ""}`;
}

const blobs = new Map();  // path → blob: URL, so a re-render does not fetch again

// A URL an <img>/<video>/<track> can load for `path`.
export async function mediaUrl(path) {
  if (!token()) return path;
  if (!blobs.has(path)) {
    const blob = await (await raw(path)).blob();
    blobs.set(path, URL.createObjectURL(blob));
  }
  return blobs.get(path);
}

// Save an artifact as a file: a link when no token is needed, else fetched and handed over as a blob.
export async function download(artifactId, filename) {
  const link = document.createElement("a");
  link.download = filename;
  link.href = token() ? await mediaUrl(contentPath(artifactId)) : contentPath(artifactId, true);
  document.body.append(link);
  link.click();
  link.remove();
}

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// A user's file into the store through the artifact face; resolves to its manifest.
export async function upload(file, { runId = "uploads", stage, artifactType }) {
  const bytes = await file.arrayBuffer();
  const query = new URLSearchParams({ run_id: runId, stage, artifact_type: artifactType,
                                      media_type: file.type || "application/octet-stream" });
  const response = await raw(`/artifacts/upload?${query}`, {
    method: "POST", body: bytes,
    headers: { "Content-Type": file.type || "application/octet-stream", "X-Checksum-Sha256": await sha256Hex(bytes) },
  });
  return response.json();
}
