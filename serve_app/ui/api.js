// The public API, as the page uses it: the token (sessionStorage, sent as `Authorization: Bearer`), JSON calls
// with errors as ApiError, and what the page remembers per browser (the deliberations it started or opened,
// and each deliberation's events received so far with the last event id, so a reload resumes the stream).

const TOKEN_KEY = "councils.token";
const HISTORY_KEY = "councils.history";
const EVENTS_PREFIX = "councils.events.";
const HISTORY_MAX = 50;

export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  return headers;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = String(body.error.message);
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, message, Number(response.headers.get("Retry-After")) || 0);
}

// GET (or another method with a JSON body) under /v1: the parsed JSON, or an ApiError.
export async function call(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: authHeaders(headers), cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return { status: response.status, body: await response.json() };
}

export const api = {
  whoami: () => call("/v1/whoami").then((r) => r.body),
  councils: () => call("/v1/councils").then((r) => r.body.councils),
  status: () => call("/v1/status").then((r) => r.body),
  record: (id) => call(`/v1/deliberations/${encodeURIComponent(id)}`).then((r) => r.body),
  start: (request) => call("/v1/deliberations", { method: "POST", body: request }).then((r) => r.body),
  addAgent: (role, agent) => call(`/v1/councils/${encodeURIComponent(role)}/agents`, { method: "POST", body: agent }),
  removeAgent: (role, agentId) =>
    call(`/v1/councils/${encodeURIComponent(role)}/agents/${encodeURIComponent(agentId)}`, { method: "DELETE" }),
};

export { errorOf };

// -- what this browser remembers ----------------------------------------------------------------------------
// History: the deliberations this browser started or opened, newest first ({id, role, task, at}). The API has no
// route that lists a council's deliberations, so this list is the browser's own; each entry's status is read
// from the API when it is shown (an expired record answers 404).
export function history() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch (_) {
    return [];
  }
}

export function remember(entry) {
  const list = history().filter((e) => e.id !== entry.id);
  list.unshift({ ...entry, at: entry.at || Date.now() });
  localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, HISTORY_MAX)));
}

export function forgetAll() {
  localStorage.removeItem(HISTORY_KEY);
  for (let i = sessionStorage.length - 1; i >= 0; i--) {
    const key = sessionStorage.key(i);
    if (key && key.startsWith(EVENTS_PREFIX)) sessionStorage.removeItem(key);
  }
}

// The events of one deliberation received so far and the last event id: {lastId, events: [{id, kind, data}]}.
// Kept per tab (sessionStorage), written after each event, so a reload shows them again and resumes after lastId.
export function savedEvents(id) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(EVENTS_PREFIX + id) || "null");
    if (saved && Array.isArray(saved.events)) return saved;
  } catch (_) { /* start over */ }
  return { lastId: null, events: [] };
}

export function saveEvents(id, saved) {
  try {
    sessionStorage.setItem(EVENTS_PREFIX + id, JSON.stringify(saved));
  } catch (_) {
    // Storage full: keep the resume point at least (the log then starts over after a reload).
    sessionStorage.setItem(EVENTS_PREFIX + id, JSON.stringify({ lastId: saved.lastId, events: [] }));
  }
}
