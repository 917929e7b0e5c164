// The public API, with the signed-in key: JSON calls, uploads with progress, downloads,
// and event streams read with fetch (EventSource cannot send an Authorization header).
import { credentials, signOut } from "./session.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(said(status, problem));
    this.status = status;
    this.code = problem.code || "http_error";
  }
}

// What the API said, all of it: a 422's field errors ("title: String should have at most
// 500 characters"), not only "the request is not valid".
function said(status, problem) {
  const detail = problem.detail || problem.title || `HTTP ${status}`;
  const fields = (Array.isArray(problem.errors) ? problem.errors : []).map((error) => {
    const where = (error.loc || []).filter((part) => part !== "body").join(".");
    return where ? `${where}: ${error.msg}` : error.msg;
  });
  return fields.length ? `${detail}: ${fields.join("; ")}` : detail;
}

function headers(extra = {}) {
  const who = credentials();
  if (!who) throw new ApiError(401, { detail: "sign in first", code: "signed_out" });
  const user = who.token ? {} : { "X-User-ID": who.user }; // a token names its user itself
  return { Authorization: `Bearer ${who.key}`, ...user, ...extra };
}

async function failure(response) {
  let problem = {};
  try {
    problem = await response.json();
  } catch {
    problem = { detail: response.statusText };
  }
  if (response.status === 401) {
    // The key was revoked (or the token expired): back to the sign-in form, saying why.
    signOut();
    window.dispatchEvent(new Event("atelier:signed-out"));
    problem = { ...problem, detail: `${problem.detail || "not signed in"}: sign in again` };
  }
  return new ApiError(response.status, problem);
}

export async function api(path, { method = "GET", json, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

// A browser upload: multipart/form-data as the browser builds it, with its progress.
export function upload(base, file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", `${base}/files`);
    for (const [name, value] of Object.entries(headers())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      let body = {};
      try {
        body = JSON.parse(request.responseText);
      } catch {
        body = { detail: request.statusText };
      }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new ApiError(request.status, body));
    };
    request.onerror = () => reject(new ApiError(0, { detail: "the upload failed" }));
    request.send(form);
  });
}

// A download that needs the key: fetched, then handed to the browser as a file.
export async function download(path, filename) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// An event stream: each event is handed to onEvent({id, event, data}) as it arrives.
// Resolves when the stream ends; rejects if it could not start.
export async function stream(path, { method = "GET", json, lastEventId, signal, onEvent }) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId) extra["Last-Event-ID"] = String(lastEventId);
  const init = { method, headers: headers(extra), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let current = { data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (current.data.length) {
          onEvent({ id: current.id, event: current.event || "message", data: JSON.parse(current.data.join("\n")) });
        }
        current = { data: [] };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") current.data.push(text);
        else if (field === "event") current.event = text;
        else if (field === "id") current.id = text;
      }
    }
  }
}
