// spokehub status page: polls GET admin/workers and admin/timeline every 2 s and
// renders the fleet and the last 15 minutes (inline SVG charts, no library).
//
// Worker names, details and model names can come from remote agents, so nothing
// here builds HTML from strings: every value is set as text.
// The admin token lives in sessionStorage (this tab only) and travels only in the
// Authorization header, never in a URL.

const REFRESH_MS = 2000;
const TIMEOUT_MS = 5000;
const TOKEN_KEY = "spokehub.adminToken";
const NA = ["\u2014", "na"];
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_W = 360;
const CHART_H = 110;

const byId = (id) => document.getElementById(id);
const ui = {
  banner: byId("banner"),
  notice: byId("notice"),
  auth: byId("auth"),
  form: byId("token-form"),
  input: byId("token"),
  tokenState: byId("token-state"),
  tokenStateText: byId("token-state-text"),
  forget: byId("forget"),
  updated: byId("updated"),
  updatedTime: byId("updated-time"),
  updatedNote: byId("updated-note"),
  table: byId("workers"),
  rows: byId("rows"),
  empty: byId("empty"),
  healthy: byId("total-healthy"),
  inflight: byId("total-inflight"),
  draining: byId("total-draining"),
  breakers: byId("total-breakers"),
  budget: byId("total-budget"),
  tokens: byId("total-tokens"),
  cache: byId("total-cache"),
  totals: byId("totals"),
  charts: byId("charts"),
  chartsNote: byId("charts-note"),
};

let timer = null;
let generation = 0; // bumped by every refresh; answers to older ones are dropped
let lastGood = null;
let waitingForVisible = false;
let memoryToken = ""; // used only when sessionStorage is unavailable
const rows = new Map(); // worker name -> { tr, name, cells, button, worker }
const signatures = new WeakMap();

// -- token -------------------------------------------------------------------------

function readToken() {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return memoryToken;
  }
}

function storeToken(token) {
  try {
    window.sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    memoryToken = token;
  }
}

function forgetToken() {
  memoryToken = "";
  try {
    window.sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored
  }
}

// -- HTTP ----------------------------------------------------------------------------

async function api(method, path) {
  const headers = { Accept: "application/json" };
  // The hub takes state changes as JSON only: a cross-site form cannot send this type.
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const token = readToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
  try {
    return await fetch(path, {
      method,
      headers,
      cache: "no-store",
      credentials: "same-origin",
      signal: abort.signal,
    });
  } finally {
    clearTimeout(timeout);
  }
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") return body.error.message;
  } catch {
    // not the hub's JSON error
  }
  return response.statusText || "";
}

function failureText(err) {
  return err && err.name === "AbortError"
    ? `no answer within ${TIMEOUT_MS / 1000} s`
    : "the connection failed";
}

// -- small DOM helpers ---------------------------------------------------------------

function span(text, className) {
  const node = document.createElement("span");
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

// Set a cell to parts [text, className]; rebuilt only when they change, so an
// unchanged row is left alone between refreshes.
function fill(cell, parts) {
  const signature = JSON.stringify(parts);
  if (signatures.get(cell) === signature) return;
  signatures.set(cell, signature);
  const nodes = [];
  for (const [text, className] of parts) {
    if (text === "" || text === null || text === undefined) continue;
    if (className === "na") {
      const dash = span(text, "muted");
      dash.setAttribute("aria-hidden", "true");
      nodes.push(dash, span("not reported", "visually-hidden"));
    } else {
      nodes.push(span(String(text), className));
    }
  }
  cell.replaceChildren(...nodes);
}

function showBanner(title, text) {
  const key = `${title}\n${text}`;
  if (!ui.banner.hidden && ui.banner.dataset.key === key) return; // do not re-announce
  ui.banner.dataset.key = key;
  const strong = document.createElement("strong");
  strong.textContent = title;
  ui.banner.replaceChildren(strong, document.createTextNode(text ? ` ${text}` : ""));
  ui.banner.hidden = false;
}

function clearBanner() {
  if (ui.banner.hidden) return;
  ui.banner.hidden = true;
  ui.banner.dataset.key = "";
  ui.banner.replaceChildren();
}

function notify(text, isError) {
  ui.notice.textContent = text;
  ui.notice.classList.toggle("error", Boolean(isError));
  ui.notice.hidden = false;
}

// -- formatting ----------------------------------------------------------------------

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

function clock(date) {
  return date.toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
}

function vram(mb) {
  if (!isNum(mb)) return [NA];
  return [[mb >= 1024 ? `${(mb / 1024).toFixed(1)} GiB` : `${Math.round(mb)} MiB`]];
}

function latency(ms) {
  if (!isNum(ms)) return [NA];
  if (ms >= 10000) return [[`${(ms / 1000).toFixed(1)} s`]];
  return [[`${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`]];
}

function rate(value) {
  if (!isNum(value)) return [NA];
  if (value >= 100) return [[`${Math.round(value)}`]];
  return [[value >= 10 ? value.toFixed(1) : value.toFixed(2)]];
}

function percent(ratio) {
  return isNum(ratio) ? `${(ratio * 100).toFixed(ratio >= 0.995 || ratio < 0.1 ? 1 : 0)}%` : "";
}

function seconds(value) {
  if (!isNum(value)) return "\u2014";
  return value >= 1 ? `${value.toFixed(value >= 10 ? 0 : 2)} s` : `${Math.round(value * 1000)} ms`;
}

function list(values) {
  return Array.isArray(values) ? values.map(String) : [];
}

const BREAKER = {
  closed: ["Closed", "badge ok"],
  open: ["Open", "badge bad"],
  half_open: ["Half-open", "badge warn"],
};

function breakerParts(breaker) {
  const b = breaker && typeof breaker === "object" ? breaker : {};
  const [label, className] = BREAKER[b.state] || [String(b.state || "unknown"), "badge neutral"];
  let detail = "";
  if (b.state === "open" && isNum(b.retry_in_s)) {
    detail = `probe in ${Math.ceil(b.retry_in_s)} s`;
  } else if (isNum(b.opened_count) && b.opened_count > 0) {
    detail = `opened ${b.opened_count}\u00d7`;
  }
  return [[label, className], [detail, "detail"]];
}

// -- rendering -----------------------------------------------------------------------

const FIELDS = ["kind", "source", "health", "rotation", "breaker", "models", "slots", "vram",
  "inflight", "latency", "tokens"];
const NUMERIC = new Set(["slots", "vram", "inflight", "latency", "tokens"]);

function makeRow() {
  const tr = document.createElement("tr");
  const name = document.createElement("th");
  name.scope = "row";
  tr.append(name);
  const cells = {};
  for (const field of FIELDS) {
    const td = document.createElement("td");
    td.className = field;
    if (NUMERIC.has(field)) td.classList.add("num");
    if (field === "models" || field === "health") td.classList.add("detail-cell");
    cells[field] = td;
    tr.append(td);
  }
  const actions = document.createElement("td");
  actions.className = "actions";
  const button = document.createElement("button");
  button.type = "button";
  actions.append(button);
  tr.append(actions);
  const row = { tr, name, cells, button, worker: null };
  button.addEventListener("click", () => toggleDrain(row));
  return row;
}

// Why a worker takes no new requests now, or null if it does.
function outOfRotation(w) {
  if (w.draining) return ["Draining", "badge warn"];
  if (!w.healthy) return ["Out: down", "badge bad"];
  if (w.agent_stale) return ["Out: agent silent", "badge bad"];
  if (w.breaker && w.breaker.state === "open") return ["Out: breaker open", "badge bad"];
  return null;
}

// Completion tokens/s over the last minute, prompt tokens/s under it, and the share
// of prompt tokens the worker's prompt cache served over 15 minutes (if it says).
function tokenParts(stats) {
  if (!stats) return [NA];
  const parts = rate(stats.completion_tokens_per_s);
  parts.push([`prompt ${rate(stats.prompt_tokens_per_s)[0][0]}/s`, "detail"]);
  if (isNum(stats.cached_prompt_ratio)) {
    parts.push([`${percent(stats.cached_prompt_ratio)} cached`, "detail cached"]);
  }
  return parts;
}

function cacheParts(stats) {
  if (!stats || !isNum(stats.cached_prompt_ratio)) return [NA];
  return [[percent(stats.cached_prompt_ratio)],
    [`${stats.cached_prompt_tokens} tokens`, "detail"]];
}

function updateRow(row, w, stats) {
  const name = String(w.name);
  row.worker = w;
  row.tr.classList.toggle("down", !w.healthy);
  row.tr.classList.toggle("draining", Boolean(w.draining));
  fill(row.name, [[name], [w.url, "detail"]]);
  const c = row.cells;
  fill(c.kind, [[w.kind]]);
  fill(c.source, [[w.source]]);
  fill(c.health, [w.healthy ? ["Up", "badge ok"] : ["Down", "badge bad"], [w.detail, "detail"]]);
  // Ejection is per model: the worker still serves its other models.
  const ejected = list(w.ejected_for_models);
  const out = outOfRotation(w);
  if (out) {
    fill(c.rotation, [out]);
  } else if (ejected.length) {
    fill(c.rotation, [["Ejected", "badge warn"], [`slow for ${ejected.join(", ")}`, "detail"]]);
  } else {
    fill(c.rotation, [["In rotation", "badge ok"]]);
  }
  fill(c.breaker, breakerParts(w.breaker));
  const models = list(w.models);
  const loaded = list(w.loaded_models);
  // "loaded" says something only when some served models are not in memory (Ollama,
  // llama.cpp in router mode); a plain llama-server has all of its models loaded.
  const allLoaded = loaded.length === models.length && models.every((m) => loaded.includes(m));
  fill(c.models, [models.length ? [models.join(", ")] : ["none", "muted"],
    [loaded.length && !allLoaded ? `loaded: ${loaded.join(", ")}` : "", "detail"]]);
  fill(c.slots, isNum(w.slots_total)
    ? [[`${isNum(w.slots_busy) ? w.slots_busy : "?"} / ${w.slots_total}`]] : [NA]);
  fill(c.vram, vram(w.vram_free_mb));
  fill(c.inflight, [[isNum(w.in_flight) ? String(w.in_flight) : "?"]]);
  fill(c.latency, latency(w.ewma_latency_ms));
  fill(c.tokens, tokenParts(stats));
  const verb = w.draining ? "Undrain" : "Drain";
  fill(row.button, [[verb], [` worker ${name}`, "visually-hidden"]]);
  row.button.classList.toggle("danger", !w.draining);
}

function renderTokenTotals(timeline) {
  const hub = timeline && timeline.hub;
  fill(ui.tokens, hub ? tokenParts(hub).filter(([, cls]) => cls !== "detail cached") : [NA]);
  fill(ui.cache, hub ? cacheParts(hub) : [NA]);
}

function renderTotals(workers, budget) {
  const count = (pred) => workers.filter(pred).length;
  const total = workers.length;
  const healthy = count((w) => w.healthy);
  const down = total - healthy;
  fill(ui.healthy, [[`${healthy} / ${total}`], [down ? `${down} down` : "", "badge bad"]]);
  const inflight = workers.reduce((sum, w) => sum + (isNum(w.in_flight) ? w.in_flight : 0), 0);
  fill(ui.inflight, [[String(inflight)]]);
  fill(ui.draining, [[String(count((w) => w.draining))]]);
  fill(ui.breakers, [[String(count((w) => w.breaker && w.breaker.state !== "closed"))]]);
  if (budget && isNum(budget.balance)) {
    fill(ui.budget, [[`${budget.balance.toFixed(1)} retries left`],
      [`${budget.retries ?? 0} retries / ${budget.requests ?? 0} requests in window`, "detail"]]);
  } else {
    fill(ui.budget, [NA]);
  }
}

function render(data, timeline) {
  const workers = Array.isArray(data && data.workers) ? data.workers : [];
  const stats = (timeline && timeline.workers) || {};
  const seen = new Set();
  workers.forEach((w, i) => {
    const name = String(w.name);
    seen.add(name);
    let row = rows.get(name);
    if (!row) {
      row = makeRow();
      row.tr.dataset.worker = name;
      rows.set(name, row);
    }
    updateRow(row, w, Object.hasOwn(stats, name) ? stats[name] : null);
    const here = ui.rows.children[i];
    if (here !== row.tr) ui.rows.insertBefore(row.tr, here || null);
  });
  for (const [name, row] of rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      rows.delete(name);
    }
  }
  ui.empty.textContent = "No workers are registered with this hub.";
  ui.empty.hidden = workers.length > 0;
  renderTotals(workers, data && data.retry_budget);
  renderTokenTotals(timeline);
  renderCharts(timeline);
}

// -- charts --------------------------------------------------------------------------

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

// A "nice" upper bound for the y axis: 1, 2 or 5 times a power of ten.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// Draw one chart: lines = [{label, values (numbers or null), cls}], format(v) for labels.
function drawChart(figure, lines, format, legendAlways = false) {
  const plot = figure.querySelector(".chart-plot");
  const legend = figure.querySelector(".chart-legend");
  const value = figure.querySelector(".chart-value");
  let top = 0;
  let points = 0;
  for (const line of lines) {
    for (const v of line.values) {
      if (isNum(v)) {
        top = Math.max(top, v);
        points += 1;
      }
    }
  }
  const max = niceMax(top);
  const root = svg("svg", {
    viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none", class: "chart-svg",
    role: "img", focusable: "false",
  });
  for (const frac of [0.25, 0.5, 0.75]) {
    const y = (CHART_H * frac).toFixed(1);
    root.append(svg("line", { x1: 0, x2: CHART_W, y1: y, y2: y, class: "grid" }));
  }
  const summary = [];
  lines.forEach((line, i) => {
    const n = line.values.length;
    let d = "";
    let run = 0; // points in the current unbroken run
    line.values.forEach((v, j) => {
      if (!isNum(v)) {
        if (run === 1) d += "h-2"; // a lone point: a short dash (round line caps)
        run = 0;
        return;
      }
      const x = n > 1 ? (j / (n - 1)) * CHART_W : CHART_W;
      const y = CHART_H - (v / max) * (CHART_H - 2) - 1;
      d += `${run ? "L" : "M"}${x.toFixed(1)} ${y.toFixed(1)}`;
      run += 1;
    });
    if (run === 1) d += "h-2";
    if (d) {
      root.append(svg("path", {
        d, class: `series ${line.cls || `series-${i % 6}`}`, "vector-effect": "non-scaling-stroke",
      }));
    }
    const latest = [...line.values].reverse().find(isNum);
    summary.push(`${line.label}: latest ${isNum(latest) ? format(latest) : "none"}`);
  });
  root.setAttribute("aria-label", `${figure.querySelector(".chart-title").textContent}, ` +
    `last 15 minutes, scale up to ${format(max)}. ${summary.join("; ")}.`);
  root.dataset.points = String(points);
  const label = document.createElement("span");
  label.className = "chart-max";
  label.textContent = format(max);
  label.setAttribute("aria-hidden", "true");
  plot.replaceChildren(root, label);
  value.textContent = lines.length === 1 && !legendAlways
    ? summary[0].replace(/^[^:]*: /, "") : "";
  const named = lines.length > 1 || legendAlways;
  legend.replaceChildren(...lines.filter(() => named).map((line, i) => {
    const item = document.createElement("li");
    item.append(span("", `swatch ${line.cls || `series-${i % 6}`}`), span(line.label));
    return item;
  }));
  figure.classList.toggle("empty-chart", points === 0);
}

function renderCharts(t) {
  if (!t || !Array.isArray(t.requests_per_s)) {
    ui.chartsNote.textContent = "No chart data from the hub.";
    return;
  }
  ui.chartsNote.textContent = `${t.bucket_s}-second buckets; the newest is still filling.`;
  const perSecond = (v) => `${v >= 10 ? Math.round(v) : v.toFixed(v >= 1 ? 1 : 2)}/s`;
  const byId = (id) => ui.charts.querySelector(`#${id}`);
  drawChart(byId("chart-requests"), [{ label: "requests", values: t.requests_per_s }],
    perSecond);
  const kinds = Object.keys(t.errors_per_s || {}).sort();
  const errors = kinds.map((kind) => ({ label: kind, values: t.errors_per_s[kind] }));
  drawChart(byId("chart-errors"), errors.length ? errors
    : [{ label: "errors", values: t.requests_per_s.map(() => 0) }], perSecond,
  errors.length > 0);
  drawChart(byId("chart-ttft"), [{ label: "p95", values: t.ttft_p95_s }], seconds);
  drawChart(byId("chart-tokens"), [
    { label: "completion", values: t.completion_tokens_per_s, cls: "series-0" },
    { label: "prompt", values: t.prompt_tokens_per_s, cls: "series-1" }], perSecond);
}

function clearFleet(why) {
  for (const row of rows.values()) row.tr.remove();
  rows.clear();
  ui.empty.textContent = why;
  ui.empty.hidden = false;
  for (const dd of [ui.healthy, ui.inflight, ui.draining, ui.breakers, ui.budget, ui.tokens,
    ui.cache]) {
    fill(dd, [["\u2013"]]);
  }
}

function markFresh(now) {
  lastGood = now;
  ui.updatedTime.textContent = clock(now);
  ui.updatedTime.dateTime = now.toISOString();
  ui.updatedNote.textContent = `(refreshes every ${REFRESH_MS / 1000} s)`;
  for (const node of [ui.updated, ui.table, ui.totals, ui.charts]) {
    node.classList.remove("stale");
  }
}

function markStale(note) {
  ui.updatedNote.textContent = note;
  for (const node of [ui.updated, ui.table, ui.totals, ui.charts]) node.classList.add("stale");
}

// state: "open" (no token needed), "token" (stored token works), "needed" (prompt)
function setAuthState(state) {
  const hasToken = Boolean(readToken());
  if (state === "needed") {
    const wasHidden = ui.auth.hidden;
    ui.auth.hidden = false;
    if (wasHidden) ui.input.focus();
  } else {
    ui.auth.hidden = true;
  }
  if (hasToken) {
    ui.tokenStateText.textContent = "Using the admin token stored in this tab.";
  } else if (state === "open") {
    ui.tokenStateText.textContent = "No token needed: authentication is off on this hub.";
  } else {
    ui.tokenStateText.textContent = "No token entered.";
  }
  ui.forget.hidden = !hasToken;
  ui.tokenState.hidden = false;
}

function authFailed(status, message) {
  const hasToken = Boolean(readToken());
  const why = message ? `: ${message}` : "";
  if (status === 403) {
    showBanner("Access denied (HTTP 403).",
      `The token was accepted but may not read the fleet${why}. It needs the admin scope.`);
  } else if (hasToken) {
    showBanner("Token rejected (HTTP 401).",
      `The hub did not accept the token${why}. Enter a valid admin token.`);
  } else {
    showBanner("Admin token required (HTTP 401).",
      "This hub has authentication on. Enter an admin token to see the fleet.");
  }
  forgetToken(); // a token the hub turned down is of no further use: do not keep it
  clearFleet("No fleet data: this needs a valid admin token.");
  markStale("(paused until a valid admin token is entered)");
  setAuthState("needed");
}

// -- refresh loop --------------------------------------------------------------------

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => {
    if (document.hidden) {
      waitingForVisible = true;
    } else {
      refresh();
    }
  }, REFRESH_MS);
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  try {
    const [response, timeline] = await Promise.all([api("GET", "admin/workers"),
      readTimeline()]);
    if (response.ok) {
      const data = await response.json();
      if (mine !== generation) return;
      render(data, timeline);
      markFresh(new Date());
      clearBanner();
      setAuthState(readToken() ? "token" : "open");
    } else {
      const message = await errorText(response);
      if (mine !== generation) return;
      if (response.status === 401 || response.status === 403) {
        authFailed(response.status, message);
        return; // polling resumes when a token is entered
      }
      showBanner(`The hub answered HTTP ${response.status}.`,
        `${message || "No worker status."} Retrying every ${REFRESH_MS / 1000} s.`);
      markStale("(stale: the last refresh failed)");
    }
  } catch (err) {
    if (mine !== generation) return;
    const shown = lastGood ? ` The table shows data from ${clock(lastGood)}.` : "";
    if (err instanceof SyntaxError) {
      showBanner("Unexpected answer from the hub.",
        `It was not worker status JSON. Retrying every ${REFRESH_MS / 1000} s.${shown}`);
    } else {
      showBanner("Cannot reach the hub.",
        `Request failed (${failureText(err)}). Retrying every ${REFRESH_MS / 1000} s.${shown}`);
    }
    markStale("(stale: the hub cannot be reached)");
  }
  if (mine === generation) schedule();
}

// The charts' data; null if this hub cannot give it (the fleet table still works).
async function readTimeline() {
  try {
    const response = await api("GET", "admin/timeline");
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

async function toggleDrain(row) {
  const w = row.worker;
  if (!w) return;
  const name = String(w.name);
  const action = w.draining ? "undrain" : "drain";
  if (action === "drain" && !window.confirm(
    `Drain worker "${name}"?\n\nThe hub stops sending it new requests; ` +
    "requests in flight finish.")) {
    return;
  }
  row.button.disabled = true;
  try {
    const response = await api("POST",
      `admin/workers/${encodeURIComponent(name)}/${action}`);
    if (response.ok) {
      notify(action === "drain"
        ? `Worker ${name} is draining: no new requests are sent to it.`
        : `Worker ${name} is back in rotation.`, false);
    } else {
      const message = await errorText(response);
      if (response.status === 401 || response.status === 403) {
        authFailed(response.status, message);
        return;
      }
      notify(`Could not ${action} worker ${name} (HTTP ${response.status})` +
        `${message ? `: ${message}` : "."}`, true);
    }
  } catch (err) {
    notify(`Could not ${action} worker ${name}: ${failureText(err)}.`, true);
  } finally {
    row.button.disabled = false;
  }
  refresh();
}

// -- wiring --------------------------------------------------------------------------

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.input.value.trim().replace(/^Bearer\s+/i, "");
  ui.input.value = "";
  if (!token) return;
  storeToken(token);
  clearBanner();
  refresh();
});

ui.forget.addEventListener("click", () => {
  forgetToken();
  clearFleet("Token forgotten.");
  ui.notice.hidden = true;
  refresh();
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && waitingForVisible) {
    waitingForVisible = false;
    refresh();
  }
});

refresh();
