// The council viewer (docs/ui.md): sign in with a token, see the councils, start a deliberation, follow it live
// (stages, candidates, cost), and look back at the ones this browser started. It talks only to the public API.

import {
  api, ApiError, authHeaders, forgetAll, history, remember, saveEvents, savedEvents, setToken, token,
} from "./api.js";
import { follow } from "./sse.js";
import {
  cards, costChart, costTable, decidedWords, el, fill, firstLine, fmtSeconds, stageNames, stageStrip,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed", "timeout", "closed", "gone"]);
const CLIP = 4000; // characters of one string field kept per stored event (the cards show the full text)

const state = {
  scope: null, // "admin" | "read" | "open"
  councils: [],
  status: null,
  current: null, // {id, saved, stream, stages: {name: state}, record}
};

function canAdmin() {
  return state.scope === "admin" || state.scope === "open";
}

function notice(text) {
  const node = $("notice");
  node.textContent = text || "";
  node.hidden = !text;
}

// -- signing in ---------------------------------------------------------------------------------------------
function showLogin(message) {
  stopStream();
  $("main").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function boot() {
  notice("");
  state.scope = null;
  try {
    state.scope = (await api.whoami()).scope;
  } catch (error) {
    if (error.status === 401) {
      const refused = token() !== "";
      setToken("");
      showLogin(refused ? "that token was refused" : "");
    } else {
      showLogin(`the API did not answer: ${error.message}`);
    }
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = state.scope === "open";
  $("who").textContent = state.scope === "open" ? "open API (no token configured)" : `signed in · ${state.scope} scope`;
  await loadCouncils();
  renderHistory();
  openFromHash();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (!value) return;
  setToken(value);
  boot();
});

$("logout").addEventListener("click", () => {
  setToken("");
  forgetAll();
  state.scope = null;
  location.hash = "";
  showLogin("");
});

// -- councils -------------------------------------------------------------------------------------------------
async function loadCouncils() {
  try {
    const [councils, status] = await Promise.all([api.councils(), api.status()]);
    state.councils = councils;
    state.status = status;
  } catch (error) {
    return handle(error);
  }
  renderCouncils();
  renderRoleOptions();
}

function renderCouncils() {
  const byRole = (state.status && state.status.by_role) || {};
  const engines = (state.status && state.status.engines) || [];
  fill($("councils"), state.councils.map((c) => {
    const summary = byRole[c.role] || {};
    const usedEngines = [...new Set(c.agents.map((a) => a.engine))].sort();
    return el("article", { class: "council", data: { role: c.role } },
      el("h3", {}, c.role, el("span", { class: "muted" }, ` v${c.version}`)),
      el("dl", { class: "facts" },
        el("dt", {}, "agents"), el("dd", {}, String(c.agents.length)),
        el("dt", {}, "engines"), el("dd", {}, usedEngines.join(", ")),
        el("dt", {}, "rounds"), el("dd", {}, String(c.rounds)),
        el("dt", {}, "active"), el("dd", { data: { fact: "active" } }, String(summary.active ?? 0)),
        el("dt", {}, "accepted"), el("dd", {}, String(summary.accepted ?? 0))),
      el("ul", { class: "agents" }, c.agents.map((a) => el("li", { title: a.persona || "" },
        el("code", {}, a.id), " · ", a.engine,
        canAdmin() ? el("button", { type: "button", class: "small admin-action", title: `remove ${a.id}`,
          on: { click: () => adminCall(() => api.removeAgent(c.role, a.id), `remove agent ${a.id} from ${c.role}?`) } },
        "remove") : null))),
      canAdmin() ? addAgentForm(c.role, engines) : null);
  }));
}

function addAgentForm(role, engines) {
  const id = el("input", { placeholder: "agent id", required: true, pattern: "[A-Za-z0-9_.-]+" });
  const engine = el("select", {}, engines.map((name) => el("option", { value: name }, name)));
  const persona = el("input", { placeholder: "persona (optional)" });
  return el("form", { class: "admin-action add-agent", on: { submit: (event) => {
    event.preventDefault();
    adminCall(() => api.addAgent(role, { id: id.value.trim(), engine: engine.value, persona: persona.value }));
  } } }, id, engine, persona, el("button", { type: "submit", class: "small" }, "add agent"));
}

async function adminCall(fn, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    await fn();
    notice("");
  } catch (error) {
    handle(error);
  }
  await loadCouncils();
}

function renderRoleOptions() {
  const select = $("f-role");
  const chosen = select.value;
  fill(select, state.councils.map((c) => el("option", { value: c.role }, c.role)));
  if (chosen && state.councils.some((c) => c.role === chosen)) select.value = chosen;
}

$("refresh").addEventListener("click", () => { loadCouncils(); renderHistory(); });

// -- starting a deliberation ----------------------------------------------------------------------------------
function optionalInt(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

$("start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("start-error").textContent = "";
  const constraints = {};
  if ($("f-tests").value.trim()) constraints.tests = $("f-tests").value;
  if ($("f-context").value.trim()) constraints.context = $("f-context").value;
  if ($("f-answer-format").value.trim()) constraints.answer_format = $("f-answer-format").value.trim();
  const request = { role: $("f-role").value, task: $("f-task").value };
  if (Object.keys(constraints).length) request.constraints = constraints;
  for (const [field, id] of [["rounds", "f-rounds"], ["num_agents", "f-agents"], ["max_tokens", "f-max-tokens"]]) {
    const value = optionalInt(id);
    if (value !== undefined) request[field] = value;
  }
  $("f-submit").disabled = true;
  try {
    const accepted = await api.start(request);
    remember({ id: accepted.id, role: request.role, task: firstLine(request.task, 80) });
    renderHistory();
    location.hash = `#d=${accepted.id}`; // hashchange opens it
  } catch (error) {
    if (error.status === 401) return handle(error);
    $("start-error").textContent = error.message;
  } finally {
    $("f-submit").disabled = false;
  }
});

// -- one deliberation, live ---------------------------------------------------------------------------------
function openFromHash() {
  const m = /^#d=([0-9a-f]{32})$/.exec(location.hash);
  if (m) openDeliberation(m[1]);
}

window.addEventListener("hashchange", () => { if (state.scope) openFromHash(); });

function stopStream() {
  if (state.current && state.current.stream) state.current.stream.stop();
}

function openDeliberation(id) {
  if (state.current && state.current.id === id) return;
  stopStream();
  const saved = savedEvents(id);
  const current = { id, saved, stream: null, stages: {}, record: null, refreshing: null, again: false };
  state.current = current;
  $("deliberation").hidden = false;
  $("d-id").textContent = id;
  $("d-status").textContent = "";
  $("d-task").textContent = "";
  $("d-error").textContent = "";
  fill($("d-winner"));
  fill($("d-cards"));
  fill($("d-chart"));
  fill($("d-cost"));
  fill($("d-events"));
  const link = $("d-json");
  link.href = `/v1/deliberations/${id}`;
  link.onclick = (event) => { event.preventDefault(); openJson(id); };
  for (const entry of saved.events) showEvent(current, entry);
  refreshRecord(current);
  if (saved.events.some((e) => TERMINAL.has(e.kind))) {
    $("d-stream").textContent = "finished (events from this tab's memory)";
    return;
  }
  $("d-stream").textContent = saved.lastId ? `resuming after event ${saved.lastId}` : "connecting";
  current.stream = follow(`/v1/deliberations/${id}/events`, {
    lastId: saved.lastId,
    onEvent: (message) => receive(current, message),
    onState: (s, detail) => {
      if (state.current !== current) return;
      const text = { open: "live", waiting: `reconnecting: ${detail || ""}`, ended: "finished", error: "" }[s];
      $("d-stream").textContent = text ?? "";
      if (s === "error") handle(detail);
    },
  });
}

function clip(value) {
  if (typeof value === "string") return value.length > CLIP ? value.slice(0, CLIP) + "…" : value;
  if (Array.isArray(value)) return value.map(clip);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, clip(v)]));
  return value;
}

function receive(current, message) {
  if (state.current !== current) return;
  let data;
  try {
    data = JSON.parse(message.data);
  } catch (_) {
    data = { text: message.data };
  }
  const entry = { id: message.id, kind: message.event, data: clip(data) };
  current.saved.events.push(entry);
  if (message.id) current.saved.lastId = message.id;
  saveEvents(current.id, current.saved);
  showEvent(current, entry);
  if (entry.kind === "stage.completed" || entry.kind === "stage.skipped" || TERMINAL.has(entry.kind)) {
    refreshRecord(current);
  }
  if (TERMINAL.has(entry.kind)) {
    loadCouncils();
    renderHistory();
  }
}

function summary(kind, d) {
  switch (kind) {
    case "stage.started": return `${d.stage} started`;
    case "stage.completed": return `${d.stage} done`;
    case "stage.skipped": return `skipped ${(d.stages || []).join(", ")}: ${d.reason || ""}`;
    case "proposal": {
      const t = d.checks && d.checks.tests;
      return `proposal by ${d.author} (draft ${d.draft ?? 0})${t ? ` · tests ${t.passed}/${t.total}` : ""}` +
        `${d.checks && d.checks.failed && d.checks.failed.length ? ` · failed: ${d.checks.failed.join(", ")}` : ""}`;
    }
    case "tests.generated": return `${d.author} wrote ${(d.asserts || []).length} assert(s) for the candidates`;
    case "critique": return `critique of ${d.target} by ${d.critic} (round ${d.round})`;
    case "revision": return `revision of ${d.target} by ${d.author} (round ${d.round}) · ${d.adopted ? "adopted" : "kept the earlier version"}`;
    case "judgement": return `${d.judge} judged ${(d.inputs || []).length} distinguishing input(s)${d.parsed ? "" : " (did not parse)"}`;
    case "ranking": return `ranking by ${d.reviewer}: ${(d.order || []).join(" > ")}${d.parsed ? "" : " (did not parse)"}`;
    case "score": return `${d.author}: rank ${d.rank}, score ${d.score === null || d.score === undefined ? "–" : Number(d.score).toFixed(2)}`;
    case "completed": return `completed · winner ${d.winner_id}`;
    case "failed": case "timeout": return `${kind}: ${d.error || ""}`;
    case "closed": return `stream closed: ${d.reason || ""}`;
    case "gone": return d.error || "expired";
    default: return JSON.stringify(d);
  }
}

function showEvent(current, entry) {
  const d = entry.data || {};
  if (entry.kind === "stage.started") current.stages[d.stage] = "running";
  else if (entry.kind === "stage.completed") current.stages[d.stage] = "done";
  else if (entry.kind === "stage.skipped") for (const s of d.stages || []) current.stages[s] = "skipped";
  $("d-events").appendChild(el("li", { class: ["event", `event-${entry.kind.replace(".", "-")}`],
    data: { eventId: entry.id || "", kind: entry.kind } },
  el("span", { class: "event-kind" }, entry.kind), " ", summary(entry.kind, d)));
  renderStages(current);
}

function renderStages(current) {
  const record = current.record;
  let rounds = record && record.request && record.request.rounds;
  if ((rounds === null || rounds === undefined) && record && record.progress) rounds = (record.progress.stages_total - 3) / 2;
  const names = stageNames(Number.isInteger(rounds) && rounds >= 0 ? rounds : 1);
  const states = { ...current.stages };
  if (record) {
    for (const s of record.stages_done || []) states[s] = "done";
    for (const s of record.stages_skipped || []) states[s] = "skipped";
  }
  fill($("d-stages"), stageStrip(names, states));
}

async function refreshRecord(current) {
  if (current.refreshing) {
    current.again = true;
    return;
  }
  current.refreshing = (async () => {
    do {
      current.again = false;
      try {
        const record = await api.record(current.id);
        if (state.current !== current) return;
        current.record = record;
        if (!history().some((e) => e.id === record.id)) {
          remember({ id: record.id, role: record.request.role, task: firstLine(record.request.task, 80),
            at: record.created_at * 1000 });
          renderHistory();
        }
        renderRecord(current, record);
      } catch (error) {
        if (state.current !== current) return;
        if (error.status === 404) $("d-error").textContent = "unknown deliberation, or expired after its TTL";
        else handle(error);
        return;
      }
    } while (current.again);
  })();
  try {
    await current.refreshing;
  } finally {
    current.refreshing = null;
  }
}

function renderRecord(current, record) {
  $("d-status").textContent = record.status;
  $("d-status").className = `status status-${record.status}`;
  $("d-task").textContent = record.request.task;
  $("d-error").textContent = record.error || "";
  renderStages(current);
  const result = record.result;
  if (result) {
    fill($("d-winner"), el("div", { class: "winner-summary" },
      el("strong", {}, `Winner: ${result.winner_id} v${result.winner_version ?? 0}`),
      result.written_by && result.written_by !== result.winner_id ? ` (written by ${result.written_by})` : "",
      " · decided by ", el("code", {}, result.decided_by || "?"), " · ", fmtSeconds(result.duration_s),
      el("p", {}, decidedWords(result.decided_by)),
      result.reason ? el("p", { class: "reason" }, result.reason) : null));
  } else {
    fill($("d-winner"));
  }
  fill($("d-chart"), costChart(record.timings));
  fill($("d-cost"), costTable(record.timings, result));
  fill($("d-cards"), cards(record));
}

async function openJson(id) {
  try {
    const response = await fetch(`/v1/deliberations/${id}`, { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, `${response.status} ${response.statusText}`);
    const text = JSON.stringify(await response.json(), null, 2);
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    window.open(url, "_blank", "noopener");
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    handle(error);
  }
}

// -- history ------------------------------------------------------------------------------------------------
async function renderHistory() {
  const entries = history();
  if (!entries.length) {
    fill($("history"), el("p", { class: "muted" }, "nothing yet"));
    return;
  }
  const roles = [...new Set(entries.map((e) => e.role))].sort();
  const records = await Promise.all(entries.map((e) => api.record(e.id).catch((error) => ({ missing: error }))));
  fill($("history"), roles.map((role) => el("div", { class: "history-role" },
    el("h3", {}, role),
    el("table", { class: "history" },
      el("thead", {}, el("tr", {}, ["started", "status", "winner", "duration", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, entries.map((e, i) => [e, records[i]]).filter(([e]) => e.role === role).map(([e, r]) =>
        historyRow(e, r)))))));
}

function historyRow(entry, record) {
  const when = new Date(entry.at).toLocaleTimeString();
  const status = record.missing ? (record.missing.status === 404 ? "expired" : "?") : record.status;
  let winner = "";
  if (record.result) {
    const p = record.result.proposals.find((x) => x.author === record.result.winner_id);
    winner = p ? firstLine(p.content, 60) : record.result.winner_id;
  }
  const duration = record.result ? fmtSeconds(record.result.duration_s)
    : record.finished_at && record.created_at ? fmtSeconds(record.finished_at - record.created_at) : "";
  const json = el("a", { href: `/v1/deliberations/${entry.id}`, class: "small-text",
    on: { click: (event) => { event.preventDefault(); openJson(entry.id); } } }, "JSON");
  return el("tr", { data: { id: entry.id } },
    el("td", {}, el("a", { href: `#d=${entry.id}`, title: entry.task || "" }, when)),
    el("td", { class: `status status-${status}` }, status),
    el("td", { class: "winner-line" }, winner),
    el("td", {}, duration),
    el("td", {}, json));
}

// -- errors ---------------------------------------------------------------------------------------------------
function handle(error) {
  if (error instanceof ApiError && error.status === 401) {
    setToken("");
    showLogin("the token was refused (or has changed): sign in again");
    return;
  }
  notice(error && error.message ? error.message : String(error));
}

boot();
