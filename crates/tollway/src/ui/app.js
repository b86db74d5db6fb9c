// Tollway's admin UI. Everything it shows comes from the admin API (/admin/...) with the master
// key, which stays in this tab's session storage. Data is only ever written into the page as text
// (textContent, never HTML), so names and error messages cannot inject markup.
"use strict";

const STORE = "tollway.masterKey";
const VIEWS = ["overview", "models", "keys", "requests", "usage"];
const REFRESH_MS = 5000;

const $ = (sel) => document.querySelector(sel);
let refreshTimer = null;

// ---- the API ----

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Calls the admin API; the parsed JSON (or text), or an ApiError naming what went wrong. */
async function api(method, path, body) {
  const init = { method, headers: authHeaders(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `The gateway did not answer (${e.message}).`);
  }
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json().catch(() => null) : await resp.text();
  if (!resp.ok) {
    const err = data && data.error;
    let msg = (err && (err.message || err)) || (typeof data === "string" && data) || "";
    if (err && Array.isArray(err.errors)) msg = `${msg} ${err.errors.join("; ")}`;
    msg = msg || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, String(msg));
  }
  return data;
}

// ---- page helpers ----

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function cell(row, text, cls) {
  const td = el("td", text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function say(message, isError) {
  const s = $("#status");
  s.textContent = message || "";
  s.className = isError ? "error" : "";
}

function fail(e) {
  if (e instanceof ApiError && e.status === 401) {
    signOut("The master key was refused; sign in again.");
    return;
  }
  say(e.message, true);
}

function number(n) {
  return n === null || n === undefined ? "" : Number(n).toLocaleString("en-US");
}

function dollars(v) {
  return Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 });
}

function when(ms) {
  return ms ? new Date(ms).toISOString().slice(0, 16).replace("T", " ") : "";
}

// ---- signing in and out ----

/** Signs in with `key` (typed), or with the key this tab holds, or none (a gateway without a
 * master key). */
async function signIn(key) {
  const typed = key !== undefined;
  const held = sessionStorage.getItem(STORE);
  if (typed) sessionStorage.setItem(STORE, key);
  try {
    await api("GET", "/admin/health");
  } catch (e) {
    sessionStorage.removeItem(STORE);
    const refused = e.status === 401 || e.status === 403;
    let message = e.message;
    if (refused) {
      message = typed ? "That key is not the master key." : held ? "Sign in again." : "";
    }
    showSignIn(message);
    return;
  }
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#sign-out").hidden = !sessionStorage.getItem(STORE);
  say("");
  show(location.hash.slice(1) || "overview");
}

function showSignIn(message) {
  for (const v of VIEWS) $(`#${v}`).hidden = true;
  $("#nav").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  say(message || "", Boolean(message));
  $("#master-key").value = "";
  $("#master-key").focus();
}

function signOut(message) {
  sessionStorage.removeItem(STORE);
  stopRefresh();
  showSignIn(message);
}

// ---- views ----

function show(view) {
  if (!VIEWS.includes(view)) view = "overview";
  for (const v of VIEWS) $(`#${v}`).hidden = v !== view;
  for (const b of document.querySelectorAll("#nav button")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
  say("");
  stopRefresh();
  if (view === "overview") {
    loadHealth();
    refreshTimer = setInterval(() => {
      if (!document.hidden) loadHealth();
    }, REFRESH_MS);
  } else if (view === "models") {
    loadModels();
  } else if (view === "keys") {
    loadKeys();
  } else if (view === "requests") {
    loadRequests();
  } else {
    loadUsage();
  }
}

function stopRefresh() {
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = null;
}

// overview: every deployment's health

async function loadHealth() {
  let data;
  try {
    data = await api("GET", "/admin/health");
  } catch (e) {
    return fail(e);
  }
  const body = $("#health tbody");
  body.replaceChildren();
  for (const d of data.deployments || []) {
    const tr = el("tr");
    tr.dataset.deployment = d.deployment;
    cell(tr, d.deployment);
    const state = cell(tr, "");
    state.appendChild(el("span", d.state.replace("_", " "), { class: `badge ${d.state}` }));
    cell(tr, number(d.outstanding), "num");
    cell(tr, number(d.successes), "num");
    cell(tr, number(d.failures), "num");
    cell(tr, d.ewma_ttft_ms === null ? "" : Number(d.ewma_ttft_ms).toFixed(1), "num");
    cell(tr, d.cooldown_remaining_ms ? (d.cooldown_remaining_ms / 1000).toFixed(1) : "", "num");
    cell(tr, d.last_error || "", "error");
    body.appendChild(tr);
  }
  if (!body.children.length) {
    const tr = el("tr");
    cell(tr, "No deployments configured.").colSpan = 8;
    body.appendChild(tr);
  }
}

async function reloadConfig() {
  try {
    const r = await api("POST", "/admin/reload");
    const n = Array.isArray(r.models) ? r.models.length : r.models;
    say(n === undefined ? "The config was reloaded." : `The config was reloaded: ${n} models.`);
    loadHealth();
  } catch (e) {
    fail(e);
  }
}

async function clearCache() {
  try {
    const r = await api("DELETE", "/admin/cache");
    const shared = r.shared_cleared === undefined ? "" : `, ${number(r.shared_cleared)} from Redis`;
    say(`Cleared ${number(r.cleared)} kept answers${shared}.`);
  } catch (e) {
    fail(e);
  }
}

// models: the groups, their deployments and prices, the routers

async function loadModels() {
  let data;
  try {
    data = await api("GET", "/admin/models");
  } catch (e) {
    return fail(e);
  }
  const body = $("#model-list tbody");
  body.replaceChildren();
  for (const m of data.models || []) {
    m.deployments.forEach((d, i) => {
      const tr = el("tr");
      tr.dataset.model = m.name;
      cell(tr, i === 0 ? m.name : "");
      cell(tr, i === 0 ? m.strategy : "");
      cell(tr, d.deployment);
      cell(tr, d.input_per_million ?? "unpriced", "num");
      cell(tr, d.output_per_million ?? "", "num");
      cell(tr, number(d.rpm), "num");
      cell(tr, number(d.tpm), "num");
      cell(tr, number(d.weight), "num");
      cell(tr, i === 0 ? (m.fallbacks || []).join(", ") : "");
      body.appendChild(tr);
    });
  }
  const routers = $("#router-list tbody");
  routers.replaceChildren();
  for (const r of data.routers || []) {
    const tr = el("tr");
    cell(tr, r.name);
    cell(tr, r.kind);
    const among =
      r.kind === "learned"
        ? r.candidates.join(", ")
        : `${r.rules.map((x) => `${x.name} → ${x.to}`).join("; ")}; otherwise ${r.default}`;
    cell(tr, among);
    routers.appendChild(tr);
  }
  if (!routers.children.length) {
    const tr = el("tr");
    cell(tr, "No routers configured.").colSpan = 3;
    routers.appendChild(tr);
  }
}

// keys: list, create, rotate, revoke

async function loadKeys() {
  let data;
  try {
    data = await api("GET", "/admin/keys");
  } catch (e) {
    return fail(e);
  }
  const body = $("#key-list tbody");
  body.replaceChildren();
  for (const k of data.data || []) {
    const tr = el("tr");
    tr.dataset.keyId = k.id;
    cell(tr, k.name);
    cell(tr, k.id).classList.add("mono");
    cell(tr, k.prefix);
    cell(tr, k.team || "");
    cell(tr, (k.models || []).length ? k.models.join(", ") : "all");
    cell(tr, number(k.rpm), "num");
    cell(tr, number(k.tpm), "num");
    cell(tr, k.budget_usd ? `$${dollars(k.budget_usd)} ${k.budget_period || ""}` : "");
    cell(tr, "").appendChild(el("span", k.status, { class: `badge ${k.status}` }));
    cell(tr, when(k.created_ms));
    const actions = cell(tr, "");
    if (k.source === "config") {
      actions.appendChild(el("span", "config file", { class: "hint", title: `keys.${k.name}` }));
    } else if (k.status === "active") {
      actions.append(
        actionButton("Rotate", "row-action", () => rotateKey(k)),
        " ",
        actionButton("Revoke", "danger", () => revokeKey(k)),
      );
    }
    body.appendChild(tr);
  }
  if (!body.children.length) {
    const tr = el("tr");
    cell(tr, "No keys yet.").colSpan = 11;
    body.appendChild(tr);
  }
}

/** A button that asks once more ("Revoke?") before it acts: no modal dialogs. */
function actionButton(label, cls, act) {
  const b = el("button", label, { type: "button", class: cls });
  let armed = null;
  b.addEventListener("click", async () => {
    if (!armed) {
      b.textContent = `${label}? Click again`;
      armed = setTimeout(() => {
        armed = null;
        b.textContent = label;
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.disabled = true;
    await act();
  });
  return b;
}

function showSecret(name, secret) {
  $("#new-secret-name").textContent = name;
  $("#new-secret-value").textContent = secret;
  $("#new-secret").hidden = false;
}

function optionalInt(form, name) {
  const v = form.elements[name].value.trim();
  return v === "" ? undefined : Number.parseInt(v, 10);
}

async function createKey(ev) {
  ev.preventDefault();
  const f = ev.target;
  const body = { name: f.elements.name.value.trim() };
  const team = f.elements.team.value.trim();
  if (team) body.team = team;
  const models = f.elements.models.value
    .split(",")
    .map((m) => m.trim())
    .filter(Boolean);
  if (models.length) body.models = models;
  for (const n of ["rpm", "tpm", "expires_in_days"]) {
    const v = optionalInt(f, n);
    if (v !== undefined) body[n] = v;
  }
  const budget = f.elements.budget_usd.value.trim();
  if (budget) {
    body.budget_usd = budget;
    body.budget_period = f.elements.budget_period.value;
  }
  try {
    const k = await api("POST", "/admin/keys", body);
    showSecret(k.name, k.key);
    f.reset();
    say(`Created ${k.id}.`);
    loadKeys();
  } catch (e) {
    fail(e);
  }
}

async function rotateKey(k) {
  try {
    const r = await api("POST", `/admin/keys/${encodeURIComponent(k.id)}/rotate`);
    showSecret(k.name, r.key);
    say(`Rotated ${k.id}: the old secret no longer works.`);
  } catch (e) {
    fail(e);
  }
  loadKeys();
}

async function revokeKey(k) {
  try {
    await api("POST", `/admin/keys/${encodeURIComponent(k.id)}/revoke`);
    say(`Revoked ${k.id}.`);
  } catch (e) {
    fail(e);
  }
  loadKeys();
}

// requests: the ledger, newest first, a page at a time

let requestsNext = null;

/** Loads the first page of the request log (`more`: the next, older page). */
async function loadRequests(ev, more) {
  if (ev) ev.preventDefault();
  const f = $("#requests-form");
  const q = new URLSearchParams({ limit: "50" });
  for (const n of ["key", "team", "model", "status"]) {
    const v = f.elements[n].value.trim();
    if (v) q.set(n, v);
  }
  if (more && requestsNext) q.set("before", requestsNext);
  let data;
  try {
    data = await api("GET", `/admin/requests?${q}`);
  } catch (e) {
    return fail(e);
  }
  const body = $("#request-log tbody");
  if (!more) body.replaceChildren();
  for (const r of data.data || []) {
    const tr = el("tr");
    tr.dataset.requestId = r.request_id;
    cell(tr, r.time.slice(0, 19).replace("T", " "));
    cell(tr, r.request_id).classList.add("mono");
    cell(tr, r.key_id || "master").classList.add("mono");
    cell(tr, r.model);
    cell(tr, r.deployment || "");
    const st = cell(tr, "", "num");
    st.appendChild(el("span", r.status, { class: `badge ${r.status < 400 ? "healthy" : "cooling_down"}` }));
    cell(tr, number(r.attempts), "num");
    cell(tr, number(r.latency_ms), "num");
    cell(tr, number(r.input_tokens), "num");
    cell(tr, number(r.output_tokens), "num");
    cell(tr, r.cost_usd === null ? "unknown" : `${r.cost_usd}${r.cost_estimated ? " (est.)" : ""}`, "num");
    const flags = [r.stream ? "stream" : "", r.cache_hit ? "cache hit" : "", r.api].filter(Boolean);
    cell(tr, flags.join(", "), "hint");
    body.appendChild(tr);
  }
  if (!body.children.length) {
    const tr = el("tr");
    cell(tr, "No requests match.").colSpan = 12;
    body.appendChild(tr);
  }
  requestsNext = data.next;
  $("#requests-more").hidden = !requestsNext;
}

// usage: spend by any grouping, the month-end forecast, spend per day

function usageQuery() {
  const f = $("#usage-form");
  const group = [...f.querySelectorAll('input[name="group"]:checked')].map((c) => c.value);
  const q = new URLSearchParams();
  if (group.length) q.set("group_by", group.join(","));
  for (const n of ["since", "until"]) {
    if (f.elements[n].value) q.set(n, f.elements[n].value);
  }
  return { group, q };
}

const MEASURES = [
  ["requests", "Requests"],
  ["input_tokens", "Input tokens"],
  ["output_tokens", "Output tokens"],
  ["cache_hits", "Cache hits"],
  ["cost_usd", "Cost (USD)"],
];

async function loadUsage(ev) {
  if (ev) ev.preventDefault();
  const { group, q } = usageQuery();
  let data;
  try {
    data = await api("GET", `/admin/usage?${q}`);
  } catch (e) {
    return fail(e);
  }
  const cols = data.group_by || group;
  const head = el("tr");
  for (const c of cols) head.appendChild(el("th", c));
  for (const [, label] of MEASURES) head.appendChild(el("th", label, { class: "num" }));
  $("#usage-table thead").replaceChildren(head);
  const body = $("#usage-table tbody");
  body.replaceChildren();
  for (const r of data.rows || []) {
    const tr = el("tr");
    for (const c of cols) cell(tr, r[c] === null || r[c] === undefined ? "—" : r[c]);
    for (const [m] of MEASURES) cell(tr, m === "cost_usd" ? r[m] : number(r[m]), "num");
    body.appendChild(tr);
  }
  const foot = el("tr");
  if (data.total) {
    const label = cell(foot, "Total");
    label.colSpan = Math.max(cols.length, 1);
    if (!cols.length) foot.replaceChildren();
    for (const [m] of MEASURES) {
      cell(foot, m === "cost_usd" ? data.total[m] : number(data.total[m]), "num");
    }
  }
  $("#usage-table tfoot").replaceChildren(foot);
  const fc = data.forecast;
  $("#forecast").textContent = fc
    ? `${fc.month}: $${fc.month_to_date_usd} so far, about $${fc.forecast_month_end_usd} by month end (${fc.basis}).`
    : "";
  drawDays(cols.includes("day") ? data.rows || [] : []);
}

/** Spend per day as bars (an SVG drawn element by element, no markup strings). */
function drawDays(rows) {
  const chart = $("#chart");
  chart.replaceChildren();
  const byDay = new Map();
  for (const r of rows) {
    if (!r.day) continue;
    byDay.set(r.day, (byDay.get(r.day) || 0) + Number(r.cost_usd || 0));
  }
  if (!byDay.size) return;
  const days = [...byDay.keys()].sort();
  const max = Math.max(...byDay.values()) || 1;
  const NS = "http://www.w3.org/2000/svg";
  const w = 40, h = 120, pad = 18;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", String(days.length * w + 20));
  svg.setAttribute("height", String(h + 2 * pad));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Cost per day");
  days.forEach((d, i) => {
    const v = byDay.get(d);
    const bh = Math.max(1, (v / max) * h);
    const rect = document.createElementNS(NS, "rect");
    rect.setAttribute("x", String(10 + i * w + 6));
    rect.setAttribute("y", String(pad + h - bh));
    rect.setAttribute("width", String(w - 12));
    rect.setAttribute("height", String(bh));
    const title = document.createElementNS(NS, "title");
    title.textContent = `${d}: $${v.toFixed(6)}`;
    rect.appendChild(title);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", String(10 + i * w + 4));
    label.setAttribute("y", String(pad + h + 12));
    label.textContent = d.slice(5);
    svg.append(rect, label);
  });
  chart.appendChild(svg);
}

async function downloadCsv() {
  const { q } = usageQuery();
  q.set("format", "csv");
  try {
    const text = await api("GET", `/admin/usage?${q}`);
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a", "", { href: url, download: "tollway-usage.csv" });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) {
    fail(e);
  }
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("#master-key").value.trim());
  });
  $("#sign-out").addEventListener("click", () => signOut("Signed out."));
  for (const b of document.querySelectorAll("#nav button")) {
    b.addEventListener("click", () => show(b.dataset.view));
  }
  $("#reload-config").addEventListener("click", reloadConfig);
  $("#clear-cache").addEventListener("click", clearCache);
  $("#create-key").addEventListener("submit", createKey);
  $("#copy-secret").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("#new-secret-value").textContent);
      say("Copied.");
    } catch {
      say("Copying was refused by the browser: select the secret and copy it.", true);
    }
  });
  $("#hide-secret").addEventListener("click", () => {
    $("#new-secret-value").textContent = "";
    $("#new-secret").hidden = true;
  });
  $("#requests-form").addEventListener("submit", loadRequests);
  $("#requests-more").addEventListener("click", () => loadRequests(null, true));
  $("#usage-form").addEventListener("submit", loadUsage);
  $("#usage-csv").addEventListener("click", downloadCsv);
  // a gateway without a master key needs none; otherwise the key this tab already holds
  signIn();
});
