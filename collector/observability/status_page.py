"""The status page served at / on the health port: one screen an operator can leave open.

It is one self-contained HTML document (inline CSS and JS, no CDN, no fonts, no images) kept as a string
constant so it ships inside the package and works on a machine with no Internet access. The page holds
no data: the browser polls /stats and /health and renders them, so the server stays the three pure
endpoints it was and the page costs nothing while nobody looks at it.

Rates (msgs/s, rows/s) are computed in the browser from two publications of the same process's counters,
divided by the difference of their `stats_updated_at` (when the child published them), not of the poll
times: polls arrive late or early, the publication time is when the counters were true. A restarted
child (new pid) starts a new baseline instead of showing a negative rate.

Everything the page writes comes from textContent, never innerHTML, so a symbol or a reason string can
not inject markup. Elements the tests read carry ids and data-field attributes.
"""

from __future__ import annotations

STATUS_PAGE_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Collector status</title>
<style>
  :root { --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #6b7385; --line: #e2e5eb;
          --ok: #1f8a4c; --bad: #c62828; --warn: #b26a00; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: var(--bg); color: var(--ink); }
  header { display: flex; align-items: center; gap: 16px; padding: 10px 20px; background: var(--ink);
           color: #fff; }
  header h1 { font-size: 17px; margin: 0; font-weight: 600; }
  header .meta { color: #b8bfcc; font-size: 12px; margin-left: auto; text-align: right; }
  .badge { padding: 3px 10px; border-radius: 10px; font-weight: 600; font-size: 12px; background: #555; }
  .badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
  main { display: grid; grid-template-columns: 2fr 1fr; gap: 14px; padding: 14px 20px; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
  section h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted);
               margin: 0 0 8px; }
  .wide { grid-column: 1 / -1; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { padding: 4px 6px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
  th { color: var(--muted); font-weight: 500; font-size: 12px; }
  th:first-child, td:first-child { text-align: left; }
  tr.down td { color: var(--bad); }
  .kv { display: grid; grid-template-columns: auto auto; gap: 3px 14px; margin: 0; }
  .kv dt { color: var(--muted); } .kv dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
  .totals { display: flex; flex-wrap: wrap; gap: 8px 28px; }
  .totals div { display: flex; flex-direction: column; }
  .totals span:first-child { color: var(--muted); font-size: 12px; }
  .totals span:last-child { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
  #alerts { list-style: none; margin: 0; padding: 0; }
  #alerts li { padding: 4px 8px; margin-bottom: 4px; border-left: 4px solid var(--bad); background: #fdecea; }
  #alerts li.clear { border-color: var(--ok); background: #e8f5ec; }
  #alerts li.warn { border-color: var(--warn); background: #fff4e0; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 20px; align-items: start; }
  .muted { color: var(--muted); } .error { color: var(--bad); }
</style>
</head>
<body data-state="loading" data-polls="0">
<header>
  <h1>Binance futures collector</h1>
  <span id="overall" class="badge">loading</span>
  <div class="meta"><div id="updated">waiting for /stats</div><div id="uptime"></div></div>
</header>
<main>
  <section class="wide">
    <h2>Alerts</h2>
    <ul id="alerts" data-count="0"><li class="warn">waiting for /health</li></ul>
  </section>
  <section class="wide">
    <h2>Committed rows</h2>
    <div class="totals" id="totals">
      <div><span>trades</span><span data-field="trades_count">-</span></div>
      <div><span>funding</span><span data-field="funding_count">-</span></div>
      <div><span>liquidations</span><span data-field="liquidations_count">-</span></div>
      <div><span>open interest</span><span data-field="open_interest_count">-</span></div>
      <div><span>candles</span><span data-field="candles_count">-</span></div>
      <div><span>msgs/s received</span><span data-field="msgs_rate">-</span></div>
    </div>
  </section>
  <section>
    <h2>Workers</h2>
    <table id="workers">
      <thead><tr><th>worker</th><th>pid</th><th>symbols</th><th>msgs/s</th><th>kept: large</th>
        <th>price</th><th>interval</th><th>all</th><th>last event</th><th>reconnects</th><th>silent</th>
        <th>held</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section id="writer">
    <h2>Writer</h2>
    <dl class="kv">
      <dt>process</dt><dd data-field="pid">-</dd>
      <dt>rows/s committed</dt><dd data-field="rows_rate">-</dd>
      <dt>pending rows</dt><dd data-field="pending_rows">-</dd>
      <dt>pending bytes</dt><dd data-field="pending_bytes">-</dd>
      <dt>queue depth</dt><dd data-field="queue_depth">-</dd>
      <dt>spooled batches</dt><dd data-field="spooled_batches">-</dd>
      <dt>spooled bytes</dt><dd data-field="spooled_bytes">-</dd>
      <dt>COPY latency (avg)</dt><dd data-field="copy_ewma">-</dd>
      <dt>commit lag</dt><dd data-field="commit_lag">-</dd>
      <dt>errors</dt><dd data-field="errors">-</dd>
      <dt>last error</dt><dd data-field="last_error">-</dd>
      <dt>restarts</dt><dd data-field="restarts">-</dd>
    </dl>
  </section>
  <section class="wide" id="tiers">
    <h2>Tiers <span class="muted" data-field="computed_at"></span></h2>
    <div class="pair">
    <table id="tier-counts">
      <thead><tr><th>tier</th><th>symbols</th><th>large trade above: lowest</th><th>highest</th></tr></thead>
      <tbody></tbody>
    </table>
    <table id="tier-top">
      <thead><tr><th>top symbols</th><th>tier</th><th>large trade above</th><th>score</th></tr></thead>
      <tbody></tbody>
    </table>
    </div>
  </section>
</main>
<script>
"use strict";
// Poll period while rates are known: fresh enough to watch, cheap for the supervisor (one snapshot each).
const REFRESH_MS = 2000;
// Poll period until every process has a rate, so the page shows rates about a second after opening
// instead of after two full refreshes.
const WARMUP_MS = 100;
// Shortest span of publications a rate is computed over: the writer commits every 250 ms
// (writer.flush_interval_ms), so a shorter span can hold no commit and show a busy writer at 0 rows/s.
const MIN_RATE_SPAN_MS = 600;
// Baselines older than this are replaced: the rate shown is over the last few seconds, not since opening.
const RATE_WINDOW_MS = 10000;

const $ = (sel, root) => (root || document).querySelector(sel);
const fmtInt = v => (v === null || v === undefined) ? "-" : Math.round(v).toLocaleString("en-US");
const fmtRate = v => (v === null || v === undefined) ? "…" : v.toLocaleString("en-US", {maximumFractionDigits: v < 10 ? 1 : 0});
const fmtBytes = v => {
  if (v === null || v === undefined) return "-";
  const units = ["B", "KB", "MB", "GB"]; let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v) + " " + units[i];
};
const fmtUsd = v => (v === null || v === undefined) ? "none yet" : "$" + Math.round(v).toLocaleString("en-US");
const sum = obj => Object.values(obj || {}).reduce((a, b) => a + (b || 0), 0);
const ago = (iso, nowMs) => {
  if (!iso) return "never";
  const s = Math.max(0, (nowMs - Date.parse(iso)) / 1000);
  return s < 60 ? s.toFixed(1) + " s ago" : s < 3600 ? (s / 60).toFixed(0) + " min ago" : (s / 3600).toFixed(1) + " h ago";
};

// key -> [{t, v}] publications of one counter by one process (pid in the key: a restart is a new series).
const history = new Map();
function rate(key, updatedIso, value) {
  if (!updatedIso || value === null || value === undefined) return null;
  const t = Date.parse(updatedIso);
  let h = history.get(key);
  if (!h) { h = []; history.set(key, h); }
  if (!h.length || h[h.length - 1].t !== t) h.push({t, v: value});
  while (h.length > 2 && t - h[1].t >= RATE_WINDOW_MS) h.shift();
  const a = h[0], b = h[h.length - 1];
  if (b.t - a.t < MIN_RATE_SPAN_MS) return null;
  return b.v < a.v ? null : (b.v - a.v) * 1000 / (b.t - a.t);
}

function cell(tr, field, text) {
  const td = document.createElement("td");
  td.dataset.field = field; td.textContent = text; tr.appendChild(td); return td;
}

function renderWorkers(stats, nowMs) {
  const body = $("#workers tbody");
  body.replaceChildren();
  let total = 0, allKnown = true;
  for (const w of stats.workers) {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.worker;
    if (!w.alive) tr.className = "down";
    const r = rate("worker:" + w.worker + ":" + w.pid, w.stats_updated_at, w.alive ? sum(w.received) : null);
    if (r === null) allKnown = allKnown && !w.alive; else total += r;
    const last = Object.values(w.last_event_time || {}).filter(Boolean).sort().pop();
    cell(tr, "worker", String(w.worker));
    cell(tr, "pid", w.alive ? String(w.pid) : "down (" + w.restarts + " restarts)");
    cell(tr, "symbols", fmtInt(w.symbols));
    cell(tr, "msgs_rate", fmtRate(r));
    for (const reason of ["large_trade", "price_change", "time_interval", "keep_all"])
      cell(tr, "kept_" + reason, fmtInt((w.kept || {})[reason] || 0));
    cell(tr, "last_event", ago(last, nowMs));
    cell(tr, "reconnects", fmtInt(w.reconnects));
    cell(tr, "watchdog_trips", fmtInt(w.watchdog_trips));
    cell(tr, "held", fmtBytes(w.outbox ? w.outbox.pending_bytes : null));
    body.appendChild(tr);
  }
  $("#totals [data-field=msgs_rate]").textContent = allKnown && stats.workers.length ? fmtRate(total) : "…";
  return allKnown;
}

function renderWriter(stats) {
  const w = stats.writer, root = $("#writer");
  const set = (f, text) => { $("[data-field=" + f + "]", root).textContent = text; };
  if (!w) { set("pid", "none"); return true; }
  const r = w.alive ? rate("writer:" + w.pid, w.stats_updated_at, sum(w.rows)) : null;
  set("pid", w.alive ? String(w.pid) : "down");
  set("rows_rate", fmtRate(r));
  set("pending_rows", fmtInt(w.pending.rows));
  set("pending_bytes", fmtBytes(w.pending.bytes));
  set("queue_depth", fmtInt(w.queue_depth));
  set("spooled_batches", fmtInt(w.spooled.batches));
  set("spooled_bytes", fmtBytes(w.spooled.bytes));
  set("copy_ewma", w.copy_latency.ewma_s === null ? "-" : (w.copy_latency.ewma_s * 1000).toFixed(1) + " ms");
  set("commit_lag", fmtInt(w.commit_lag_ms) + " ms");
  set("errors", fmtInt(w.errors));
  set("last_error", w.last_error || "none");
  set("restarts", fmtInt(w.restarts));
  return r !== null || !w.alive;
}

function renderTiers(stats) {
  const t = stats.supervisor.tiers, counts = $("#tier-counts tbody"), top = $("#tier-top tbody");
  counts.replaceChildren(); top.replaceChildren();
  $("#tiers [data-field=computed_at]").textContent = t && t.computed_at ? "computed " + t.computed_at : "(bootstrap)";
  if (!t) return;
  const ranges = t.thresholds || {};
  for (const [tier, n] of Object.entries(t.count)) {
    const tr = document.createElement("tr"); tr.dataset.tier = tier;
    cell(tr, "tier", tier); cell(tr, "symbols", fmtInt(n));
    cell(tr, "min_threshold", fmtUsd(ranges[tier] ? ranges[tier].min : null));
    cell(tr, "max_threshold", fmtUsd(ranges[tier] ? ranges[tier].max : null));
    counts.appendChild(tr);
  }
  for (const s of t.top || []) {
    const tr = document.createElement("tr"); tr.dataset.symbol = s.symbol;
    cell(tr, "symbol", s.symbol); cell(tr, "tier", String(s.tier));
    cell(tr, "threshold", fmtUsd(s.threshold_usd)); cell(tr, "score", s.score === null ? "-" : s.score.toFixed(3));
    top.appendChild(tr);
  }
}

function renderHealth(doc) {
  const list = $("#alerts"), badge = $("#overall");
  list.replaceChildren();
  for (const reason of doc.reasons) {
    const li = document.createElement("li");
    if (/ is starting/.test(reason)) li.className = "warn";
    li.textContent = reason; list.appendChild(li);
  }
  if (!doc.reasons.length) {
    const li = document.createElement("li"); li.className = "clear";
    li.textContent = "No alerts: every process is up, receiving and writing."; list.appendChild(li);
  }
  list.dataset.count = String(doc.reasons.length);
  badge.textContent = doc.ok ? "healthy" : doc.reasons.length + " problem" + (doc.reasons.length > 1 ? "s" : "");
  badge.className = "badge " + (doc.ok ? "ok" : "bad");
  badge.dataset.ok = String(doc.ok);
}

async function getJson(path) {
  // /health answers 503 with a JSON body when unhealthy: that is data, not a failed request.
  const resp = await fetch(path, {cache: "no-store"});
  return resp.json();
}

async function poll() {
  let next = REFRESH_MS;
  try {
    const [stats, health] = await Promise.all([getJson("/stats"), getJson("/health")]);
    const nowMs = Date.parse(stats.generated_at);
    for (const f of ["trades_count", "funding_count", "liquidations_count", "open_interest_count", "candles_count"])
      $("#totals [data-field=" + f + "]").textContent = fmtInt(stats.totals[f]);
    const workersKnown = renderWorkers(stats, nowMs);
    const writerKnown = renderWriter(stats);
    renderTiers(stats);
    renderHealth(health);
    const up = stats.supervisor.uptime_s;
    $("#updated").textContent = "updated " + stats.generated_at;
    $("#updated").className = "";
    $("#uptime").textContent = "supervisor " + stats.supervisor.pid + ", up " + (up === null ? "-" : ago(
      new Date(nowMs - up * 1000).toISOString(), nowMs).replace(" ago", ""));
    document.body.dataset.state = "live";
    document.body.dataset.polls = String(Number(document.body.dataset.polls) + 1);
    if (!workersKnown || !writerKnown) next = WARMUP_MS;
  } catch (e) {
    document.body.dataset.state = "error";
    $("#updated").textContent = "cannot reach the collector: " + e;
    $("#updated").className = "error";
  }
  setTimeout(poll, next);
}
poll();
</script>
</body>
</html>
"""
