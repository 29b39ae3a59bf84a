// pbkv dashboard: renders the snapshots the server pushes on /events (server-sent events).
"use strict";

const PALETTE = ["#1f6feb", "#2da44e", "#8250df", "#bf8700", "#cf222e", "#0a7f8c", "#9a6700"];
const SVG_NS = "http://www.w3.org/2000/svg";
let latest = null;

function $(id) { return document.getElementById(id); }

function text(value) { return value === null || value === undefined ? "–" : String(value); }

function clock(ts) { return new Date(ts * 1000).toISOString().slice(11, 19); }

function colour(name, names) {
  const i = names.indexOf(name);
  return i < 0 ? "#8c959f" : PALETTE[i % PALETTE.length];
}

function shortName(nodes, address) {
  const node = nodes.find((n) => n.address === address);
  return node ? node.name : text(address);
}

function renderHeader(s) {
  const view = s.view;
  $("view-number").textContent = view ? String(view.number) : "–";
  if (!view) { $("view-detail").textContent = s.error || "no view"; return; }
  if (view.note) {  // number 0: no view formed yet; the note says what forms view 1
    $("view-number").textContent = "–";
    $("view-detail").textContent = view.note;
    return;
  }
  const backups = view.backups.map((b) => shortName(s.nodes, b)).join(", ") || "none";
  $("view-detail").textContent =
    `primary ${shortName(s.nodes, view.primary)} · backup ${backups} · ` +
    (view.acknowledged ? "acknowledged" : "not yet acknowledged") +
    (view.backup_synced ? " · backup synced" : "") +
    (view.waiting ? ` · waiting: ${view.waiting}` : "") +
    (view.cluster && view.cluster !== "-" ? ` · cluster ${view.cluster}` : "");
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function actionButton(parent, action, target, label) {
  const b = document.createElement("button");
  b.textContent = label || action;
  b.dataset.action = action;
  b.dataset.target = target;
  parent.appendChild(b);
}

const CERTIFICATE_SOON_S = 14 * 86400;  // the alert PbkvTlsCertificateExpiresSoon's window

function certificate(expires, now) {
  // [text, class] of a node's certificate expiry (null: no TLS, or not known).
  if (expires === null || expires === undefined) return [null, "cert"];
  const left = expires - now;
  const date = new Date(expires * 1000).toISOString().slice(0, 10);
  if (left <= 0) return [`expired ${date}`, "cert cert-soon"];
  const when = left < 2 * 86400 ? `${Math.floor(left / 3600)} h` : `${Math.floor(left / 86400)} d`;
  return [`${when} (${date})`, left < CERTIFICATE_SOON_S ? "cert cert-soon" : "cert"];
}

function renderNodes(s) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  const certificates = s.nodes.some((n) => n.certificate_expires !== null && n.certificate_expires !== undefined);
  $("nodes").classList.toggle("no-cert", !certificates);
  for (const n of s.nodes) {
    const row = document.createElement("tr");
    row.dataset.node = n.name;
    cell(row, n.name);
    cell(row, n.address);
    cell(row, n.state, "state-" + n.state);
    cell(row, n.role, "role-" + n.role);
    cell(row, n.health ? `${text(n.phase)} (${n.health})` : n.phase, n.health ? "state-paused" : "");
    cell(row, n.own_view_note || n.own_view);
    cell(row, n.keys);
    cell(row, n.last_ping_age_s === null ? null : n.last_ping_age_s.toFixed(2) + " s ago");
    cell(row, n.restarts);
    cell(row, ...certificate(n.certificate_expires, s.now));
    const acts = cell(row, "", "acts");
    acts.textContent = "";
    if (s.actions) {
      for (const a of ["kill", "pause", "resume", "restart", "partition"]) actionButton(acts, a, n.name);
    }
    body.appendChild(row);
  }
}

function svg(width, height) {
  const el = document.createElementNS(SVG_NS, "svg");
  el.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return el;
}

function add(parent, tag, attrs, content) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (content !== undefined) el.textContent = content;
  parent.appendChild(el);
  return el;
}

function renderTimeline(s) {
  const views = (s.timeline && s.timeline.views) || [];
  const faults = (s.timeline && s.timeline.faults) || [];
  const W = 960, H = 120, left = 10, right = W - 10;
  const chart = svg(W, H);
  const now = s.now;
  const start = Math.max(views.length ? views[0].ts : now - 60, now - 600);
  const x = (ts) => left + ((Math.max(ts, start) - start) / Math.max(1, now - start)) * (right - left);
  const names = s.nodes.map((n) => n.address);
  views.forEach((v, i) => {
    const end = i + 1 < views.length ? views[i + 1].ts : now;
    if (end < start) return;
    const x0 = x(v.ts), x1 = Math.max(x(end), x0 + 2);
    add(chart, "rect", { x: x0, y: 30, width: x1 - x0, height: 34, fill: colour(v.primary, names), opacity: 0.85 });
    if (x1 - x0 > 40) {
      add(chart, "text", { x: x0 + 4, y: 52, fill: "#fff", "font-size": 13 },
          `v${v.number} ${shortName(s.nodes, v.primary)}`);
    }
    if (v.failover) {
      add(chart, "path", { d: `M${x0 - 6},20 L${x0 + 6},20 L${x0},30 Z`, fill: "#cf222e" });
      add(chart, "text", { x: x0 + 8, y: 18, "font-size": 11, fill: "#cf222e" }, `failover ${clock(v.ts)}`);
    }
  });
  faults.filter((f) => f.ts >= start).forEach((f, i) => {
    const fx = x(f.ts), fy = 80 + (i % 2) * 13;
    add(chart, "line", { x1: fx, x2: fx, y1: 26, y2: fy - 10, stroke: "#1d2330", "stroke-dasharray": "3,2" });
    add(chart, "text", { x: fx + 3, y: fy, "font-size": 11 }, `${f.action} ${f.target} ${clock(f.ts)}`);
  });
  add(chart, "text", { x: left, y: H - 6, "font-size": 11, fill: "#6b7385" }, clock(start));
  add(chart, "text", { x: right, y: H - 6, "font-size": 11, fill: "#6b7385", "text-anchor": "end" }, clock(now));
  $("timeline").replaceChildren(chart);
  const failovers = views.filter((v) => v.failover).length;
  $("failovers").textContent = `${views.length} views, ${failovers} failovers`;
}

function line(chart, points, stroke, dash) {
  if (points.length < 2) return;
  const d = points.map((p, i) => `${i ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(" ");
  add(chart, "path", { d, fill: "none", stroke, "stroke-width": 2, "stroke-dasharray": dash || "" });
}

function renderRates(s) {
  const samples = s.rates || [];
  const W = 960, H = 180, left = 50, right = W - 60, top = 10, bottom = H - 25;
  const chart = svg(W, H);
  if (!samples.length) {
    add(chart, "text", { x: 10, y: 30, fill: "#6b7385" }, s.mode === "cluster" ? "no samples yet" : "throughput needs a local cluster (--dir)");
    $("rates").replaceChildren(chart);
    return;
  }
  const t0 = samples[0].ts, t1 = samples[samples.length - 1].ts;
  const x = (ts) => left + ((ts - t0) / Math.max(1, t1 - t0)) * (right - left);
  const opsMax = Math.max(1, ...samples.map((p) => p.ops_per_s));
  const msMax = Math.max(1, ...samples.map((p) => p.p99_ms || 0));
  const yOps = (v) => bottom - (v / opsMax) * (bottom - top);
  const yMs = (v) => bottom - (v / msMax) * (bottom - top);
  add(chart, "line", { x1: left, x2: right, y1: bottom, y2: bottom, stroke: "#d9dde6" });
  line(chart, samples.map((p) => [x(p.ts), yOps(p.ops_per_s)]), "#1f6feb");
  line(chart, samples.filter((p) => p.p50_ms !== null).map((p) => [x(p.ts), yMs(p.p50_ms)]), "#2da44e", "4,3");
  line(chart, samples.filter((p) => p.p99_ms !== null).map((p) => [x(p.ts), yMs(p.p99_ms)]), "#cf222e", "4,3");
  add(chart, "text", { x: left - 4, y: top + 10, "font-size": 11, "text-anchor": "end" }, `${opsMax.toFixed(0)}`);
  add(chart, "text", { x: left - 4, y: bottom, "font-size": 11, "text-anchor": "end" }, "0");
  add(chart, "text", { x: right + 4, y: top + 10, "font-size": 11 }, `${msMax} ms`);
  const last = samples[samples.length - 1];
  add(chart, "text", { x: left, y: H - 6, "font-size": 12, fill: "#1f6feb" },
      `ops/s ${last.ops_per_s}`);
  add(chart, "text", { x: left + 130, y: H - 6, "font-size": 12, fill: "#2da44e" }, `p50 ≤ ${text(last.p50_ms)} ms`);
  add(chart, "text", { x: left + 260, y: H - 6, "font-size": 12, fill: "#cf222e" }, `p99 ≤ ${text(last.p99_ms)} ms`);
  $("rates").replaceChildren(chart);
}

function render(s) {
  latest = s;
  renderHeader(s);
  renderNodes(s);
  renderTimeline(s);
  renderRates(s);
  $("controls").hidden = !s.actions;
  const notes = s.notes || [];
  $("notes").hidden = notes.length === 0;
  $("notes").textContent = notes.join(" · ");
  $("error").hidden = !s.error;
  $("error").textContent = s.error || "";
  document.body.dataset.viewNumber = s.view && !s.view.note ? String(s.view.number) : "";
}

async function act(action, target) {
  $("action-result").textContent = `${action} ${target}…`;
  const response = await fetch("/api/action", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action, target }),
  });
  const answer = await response.json();
  $("action-result").textContent = answer.result || answer.error || "";
}

document.addEventListener("click", (event) => {
  const b = event.target.closest("button[data-action]");
  if (b) act(b.dataset.action, b.dataset.target);
});

function connect() {
  const events = new EventSource("/events");
  events.onopen = () => { $("connection").textContent = "live"; $("connection").className = "badge live"; };
  events.onmessage = (event) => render(JSON.parse(event.data));
  events.onerror = () => { $("connection").textContent = "reconnecting"; $("connection").className = "badge"; };
}

connect();
