// runplane dashboard: a client of the public HTTP API (no framework, no build step).
// Every call sends the API key kept in this tab's sessionStorage; every value is shown with
// textContent, never as HTML.
"use strict";

const KEY = "runplane.apiKey";
const API = new URL("..", window.location.href).href.replace(/\/$/, ""); // served at <root>/ui/
const state = { thread: null, watching: null, stream: null, authNeeded: false };

const $ = (id) => document.getElementById(id);

class HttpError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; }
}

function headers(extra) {
  const key = sessionStorage.getItem(KEY);
  return Object.assign({ accept: "application/json" }, key ? { "x-api-key": key } : {}, extra || {});
}

async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "content-type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(API + path, init);
  if (response.status === 401) { askForKey("This server needs an API key."); throw new HttpError(401, "unauthorized"); }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new HttpError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function statusCell(status) { return el("td", status, `status status-${status}`); }
function short(id) { return id ? id.slice(0, 8) : "–"; }
function when(iso) { return iso ? new Date(iso).toLocaleTimeString() : "–"; }
function showError(message) { $("error").textContent = message || ""; }

function duration(run) {
  if (!run.started_at) return "–";
  const end = run.ended_at ? new Date(run.ended_at) : (run.status === "running" ? new Date() : new Date(run.updated_at));
  const seconds = Math.max(0, (end - new Date(run.started_at)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

// -- the key ------------------------------------------------------------------------------------

function askForKey(message) {
  state.authNeeded = true;
  $("key-panel").hidden = false;
  $("main").hidden = true;
  $("key-message").textContent = message || "";
  $("api-key").focus();
}

function useKey(key) {
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  state.authNeeded = false;
  $("key-panel").hidden = true;
  $("main").hidden = false;
  $("forget-key").hidden = !sessionStorage.getItem(KEY);
  Promise.all([loadAssistants(), loadCrons()]).then(refreshAll).catch((e) => showError(e.message));
}

// -- panels -------------------------------------------------------------------------------------

async function loadQueue() {
  try {
    const q = await api("GET", "/runplane/queue");
    $("queue-pending").textContent = q.pending;
    $("queue-running").textContent = q.running;
    $("queue-workers").textContent = q.busy_workers;
  } catch (e) { /* another server, or not allowed: leave the dashes */ }
}

async function loadThreads() {
  const status = $("thread-status").value;
  const body = { limit: 100, sort_by: "updated_at", sort_order: "desc" };
  if (status) body.status = status;
  const threads = await api("POST", "/threads/search", body);
  const needle = $("thread-search").value.trim().toLowerCase();
  const tbody = $("threads").querySelector("tbody");
  tbody.replaceChildren();
  for (const t of threads) {
    const meta = JSON.stringify(t.metadata || {});
    if (needle && !t.thread_id.includes(needle) && !meta.toLowerCase().includes(needle)) continue;
    const row = el("tr");
    row.dataset.threadId = t.thread_id;
    if (t.thread_id === state.thread) row.className = "selected";
    row.append(el("td", short(t.thread_id)), statusCell(t.status), el("td", when(t.updated_at)), el("td", meta, "meta"));
    row.addEventListener("click", () => selectThread(t.thread_id));
    tbody.append(row);
  }
}

function selectThread(threadId) {
  state.thread = threadId;
  $("runs-thread").textContent = threadId;
  for (const row of $("threads").querySelectorAll("tbody tr")) {
    row.className = row.dataset.threadId === threadId ? "selected" : "";
  }
  loadRuns();
}

async function threadRuns(threadId) {
  try {
    return await api("GET", `/runplane/threads/${threadId}/runs?limit=50`);
  } catch (e) {
    if (e.status === 401 || e.status === 404 && !(await threadExists(threadId))) throw e;
    // Not a runplane server, or custom auth keeps the extension closed: the standard fields only.
    return api("GET", `/threads/${threadId}/runs?limit=50`);
  }
}

async function threadExists(threadId) {
  try { await api("GET", `/threads/${threadId}`); return true; } catch (e) { return false; }
}

async function loadRuns() {
  const threadId = state.thread;
  if (!threadId) return;
  const runs = await threadRuns(threadId);
  if (threadId !== state.thread) return;
  const tbody = $("runs").querySelector("tbody");
  tbody.replaceChildren();
  for (const run of runs) {
    const row = el("tr");
    row.dataset.runId = run.run_id;
    const usage = run.usage || {};
    row.append(
      el("td", short(run.run_id)), el("td", (run.kwargs && run.kwargs.graph_id) || run.assistant_id),
      statusCell(run.status),
      el("td", run.attempt ?? "–"), el("td", duration(run)),
      el("td", usage.total_tokens ? `${usage.total_tokens} (${usage.input_tokens}+${usage.output_tokens})` : "–"),
      el("td", run.model_name || "–"),
    );
    const actions = el("td");
    const watch = el("button", "Watch", "watch");
    watch.addEventListener("click", (ev) => { ev.stopPropagation(); watchRun(run.thread_id, run.run_id); });
    actions.append(watch);
    if (run.status === "pending" || run.status === "running") {
      for (const action of ["interrupt", "rollback"]) {
        const button = el("button", action === "interrupt" ? "Interrupt" : "Rollback", `cancel-${action}`);
        button.addEventListener("click", (ev) => { ev.stopPropagation(); cancelRun(run, action); });
        actions.append(button);
      }
    }
    row.append(actions);
    tbody.append(row);
  }
}

async function cancelRun(run, action) {
  try {
    await api("POST", `/threads/${run.thread_id}/runs/${run.run_id}/cancel?action=${action}&wait=false`);
    showError("");
  } catch (e) { showError(`cancel failed: ${e.message}`); }
  loadRuns();
}

async function loadAssistants() {
  const list = await api("POST", "/assistants/search", { limit: 100 });
  const ul = $("assistants");
  ul.replaceChildren(...list.map((a) => el("li", a.name && a.name !== a.graph_id ? `${a.graph_id} (${a.name})` : a.graph_id)));
}

// Crons are shown once the server has them; until then the panel stays hidden.
async function loadCrons() {
  try {
    const crons = await api("POST", "/runs/crons/search", { limit: 100 });
    $("crons-panel").hidden = false;
    $("crons").replaceChildren(...crons.map((c) => el("li", `${c.schedule}  ${c.assistant_id || ""}  next ${when(c.next_run_date)}`)));
  } catch (e) { $("crons-panel").hidden = true; }
}

// -- live events: the API's own SSE, read with fetch (EventSource cannot send the key) ------------

async function watchRun(threadId, runId) {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  state.watching = runId;
  $("events-run").textContent = runId;
  $("events").replaceChildren();
  setStreamState("connecting");
  try {
    const response = await fetch(`${API}/threads/${threadId}/runs/${runId}/stream`, {
      headers: headers({ accept: "text/event-stream" }), signal: controller.signal,
    });
    if (!response.ok) throw new HttpError(response.status, response.statusText);
    setStreamState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        showFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    if (state.stream === controller) setStreamState("ended");
  } catch (e) {
    if (e.name !== "AbortError") setStreamState(`failed: ${e.message}`);
  }
  if (state.stream === controller) loadRuns();
}

function showFrame(frame) {
  let event = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue; // heartbeat comments
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const item = el("li");
  item.dataset.event = event;
  item.append(el("span", event, "name"), el("span", data.join("\n").slice(0, 600)));
  const list = $("events");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

function setStreamState(text) { $("events-state").textContent = text; $("events-state").dataset.state = text; }

// -- refresh ------------------------------------------------------------------------------------

async function refreshAll() {
  if (state.authNeeded) return;
  try {
    await Promise.all([loadQueue(), loadThreads(), loadRuns()]);
    showError("");
  } catch (e) {
    if (e.status !== 401) showError(e.message);
  }
}

function start() {
  $("key-form").addEventListener("submit", (ev) => { ev.preventDefault(); useKey($("api-key").value.trim()); });
  $("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY); askForKey(""); });
  $("thread-search").addEventListener("input", () => loadThreads().catch((e) => showError(e.message)));
  $("thread-status").addEventListener("change", () => loadThreads().catch((e) => showError(e.message)));
  $("main").hidden = false;
  $("forget-key").hidden = !sessionStorage.getItem(KEY);
  Promise.all([loadAssistants(), loadCrons()]).then(refreshAll).catch((e) => { if (e.status !== 401) showError(e.message); });
  setInterval(refreshAll, 1500);
}

document.addEventListener("DOMContentLoaded", start);
