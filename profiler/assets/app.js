// The dashboard: plots of what the daemon's /stats, /history and /insights say, each panel from
// its own narrow query (a failing one says so in its panel; the others keep working). It draws
// the daemon's numbers and does only display arithmetic (scales, sums, per-second rates).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 2000;
const params = new URLSearchParams(location.search);
// How many entries each panel shows (the biggest first); ?n=N asks for more.
const ROWS = Math.min(Math.max(Number(params.get("n")) || 12, 1), 1000);
// "Errors by errno" is about now: failures per second over the last this many seconds.
const ERROR_SECONDS = 10;

// Anything that goes wrong in this script is shown, and kept where a test can read it.
function noteError(msg) {
  document.body.dataset.errors = (document.body.dataset.errors || "") + msg + "\n";
  document.getElementById("status").textContent = msg;
}
window.addEventListener("error", (e) => noteError(String(e.message)));
window.addEventListener("unhandledrejection", (e) => noteError(String(e.reason)));

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtNs(ns) {
  if (ns >= 1e9) return (ns / 1e9).toFixed(2) + " s";
  if (ns >= 1e6) return (ns / 1e6).toFixed(1) + " ms";
  if (ns >= 1e3) return (ns / 1e3).toFixed(1) + " µs";
  return ns + " ns";
}

const fmtInt = (n) => n.toLocaleString("en-US");
const label = (s) => (s.abi && s.abi !== NATIVE ? `${s.name} [${s.abi}]` : s.name);
let NATIVE = "x86_64";

// Horizontal bars: items [{label, value, text, cls, data}], longest first.
function bars(svg, items, emptyText) {
  svg.replaceChildren();
  const rowH = 20, labelW = 230, width = 640;
  if (items.length === 0) {
    svg.setAttribute("viewBox", `0 0 ${width} 24`);
    svg.append(el("text", { x: 0, y: 16, class: "empty" }, emptyText));
    return;
  }
  const max = Math.max(...items.map((i) => i.value), 1);
  // Room after the longest bar for the longest text beside a bar (about 6.2 units a character
  // at 11px), so no text runs out of the panel.
  const textW = Math.min(330, Math.max(170, 6.2 * Math.max(...items.map((i) => (i.text || "").length))));
  svg.setAttribute("viewBox", `0 0 ${width} ${items.length * rowH + 4}`);
  items.forEach((it, n) => {
    const y = n * rowH + 2;
    const g = el("g", { class: "item" });
    for (const [k, v] of Object.entries(it.data || {})) g.dataset[k] = v;
    g.append(el("text", { x: labelW - 6, y: y + 13, "text-anchor": "end" }, it.label));
    const w = Math.max(1, ((width - labelW - textW) * it.value) / max);
    g.append(el("rect", { x: labelW, y: y + 2, width: w, height: rowH - 6, class: "bar " + (it.cls || "") }));
    g.append(el("text", { x: labelW + w + 6, y: y + 13 }, it.text));
    svg.append(g);
  });
}

// Where a process's syscall time went: /stats schema 2's per-process sums, or (an older daemon)
// the sums over its listed syscalls.
function split(p) {
  if (p.on_cpu_ns !== undefined) return { cpu: p.on_cpu_ns, runq: p.runq_ns || 0, blocked: p.blocked_ns || 0 };
  const out = { cpu: 0, runq: 0, blocked: 0 };
  for (const s of p.syscalls || []) {
    const t = s.time_split;
    if (!t) continue;
    out.cpu += t.on_cpu_ns;
    out.runq += t.runq_ns;
    out.blocked += t.blocked_ns;
  }
  return out;
}

// Ranked by time on a CPU inside syscalls; time blocked (asleep: waiting is not work) is shown
// beside it, not in the bar.
function drawProcesses(stats) {
  const h = stats.host;
  document.getElementById("host").textContent =
    `${h.hostname} · ${h.kernel} · up ${Math.round(h.daemon_uptime_seconds)} s · ${h.drains} drains`;
  const rows = stats.processes.map((p) => ({ p, t: split(p) }));
  rows.sort((a, b) => b.t.cpu - a.t.cpu || b.p.total_ns - a.p.total_ns || a.p.pid - b.p.pid);
  const items = rows.slice(0, ROWS).map(({ p, t }) => ({
    label: `${p.pid} ${p.comm}${p.exited ? " (exited)" : ""}`,
    value: t.cpu,
    text: `${fmtNs(t.cpu)} on CPU · ${fmtNs(t.blocked)} blocked · ${fmtInt(p.count)} calls`,
    data: { pid: p.pid, comm: p.comm, count: p.count, totalNs: p.total_ns, onCpuNs: t.cpu, blockedNs: t.blocked },
  }));
  bars(document.getElementById("processes"), items, "no processes yet");
}

function drawInFlight(stats) {
  const items = [];
  for (const p of stats.processes)
    for (const f of p.in_flight)
      items.push({
        label: `${p.pid} ${p.comm} ${label(f)}`,
        // Ages span ns to days: a log scale keeps the short ones visible.
        value: Math.log10(Math.max(f.oldest_age_ns, 10)),
        text: `${f.count > 1 ? f.count + " threads, " : ""}oldest ${fmtNs(f.oldest_age_ns)}`,
        cls: "wait",
        data: { pid: p.pid, syscall: f.name, age: f.oldest_age_ns },
        age: f.oldest_age_ns,
      });
  items.sort((a, b) => b.age - a.age);
  bars(document.getElementById("inflight"), items.slice(0, ROWS), "nothing in flight");
}

// Failures per second over the last few slices of /history (current rates, not an average over
// its five minutes).
function drawErrors(hist) {
  NATIVE = hist.native_abi || NATIVE;
  const slices = hist.slices;
  const secs = slices.length ? (slices[slices.length - 1].end_unix_ms - slices[0].start_unix_ms) / 1000 : 0;
  for (const w of document.querySelectorAll(".window")) w.textContent = `${Math.round(secs)} s`;
  const items = [];
  for (const s of hist.syscalls)
    for (const [errno, points] of Object.entries(s.errnos)) {
      const total = points.reduce((a, [, n]) => a + n, 0);
      const rate = total / Math.max(secs, 1);
      items.push({
        label: `${label(s)} ${errno}`,
        value: rate,
        text: `${rate.toFixed(1)}/s · ${fmtInt(total)} failures`,
        cls: "err",
        data: { syscall: label(s), errno, count: total, rate: rate.toFixed(3) },
      });
    }
  items.sort((a, b) => b.value - a.value);
  bars(document.getElementById("errors"), items.slice(0, ROWS), `no failures in the last ${Math.round(secs)} s`);
}

// One small heatmap per syscall: x = time slice, y = latency (powers of two), colour = calls.
function drawHeatmaps(hist) {
  NATIVE = hist.native_abi || NATIVE;
  const box = document.getElementById("heatmaps");
  box.replaceChildren();
  const n = hist.slices.length;
  if (n === 0 || hist.syscalls.length === 0) {
    box.textContent = "no calls yet";
    return;
  }
  let lo = 40, hi = 0;
  for (const s of hist.syscalls)
    for (const [, r] of s.heat) {
      lo = Math.min(lo, r);
      hi = Math.max(hi, r);
    }
  lo = Math.max(0, Math.min(lo, 6));
  hi = Math.max(hi, lo + 10);
  const cellH = 4, plotW = 300, left = 44, top = 18;
  const cellW = plotW / n;
  const rows = hi - lo + 1;
  for (const s of hist.syscalls) {
    const max = Math.max(...s.heat.map(([, , c]) => c), 1);
    const svg = el("svg", {
      class: "heat",
      viewBox: `0 0 ${left + plotW + 4} ${top + rows * cellH + 16}`,
      width: left + plotW + 4,
      height: top + rows * cellH + 16,
    });
    svg.dataset.syscall = label(s);
    svg.dataset.count = s.count;
    svg.append(el("text", { x: 0, y: 12, "font-weight": "bold" }, label(s)));
    svg.append(el("text", { x: left + plotW, y: 12, "text-anchor": "end" },
      `${fmtInt(s.count)} calls, p99 ${s.p99_ns == null ? "-" : fmtNs(s.p99_ns)}`));
    svg.append(el("rect", { x: left, y: top, width: plotW, height: rows * cellH, fill: "#f4f4f4" }));
    for (const [slice, r, c] of s.heat) {
      const light = 92 - 60 * (Math.log1p(c) / Math.log1p(max));
      svg.append(el("rect", {
        x: left + slice * cellW, y: top + (hi - r) * cellH,
        width: Math.max(cellW, 1), height: cellH, fill: `hsl(18, 85%, ${light}%)`,
      }));
    }
    for (const [r, name] of [[10, "1 µs"], [20, "1 ms"], [30, "1 s"], [3, "10 ns"]])
      if (r >= lo && r <= hi)
        svg.append(el("text", { x: left - 4, y: top + (hi - r) * cellH + 4, "text-anchor": "end" }, name));
    svg.append(el("text", { x: left, y: top + rows * cellH + 12 }, `${n} s ago`));
    svg.append(el("text", { x: left + plotW, y: top + rows * cellH + 12, "text-anchor": "end" }, "now"));
    box.append(svg);
  }
}

function drawInsights(body) {
  const list = document.getElementById("insights");
  list.replaceChildren();
  const findings = body.findings || [];
  document.getElementById("rate-window").textContent = `${Math.round(body.rate_window_seconds || 0)} s`;
  if (findings.length === 0) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "nothing stands out";
    list.append(li);
  }
  for (const f of findings) {
    const li = document.createElement("li");
    li.dataset.kind = f.kind;
    li.dataset.syscall = f.syscall;
    if (f.comm) li.dataset.comm = f.comm;
    if (f.errno) li.dataset.errno = f.errno;
    li.dataset.pids = (f.pids || []).join(",");
    li.dataset.processes = f.processes || 0;
    if (f.exited) li.className = "exited";
    li.textContent = f.summary + " ";
    const ev = document.createElement("span");
    ev.className = "evidence";
    ev.textContent = f.evidence;
    li.append(ev);
    list.append(li);
  }
}

// The filter box: a pid or a process name, for the panels about processes.
function filterParams(q) {
  const f = params.get("q");
  if (f) q.set(/^\d+$/.test(f) ? "pid" : "comm", f);
  return q;
}

// Each panel asks for only what it shows: /stats (schema 2) ranks the processes panel's page by
// time on a CPU inside syscalls (sort=cpu) and the in-flight panel's by syscall time.
// Insights every third refresh: their rates are over the last 5 to 10 s, and the daemon walks
// every process to answer (30-45 ms of its CPU on a host of 5,000; docs/performance.md).
const PANELS = [
  { id: "insights-panel", every: 3, query: () => "/insights?" + filterParams(new URLSearchParams({ top: ROWS })), draw: drawInsights },
  { id: "processes-panel", query: () => "/stats?" + filterParams(new URLSearchParams({ limit: ROWS, sort: "cpu" })), draw: drawProcesses },
  { id: "errors-panel", query: () => `/history?seconds=${ERROR_SECONDS}&sort=errors&top=${ROWS}`, draw: drawErrors },
  { id: "heatmap-panel", query: () => "/history?top=" + ROWS, draw: drawHeatmaps },
  { id: "inflight-panel", query: () => "/stats?" + filterParams(new URLSearchParams({ limit: ROWS, sort: "total" })), draw: drawInFlight },
];

// A failed query is said in its own panel ("HTTP 400: …", the daemon's message); the others
// keep drawing.
async function refreshPanel(panel) {
  const section = document.getElementById(panel.id);
  const note = section.querySelector(".panel-error");
  const query = panel.query();
  let failure = null;
  try {
    const r = await fetch(query, { cache: "no-store" });
    if (!r.ok) {
      let why = r.statusText;
      try {
        why = (await r.json()).error || why;
      } catch (_) {
        // Not JSON: the status says enough.
      }
      failure = `HTTP ${r.status}: ${why}`;
    } else {
      const body = await r.json();
      try {
        panel.draw(body);
      } catch (e) {
        // A bug of this script, not a failed query: kept where a test can read it too.
        noteError(`${panel.id}: ${e.message || e}`);
        throw e;
      }
    }
  } catch (e) {
    failure = `${query}: ${e.message || e}`;
  }
  note.textContent = failure || "";
  note.hidden = !failure;
  section.classList.toggle("failed", !!failure);
  if (failure) section.dataset.error = failure;
  else delete section.dataset.error;
}

let cycle = 0;
async function refresh() {
  const due = PANELS.filter((p) => cycle % (p.every || 1) === 0);
  cycle += 1;
  await Promise.all(due.map(refreshPanel));
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}

document.getElementById("filter-input").value = params.get("q") || "";
refresh();
setInterval(refresh, REFRESH_MS);
