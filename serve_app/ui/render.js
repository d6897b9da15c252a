// Building the page's DOM. Every piece of text that came from the API (model output above all) goes in through
// text nodes (textContent / createTextNode), never as HTML: a proposal holding <script> shows as those characters.
// Nothing here parses a string as HTML, and no inline style or handler attribute is written (the CSP forbids them).

const SVG_NS = "http://www.w3.org/2000/svg";

// el("div", {class: "x", data: {id: 1}, on: {click: fn}, title: "..."}, "text", childNode, [more], null)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  applyProps(node, props);
  append(node, children);
  return node;
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function applyProps(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    else if (key === "on") for (const [k, fn] of Object.entries(value)) node.addEventListener(k, fn);
    else if (key.startsWith("on")) throw new Error("handlers go in `on`, never as attributes");
    else if (key === "text") node.textContent = String(value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function firstLine(text, max = 100) {
  const line = String(text || "").split("\n").find((l) => l.trim()) || "";
  return line.length > max ? line.slice(0, max - 1) + "…" : line;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`;
}

export function fmtInt(n) {
  return Number(n || 0).toLocaleString("en-US");
}

// -- model text: prose and fenced code blocks -----------------------------------------------------------------
const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;

// [{kind: "text" | "code", lang, text}] of a proposal's text, split at its fenced blocks.
export function blocks(text) {
  const out = [];
  let current = { kind: "text", lang: "", lines: [] };
  for (const line of String(text || "").split("\n")) {
    const m = FENCE.exec(line);
    if (m && current.kind === "text") {
      out.push(current);
      current = { kind: "code", lang: m[2].toLowerCase(), lines: [], fence: m[1] };
    } else if (m && current.kind === "code" && m[1] === current.fence && !m[2]) {
      out.push(current);
      current = { kind: "text", lang: "", lines: [] };
    } else {
      current.lines.push(line);
    }
  }
  out.push(current);
  return out
    .map((b) => ({ kind: b.kind, lang: b.lang, text: b.lines.join("\n") }))
    .filter((b) => b.kind === "code" || b.text.trim());
}

const PY_KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else except " +
  "finally for from global if import in is lambda nonlocal not or pass raise return try while with yield").split(" "));
const PY_TOKEN = /("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|#[^\n]*|\b\d[\d_.eExXa-fA-F]*\b|\b[A-Za-z_]\w*\b)/g;

// Code as spans of text (keywords, strings, comments, numbers, definitions): the only "highlighting" is classes.
export function highlight(code, lang) {
  const nodes = [];
  if (!["python", "py", ""].includes(lang)) return [code];
  let last = 0;
  let afterDef = false;
  for (const m of code.matchAll(PY_TOKEN)) {
    const token = m[0];
    if (m.index > last) nodes.push(code.slice(last, m.index));
    let cls = null;
    if (token.startsWith("#")) cls = "tok-comment";
    else if (token[0] === '"' || token[0] === "'") cls = "tok-string";
    else if (/^\d/.test(token)) cls = "tok-number";
    else if (PY_KEYWORDS.has(token)) cls = "tok-keyword";
    else if (afterDef) cls = "tok-def";
    afterDef = token === "def" || token === "class";
    nodes.push(cls ? el("span", { class: cls }, token) : token);
    last = m.index + token.length;
  }
  if (last < code.length) nodes.push(code.slice(last));
  return nodes;
}

export function modelText(text) {
  return el("div", { class: "model-text" }, blocks(text).map((b) =>
    b.kind === "code"
      ? el("pre", { class: "code", data: { lang: b.lang || "text" } }, el("code", {}, highlight(b.text, b.lang)))
      : el("p", { class: "prose" }, b.text.replace(/^\n+|\n+$/g, ""))));
}

// -- checks and cards ----------------------------------------------------------------------------------------
export function testsOf(checks) {
  const withTests = (checks || []).filter((c) => c.tests_total !== null && c.tests_total !== undefined);
  if (!withTests.length) return null;
  return withTests.reduce((acc, c) => [acc[0] + (c.tests_passed || 0), acc[1] + c.tests_total], [0, 0]);
}

export function checkList(checks) {
  if (!checks || !checks.length) return el("p", { class: "muted" }, "no checks yet");
  return el("ul", { class: "checks" }, checks.map((c) =>
    el("li", { class: ["check", `check-${c.status}`], data: { check: c.name, status: c.status } },
      el("span", { class: "badge" }, c.status),
      el("span", { class: "check-name" }, c.name),
      c.group ? el("span", { class: "tag", title: "behaviour group: candidates in one group behaved the same" },
        `group ${c.group}`) : null,
      c.evidence !== null && c.evidence !== undefined
        ? el("span", { class: "tag", title: "generated evidence (bigger is stronger)" }, `evidence ${c.evidence}`) : null,
      c.message ? el("span", { class: "check-message" }, c.message) : null)));
}

export const DECIDED_BY = {
  verifiers: "the verifiers decided: it passes more of the checks (the request's tests weigh most)",
  generated_evidence: "evidence from running the candidates decided: its behaviour agrees with the most others",
  votes: "the vote decided: most versions gave its answer",
  distinguishing_inputs: "the agents judged the two tied behaviour groups' outputs on the inputs where they differ",
  peer_rank: "the agents' peer ranking decided (most Borda points)",
  tie_break: "a deterministic tie-break decided: nothing else told the candidates apart",
  only_candidate: "it was the only candidate",
};

export function decidedWords(decidedBy) {
  return DECIDED_BY[decidedBy] || (decidedBy ? `decided by ${decidedBy}` : "");
}

// One candidate version as a card. v: the version; p: its proposal line; verdict: its CandidateVerdict (or null).
export function versionCard({ p, index, v, verdict, winner, result }) {
  const tests = testsOf(v.checks);
  const facts = [
    ["author", p.author],
    ["written by", v.written_by],
    ["round", v.round],
    verdict ? ["rank", verdict.rank] : null,
    v.score !== null && v.score !== undefined ? ["score", Number(v.score).toFixed(2)] : null,
    tests ? ["tests", `${tests[0]}/${tests[1]}`] : null,
    v.answer !== null && v.answer !== undefined ? ["answer", v.answer] : null,
    verdict && verdict.votes !== null && verdict.votes !== undefined ? ["votes", verdict.votes] : null,
    verdict && verdict.borda !== null && verdict.borda !== undefined ? ["Borda points", verdict.borda] : null,
  ].filter(Boolean);
  return el("article", {
    class: ["card", winner && "winner", p.chosen === index && "chosen"],
    data: { author: p.author, version: index, ...(winner ? { winner: "true" } : {}) },
  },
  winner ? el("div", { class: "winner-banner" },
    el("strong", {}, "Winner"),
    " · decided by ",
    el("code", { class: "decided-by" }, result.decided_by || "?"),
    el("p", { class: "decided-words" }, decidedWords(result.decided_by)),
    result.reason ? el("p", { class: "reason" }, result.reason) : null) : null,
  el("header", { class: "card-head" },
    el("h3", {}, `${p.author} · v${index}`),
    p.chosen === index ? el("span", { class: "tag" }, "stands for its proposal") : null),
  el("dl", { class: "facts" }, facts.map(([k, value]) => [el("dt", {}, k), el("dd", { data: { fact: k } }, String(value))])),
  v.critique ? el("details", { class: "critique" }, el("summary", {}, "the critique it answers"),
    el("p", { class: "prose" }, v.critique)) : null,
  modelText(v.content),
  el("h4", {}, "checks"),
  checkList(v.checks),
  verdict && verdict.reason ? el("p", { class: "verdict-reason muted" }, verdict.reason) : null);
}

// Every version of a record's proposals as cards: ranked (with the result), else in seat and version order.
export function cards(record) {
  const result = record.result;
  const proposals = result ? result.proposals : record.proposals || [];
  const verdicts = result ? result.candidates || [] : [];
  const items = [];
  for (const p of proposals) {
    (p.versions || []).forEach((v, index) => {
      const verdict = verdicts.find((c) => c.proposal === p.author && c.version === index) || null;
      const winner = !!result && result.winner_id === p.author && (result.winner_version ?? 0) === index;
      items.push({ p, index, v, verdict, winner, result });
    });
  }
  if (result) items.sort((a, b) => (b.winner - a.winner) || ((a.verdict?.rank ?? 1e9) - (b.verdict?.rank ?? 1e9)));
  return items.map(versionCard);
}

// -- stages ----------------------------------------------------------------------------------------------------
export function stageNames(rounds) {
  const names = ["propose"];
  for (let k = 1; k <= rounds; k++) names.push(`critique-${k}`, `revise-${k}`);
  return names.concat(["rank", "score"]);
}

export function stageStrip(names, states) {
  return el("ol", { class: "stages" }, names.map((name) =>
    el("li", { class: ["stage", `stage-${states[name] || "pending"}`], data: { stage: name, state: states[name] || "pending" } },
      name)));
}

// -- cost and time per stage -----------------------------------------------------------------------------------
// Two bars per stage: tokens (cached prompt, prompt computed, completion) and seconds (generation,
// verification, the rest), each scaled to the largest stage. Inline SVG; numbers in <title> and in the table.
export function costChart(timings) {
  const rows = timings || [];
  if (!rows.length) return el("p", { class: "muted" }, "no stage has finished yet");
  const width = 640, label = 90, bar = 12, gap = 4, rowH = 2 * bar + gap + 12;
  const maxTokens = Math.max(1, ...rows.map((t) => t.prompt_tokens + t.completion_tokens));
  const maxSeconds = Math.max(1e-6, ...rows.map((t) => t.seconds));
  const span = width - label - 90;
  const chart = svg("svg", { class: "cost-chart", viewBox: `0 0 ${width} ${rows.length * rowH + 8}`, role: "img",
    "aria-label": "tokens and seconds per stage" });
  rows.forEach((t, i) => {
    const y = i * rowH + 4;
    chart.appendChild(svg("text", { x: 0, y: y + bar, class: "chart-label" }, t.stage));
    let x = label;
    const tokenParts = [
      ["cached", t.cached_prompt_tokens || 0, `${fmtInt(t.cached_prompt_tokens)} prompt tokens from the prefix cache`],
      ["prompt", t.prompt_tokens - (t.cached_prompt_tokens || 0), `${fmtInt(t.prompt_tokens - (t.cached_prompt_tokens || 0))} prompt tokens computed`],
      ["completion", t.completion_tokens, `${fmtInt(t.completion_tokens)} completion tokens`],
    ];
    for (const [kind, value, title] of tokenParts) {
      const w = (value / maxTokens) * span;
      if (w > 0) chart.appendChild(svg("rect", { x, y, width: w.toFixed(2), height: bar, class: `bar bar-${kind}` }, svg("title", {}, title)));
      x += w;
    }
    chart.appendChild(svg("text", { x: x + 4, y: y + bar - 2, class: "chart-value" }, `${fmtInt(t.prompt_tokens + t.completion_tokens)} tok`));
    x = label;
    const other = Math.max(0, t.seconds - t.generation_s - t.verification_s);
    for (const [kind, value] of [["generation", t.generation_s], ["verification", t.verification_s], ["other", other]]) {
      const w = (value / maxSeconds) * span;
      if (w > 0) chart.appendChild(svg("rect", { x, y: y + bar + gap, width: w.toFixed(2), height: bar, class: `bar bar-${kind}` },
        svg("title", {}, `${kind}: ${fmtSeconds(value)}`)));
      x += w;
    }
    chart.appendChild(svg("text", { x: x + 4, y: y + 2 * bar + gap - 2, class: "chart-value" }, fmtSeconds(t.seconds)));
  });
  const legend = el("p", { class: "legend" },
    ["cached", "prompt", "completion", "generation", "verification", "other"].map((k) =>
      el("span", { class: "legend-item" }, el("span", { class: `swatch bar-${k}` }), k === "cached" ? "cached prompt" : k)));
  return el("div", {}, chart, legend);
}

export function costTable(timings, result) {
  const rows = timings || [];
  const sum = (key) => rows.reduce((acc, t) => acc + (t[key] || 0), 0);
  const row = (cells, cls) => el("tr", { class: cls }, cells.map((c, i) => el(i ? "td" : "th", {}, c)));
  return el("table", { class: "cost-table" },
    el("thead", {}, el("tr", {}, ["stage", "calls", "prompt", "cached", "completion", "seconds"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((t) => row([t.stage, t.calls, fmtInt(t.prompt_tokens), fmtInt(t.cached_prompt_tokens),
      fmtInt(t.completion_tokens), fmtSeconds(t.seconds)]))),
    el("tfoot", {}, row(["total", sum("calls"), fmtInt(sum("prompt_tokens")), fmtInt(sum("cached_prompt_tokens")),
      fmtInt(sum("completion_tokens")), fmtSeconds(sum("seconds"))], "totals"),
    result ? row(["deliberation", "", fmtInt(result.usage.prompt_tokens), "", fmtInt(result.usage.completion_tokens),
      fmtSeconds(result.duration_s)], "totals") : null));
}
