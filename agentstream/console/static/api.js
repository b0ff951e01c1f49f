// The run API, called with the key a person typed in. The key lives in sessionStorage (this tab
// only, gone when it closes) and travels as a Bearer header; no cookie authenticates anything.

const KEY = "agentstream.console.key";

export function key() {
  return sessionStorage.getItem(KEY);
}

export function setKey(value) {
  sessionStorage.setItem(KEY, value.trim());
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.error ? body.error : { type: "http_error", message: `HTTP ${status}` };
    super(detail.message);
    this.status = status;
    this.type = detail.type;
  }
}

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${key()}`, ...headers }, cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("console:unauthenticated"));
    throw new ApiError(response.status, parsed);
  }
  return parsed;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// A run's Server-Sent Events, read with fetch so the Authorization header goes along (EventSource
// cannot send one). After a cut it reconnects with Last-Event-ID = the last offset it handed on, and
// drops anything at or before that offset: the caller sees every event once, in order.
const STALL_MS = 40000; // the gateway's keep-alive comes every 15 s

async function openEvents(runId, { truncate = 0, after = null, signal }) {
  const headers = { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" };
  if (after !== null) headers["Last-Event-ID"] = String(after);
  const path = `/v1/runs/${encodeURIComponent(runId)}/events${truncate ? `?truncate=${truncate}` : ""}`;
  const response = await fetch(path, { headers, signal, cache: "no-store" });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body);
  }
  return response;
}

// The messages of an SSE response as {id, record}; `heard` is called on every chunk (keep-alives too).
async function* frames(response, heard = () => {}) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    heard();
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let id = null;
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue; // a keep-alive or a server note
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") id = text;
        else if (field === "data") data.push(text);
      }
      if (id !== null && data.length) yield { id: Number(id), record: JSON.parse(data.join("\n")) };
    }
  }
}

// A run's events from the start until `enough(record)` says so (then the stream is dropped): what
// came before a point of the run, e.g. the model's words before the call an approval is about.
export async function readUntil(runId, enough, truncate = 2000) {
  const controller = new AbortController();
  const seen = [];
  const limit = setTimeout(() => controller.abort(), 10000); // never found: give up, not hang
  try {
    for await (const { record } of frames(await openEvents(runId, { truncate, signal: controller.signal }))) {
      seen.push(record);
      if (enough(record)) break;
    }
  } finally {
    clearTimeout(limit);
    controller.abort();
  }
  return seen;
}

export function followEvents(runId, { onEvent, onState, isSettled, truncate = 0 }) {
  let last = null;
  let stopped = false;
  let controller = null;
  let attempt = 0;
  let reconnects = 0;
  let running = false;

  async function once() {
    controller = new AbortController();
    const response = await openEvents(runId, { truncate, after: last, signal: controller.signal });
    onState("live", reconnects);
    attempt = 0;
    // A connection that died without closing (a dropped network) sends nothing, not even the
    // server's keep-alives: past STALL_MS of silence it is dropped and the stream resumed.
    let heard = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - heard > STALL_MS) controller.abort();
    }, 1000);
    try {
      for await (const { id, record } of frames(response, () => (heard = Date.now()))) {
        if (last !== null && id <= last) continue; // already handed on before the cut
        last = id;
        onEvent(record);
      }
    } finally {
      clearInterval(watchdog);
    }
  }

  async function loop() {
    running = true;
    try {
      await follow();
    } finally {
      running = false;
    }
  }

  async function follow() {
    while (!stopped) {
      try {
        await once();
        // The server ends the stream once the run has settled: stop unless it runs again (a resume).
        if (await isSettled()) {
          onState("ended", reconnects);
          return;
        }
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && error.status !== 429 && error.status < 500) {
          onState("error", reconnects, error);
          return;
        }
      }
      if (stopped) return;
      reconnects += 1;
      onState("reconnecting", reconnects);
      attempt += 1;
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** Math.min(attempt, 5))));
    }
  }

  loop();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
    restart() {
      if (running) return;
      stopped = false;
      loop();
    },
    get last() {
      return last;
    },
  };
}

// What this gateway's API offers, read from its OpenAPI document: a filter or a route the
// gateway does not serve is not shown, instead of failing when used.
let offered = null;

export async function capabilities() {
  if (offered) return offered;
  const doc = await (await fetch("/openapi.json", { cache: "no-store" })).json();
  const params = (path) => new Set(((doc.paths[path] || {}).get?.parameters || []).map((p) => p.name));
  offered = {
    listRuns: params("/v1/runs"),
    events: params("/v1/runs/{run_id}/events"),
    costSeries: "/v1/costs/series" in doc.paths,
    oneEvent: "/v1/runs/{run_id}/events/{offset}" in doc.paths,
  };
  return offered;
}
