// spokehub status page: polls GET admin/workers every 2 s and renders the fleet.
//
// Worker names, details and model names can come from remote agents, so nothing
// here builds HTML from strings: every value is set as text.
// The admin token lives in sessionStorage (this tab only) and travels only in the
// Authorization header, never in a URL.

const REFRESH_MS = 2000;
const TIMEOUT_MS = 5000;
const TOKEN_KEY = "spokehub.adminToken";
const NA = ["\u2014", "na"];

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
  totals: byId("totals"),
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
  "inflight", "latency", "ejected"];
const NUMERIC = new Set(["slots", "vram", "inflight", "latency"]);

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

function updateRow(row, w) {
  const name = String(w.name);
  row.worker = w;
  row.tr.classList.toggle("down", !w.healthy);
  row.tr.classList.toggle("draining", Boolean(w.draining));
  fill(row.name, [[name], [w.url, "detail"]]);
  const c = row.cells;
  fill(c.kind, [[w.kind]]);
  fill(c.source, [[w.source]]);
  fill(c.health, [w.healthy ? ["Up", "badge ok"] : ["Down", "badge bad"], [w.detail, "detail"]]);
  fill(c.rotation, [w.draining ? ["Draining", "badge warn"] : ["In rotation", "badge ok"]]);
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
  const ejected = list(w.ejected_for_models);
  fill(c.ejected, ejected.length
    ? [["Ejected", "badge bad"], [ejected.join(", "), "detail"]] : [["none", "muted"]]);
  const verb = w.draining ? "Undrain" : "Drain";
  fill(row.button, [[verb], [` worker ${name}`, "visually-hidden"]]);
  row.button.classList.toggle("danger", !w.draining);
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

function render(data) {
  const workers = Array.isArray(data && data.workers) ? data.workers : [];
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
    updateRow(row, w);
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
}

function clearFleet(why) {
  for (const row of rows.values()) row.tr.remove();
  rows.clear();
  ui.empty.textContent = why;
  ui.empty.hidden = false;
  for (const dd of [ui.healthy, ui.inflight, ui.draining, ui.breakers, ui.budget]) {
    fill(dd, [["\u2013"]]);
  }
}

function markFresh(now) {
  lastGood = now;
  ui.updatedTime.textContent = clock(now);
  ui.updatedTime.dateTime = now.toISOString();
  ui.updatedNote.textContent = `(refreshes every ${REFRESH_MS / 1000} s)`;
  for (const node of [ui.updated, ui.table, ui.totals]) node.classList.remove("stale");
}

function markStale(note) {
  ui.updatedNote.textContent = note;
  for (const node of [ui.updated, ui.table, ui.totals]) node.classList.add("stale");
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
    const response = await api("GET", "admin/workers");
    if (response.ok) {
      const data = await response.json();
      if (mine !== generation) return;
      render(data);
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
