// The journal console: plain JavaScript over the bus's JSON API (GET /stats, GET /events,
// GET /events/<id>, POST /events/replay). No framework, no build step, nothing fetched
// from elsewhere. Every value from the journal goes into the page as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = ["status", "tag", "route", "since", "until"];
const ROUTES_EVERY_MS = 5000;
let cursor = null;
let openId = null;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 23) + "Z" : "";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor(s % 86400 / 3600)).padStart(2, "0")}h`;
}

// With BUS_TOKENS the journal API wants a token with @journal; it lives in this tab's
// sessionStorage only, never in the page, a cookie or the URL.
function token() {
  return sessionStorage.getItem("busToken") || "";
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const response = await fetch(path, { ...options, headers });
  const payload = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(payload.error || `${response.status} ${response.statusText}`);
  return payload;
}

function say(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
}

async function loadRoutes() {
  try {
    const data = await api("stats");
    const body = $("routes").tBodies[0];
    body.replaceChildren(...data.routes.map(routeRow));
    $("refreshed").textContent = `updated ${when(data.at)}`;
  } catch (err) {
    $("refreshed").textContent = `stats unavailable: ${err.message}`;
  }
}

function routeRow(r) {
  const row = el("tr");
  row.dataset.route = r.route;
  row.append(el("td", r.route), el("td", r.backlog, "num"), el("td", r.retrying, "num"), el("td", r.dead, "num"),
             el("td", r.delivered_last_minute, "num"), el("td", r.delivered_last_hour, "num"),
             el("td", age(r.oldest_waiting_seconds)), endpointCell(r));
  return row;
}

// A breaker per endpoint (the rendered origin and path): "ok", or one line per failing endpoint.
function endpointCell(r) {
  const cell = el("td", r.endpoint === "ok" ? "ok" : `${r.endpoints_failing} failing`, r.endpoint);
  for (const e of r.endpoints || []) {
    const held = e.held ? `, ${e.held} held back (oldest ${age(e.oldest_held_seconds)})` : "";
    const scope = e.scope === "origin" ? " (every path: no connection)" : "";
    const line = el("div", `${e.endpoint}${scope}: failing${e.failing_since ? " since " + when(e.failing_since) : ""}, ` +
                           `${e.failures} in a row, breaker ${e.breaker}${held}`, "endpoint-state");
    line.dataset.endpoint = e.endpoint;
    cell.append(line);
  }
  return cell;
}

function filterValues() {
  const values = {};
  for (const name of FILTERS) {
    const value = $(name).value.trim();
    if (value) values[name] = value;
  }
  return values;
}

async function search(more) {
  const params = new URLSearchParams(filterValues());
  if (!more) {
    cursor = null;
    history.replaceState(null, "", `?${params}`);
  } else if (cursor) {
    params.set("cursor", cursor);
  }
  params.set("limit", "50");
  try {
    const page = await api(`events?${params}`);
    const body = $("events").tBodies[0];
    if (!more) body.replaceChildren();
    body.append(...page.events.map(eventRow));
    cursor = page.cursor;
    $("more").hidden = !cursor;
    $("empty").hidden = body.rows.length > 0;
    $("select-all").checked = false;
    updateReplayButton();
    // A tier or shard that did not answer is said, so a short list is not taken for all.
    const missing = Object.values(page.unavailable || {});
    if (missing.length) say(`${missing.join("; ")}: showing only what answered`, true);
    else if (!more) say(`${body.rows.length}${cursor ? "+" : ""} events`);
  } catch (err) {
    say(err.message, true);
  }
}

function eventRow(e) {
  const row = el("tr");
  row.dataset.id = e.id;
  row.dataset.status = e.status;
  const pick = el("td");
  // A fan-out event (listed by its route's own name) is replayed as its dead destinations' copies.
  const dests = e.destinations || [];
  if (e.status === "dead" || dests.some((d) => d.status === "dead")) {
    const box = el("input");
    box.type = "checkbox";
    box.className = "pick";
    box.value = e.id;
    box.title = "select for replay";
    box.addEventListener("click", (ev) => ev.stopPropagation());
    box.addEventListener("change", updateReplayButton);
    pick.append(box);
  }
  const status = el("td", e.status, `status status-${e.status}`);
  for (const d of dests) status.append(el("div", `${d.name}: ${d.status}`, `destination status-${d.status}`));
  row.append(pick, el("td", when(e.received)), el("td", e.tag), el("td", e.route),
             status, el("td", e.attempts, "num"), el("td", e.last));
  if (e.id === openId) row.classList.add("open");
  row.addEventListener("click", () => openEvent(e.id));
  return row;
}

function selectedIds() {
  return [...document.querySelectorAll("#events input.pick:checked")].map((box) => box.value);
}

function updateReplayButton() {
  const n = selectedIds().length;
  $("replay").disabled = n === 0;
  $("replay").textContent = n ? `Replay ${n} selected dead event${n > 1 ? "s" : ""}` : "Replay selected dead events";
}

async function openEvent(id) {
  openId = id;
  for (const row of $("events").tBodies[0].rows) row.classList.toggle("open", row.dataset.id === id);
  try {
    const e = await api(`events/${encodeURIComponent(id)}`);
    // One destination's copy of a fan-out event (<event id>.<destination>): the event's own status, derived
    // from every destination's, and each destination's status and attempts go beside the copy's.
    // A fan-out event opened by its own id is that whole already.
    const whole = e.destinations ? e
      : id.includes(".") ? await api(`events/${encodeURIComponent(id.split(".")[0])}`).catch(() => null) : null;
    $("detail-id").textContent = e.id;
    const fields = $("detail-fields");
    fields.replaceChildren();
    for (const [name, value] of [["tag", e.tag], ["route", e.route], ["status", e.status],
                                 ["received", when(e.received)], ["attempts", e.attempts], ["last", e.last]]) {
      fields.append(el("dt", name), el("dd", value, name === "status" ? `status status-${value}` : ""));
    }
    if (whole && whole.destinations) {
      if (whole !== e) fields.append(el("dt", "event"), el("dd", whole.status, `status status-${whole.status}`));
      fields.append(el("dt", "destinations"),
                    el("dd", whole.destinations.map((d) => `${d.name}: ${d.status} (${d.attempts})`).join(", ")));
    }
    $("detail-body").textContent = typeof e.body === "string" ? e.body : JSON.stringify(e.body, null, 2);
    $("detail-headers").textContent = Object.entries(e.headers).map(([k, v]) => `${k}: ${v}`).join("\n") || "(none)";
    $("detail-attempts").tBodies[0].replaceChildren(...e.attempt_log.map((a) => {
      const row = el("tr");
      row.append(el("td", a.attempt), el("td", when(a.at)), el("td", `${(a.duration || 0).toFixed(3)}s`, "num"),
                 el("td", a.status_code || a.error || ""), el("td", (a.response || a.reason || "").slice(0, 300)));
      return row;
    }));
    $("detail").hidden = false;
  } catch (err) {
    say(err.message, true);
  }
}

async function replaySelected() {
  const ids = selectedIds();
  if (!ids.length) return;
  $("replay").disabled = true;
  try {
    const result = await api("events/replay", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ids, status: "dead" }),
    });
    await Promise.all([loadRoutes(), openId ? openEvent(openId) : null, search(false)]);
    say(`replayed ${result.replayed} of ${ids.length} selected` +
        (result.unroutable ? `; ${result.unroutable} skipped: their route no longer exists` : ""));
  } catch (err) {
    say(`replay failed: ${err.message}`, true);
    updateReplayButton();
  }
}

function start() {
  const query = new URLSearchParams(location.search);
  for (const name of FILTERS) if (query.has(name)) $(name).value = query.get(name);
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); search(false); });
  $("more").addEventListener("click", () => search(true));
  $("replay").addEventListener("click", replaySelected);
  $("select-all").addEventListener("change", (ev) => {
    for (const box of document.querySelectorAll("#events input.pick")) box.checked = ev.target.checked;
    updateReplayButton();
  });
  $("token").addEventListener("change", (ev) => {
    sessionStorage.setItem("busToken", ev.target.value.trim());
    ev.target.value = "";
    loadRoutes();
    search(false);
  });
  loadRoutes();
  setInterval(loadRoutes, ROUTES_EVERY_MS);
  search(false);
}

document.addEventListener("DOMContentLoaded", start);
