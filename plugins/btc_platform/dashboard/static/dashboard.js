// BTC dashboard: fetches the JSON endpoints next to this page (api/...), draws them with plotly.js
// (served by the same app: the npm package plotly.js-finance-dist-min, installed by `make js`) and refreshes itself.
// Hand-written, not minified. Every chart is drawn from exactly the rows its endpoint returned;
// a section without rows shows the endpoint's reason instead of a chart.
"use strict";

const state = { config: null, symbol: null, ranges: {}, timer: null, drawing: 0 };
const LAYOUT = { margin: { l: 60, r: 60, t: 50, b: 40 }, hovermode: "x unified", showlegend: true,
  legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" }, xaxis: { type: "date" } };
const TITLE = { x: 0, xanchor: "left", y: 0.98, yanchor: "top" };
const CONFIG = { displaylogo: false, responsive: true };

function $(sel) { return document.querySelector(sel); }

function reason(name, text) {
  const el = document.querySelector(`.reason[data-for="${name}"]`);
  if (el) el.textContent = text || "";
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "n/a";
  if (typeof value === "number") return value.toLocaleString("en-US", { maximumFractionDigits: digits });
  return String(value);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "n/a";
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function cards(id, items) {
  const box = document.getElementById(id);
  box.replaceChildren(...items.map(([label, value, bad]) => {
    const card = document.createElement("div");
    card.className = bad ? "card bad" : "card";
    const b = document.createElement("b");
    b.textContent = value;
    card.append(label, b);
    return card;
  }));
}

function table(id, columns, rows) {
  const el = document.getElementById(id);
  if (!rows.length) { el.replaceChildren(); return; }
  const head = document.createElement("tr");
  for (const [, title] of columns) {
    const th = document.createElement("th");
    th.textContent = title;
    head.append(th);
  }
  const body = rows.map((row) => {
    const tr = document.createElement("tr");
    for (const [key, , kind] of columns) {
      const td = document.createElement("td");
      const value = typeof key === "function" ? key(row) : row[key];
      if (value instanceof Node) td.append(value);
      else td.textContent = kind === "num" ? fmt(value, 4) : (value === null || value === undefined ? "" : String(value));
      if (kind) td.className = kind;
      tr.append(td);
    }
    return tr;
  });
  el.replaceChildren(head, ...body);
}

// Draw a chart, or hide it when its endpoint returned no rows (the section's reason says why).
// plotly.js loads async, in parallel with the first data requests (it may have run before this script)
const plotlyReady = window.Plotly ? Promise.resolve() : new Promise((resolve, reject) => {
  const script = document.getElementById("plotly-js");
  script.addEventListener("load", () => { performance.mark("btc:plotly-ready"); resolve(); });
  script.addEventListener("error", () => reject(new Error("static/plotly.js did not load (run `make js`)")));
});

function draw(id, traces, layout) {
  const el = document.getElementById(id);
  if (!traces) { Plotly.purge(el); el.replaceChildren(); el.hidden = true; return Promise.resolve(); }
  el.hidden = false;  // visible before drawing, so plotly sizes it to its container
  const title = layout.title ? { ...TITLE, ...layout.title } : undefined;
  const fit = Math.floor(el.clientWidth / MIN_MARKER_SPACING_PX);
  const shown = traces.map((t) => (t.mode === "lines+markers" && t.x.length > fit ? { ...t, mode: "lines" } : t));
  return Plotly.react(el, shown, { ...LAYOUT, ...layout, title }, CONFIG);
}

async function getJson(path, params) {
  const query = new URLSearchParams(params);
  const response = await fetch(`api/${path}?${query}`, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`api/${path}: HTTP ${response.status}`);
  return response.json();
}

// A marker per point while the points are at least this far apart on the chart, so each can be
// told apart; denser lines are drawn without markers (thousands of SVG markers nobody can tell
// apart took most of a page load's drawing time).
const MIN_MARKER_SPACING_PX = 3;

function line(x, y, name, extra = {}) {
  return { type: "scatter", mode: "lines+markers", marker: { size: 3 }, x, y, name, ...extra };
}

// ---- market ---------------------------------------------------------------------------------
async function drawMarket(d) {
  const m = d.minutes;
  const tick = d.latest_tick;
  reason("market", d.reason || (d.missing_columns.length ? `minute_metrics lacks ${d.missing_columns.join(", ")}` : ""));
  cards("tick", tick.reason ? [["latest tick", tick.reason, true]] : [
    ["latest tick", `${fmt(tick.mid_price)} (bid ${fmt(tick.bid_price)} / ask ${fmt(tick.ask_price)})`],
    ["tick time", tick.event_time],
    ["age", age(tick.age_s), tick.age_s > 120],
    ["spread", `${fmt(tick.spread)} (${fmt(tick.spread_pct, 4)} %)`],
    ["source", tick.source || "n/a"],
    ["minutes shown", String(d.count)],
  ]);
  const has = d.count > 0;
  await Promise.all([
    draw("chart-market-price", has && [line(m.time, m.mid_close, "mid price (close)")],
      { title: { text: `${d.symbol} mid price per minute` } }),
    draw("chart-market-spread", has && [line(m.time, m.spread_mean, "spread"),
      line(m.time, m.spread_pct_mean, "spread %", { yaxis: "y2" })],
      { title: { text: "spread (mean per minute)" },
        yaxis2: { overlaying: "y", side: "right", title: "%" } }),
    draw("chart-market-liquidity", has && [line(m.time, m.liquidity_quote_mean, "liquidity (quote)"),
      line(m.time, m.liquidity_base_mean, "liquidity (base)", { yaxis: "y2" })],
      { title: { text: "book liquidity" }, yaxis2: { overlaying: "y", side: "right" } }),
    draw("chart-market-activity", has && [line(m.time, m.volatility, "volatility"),
      line(m.time, m.tick_count, "ticks", { yaxis: "y2" })],
      { title: { text: "volatility and ticks per minute" },
        yaxis2: { overlaying: "y", side: "right" } }),
  ]);
}

// ---- history --------------------------------------------------------------------------------
function bySource(c, source) {
  const idx = c.time.map((_, i) => i).filter((i) => ((c.source && c.source[i]) || "unknown") === source);
  const pick = (arr) => idx.map((i) => arr[i]);
  return { time: pick(c.time), open: pick(c.open), high: pick(c.high), low: pick(c.low), close: pick(c.close) };
}

async function drawHistory(d) {
  reason("history", d.reason);
  const c = d.candles;
  const has = d.count > 0;
  const missing = d.gaps.reduce((n, g) => n + g.hours, 0);
  cards("history-summary", [["hours", String(d.count)],
    ...Object.entries(d.sources).map(([s, n]) => [`${s} hours`, String(n)]),
    ["missing hours", `${missing} in ${d.gaps.length} gap(s)`, missing > 0]]);
  const colors = { stream: ["#2b6cb0", "#90cdf4"], backfill: ["#2f855a", "#c53030"], simulated: ["#805ad5", "#d69e2e"] };
  const simulated = d.sources.simulated ? " (simulated history included)" : "";
  const traces = has ? Object.keys(d.sources).map((source) => {
    const s = bySource(c, source);
    const [up, down] = colors[source] || ["#4a5568", "#a0aec0"];
    return { type: "candlestick", name: `${source} hours`, x: s.time, open: s.open, high: s.high, low: s.low,
      close: s.close, increasing: { line: { color: up } }, decreasing: { line: { color: down } } };
  }) : null;
  const shapes = d.gaps.map((g) => ({ type: "rect", xref: "x", yref: "paper", x0: g.start, x1: g.end, y0: 0, y1: 1,
    fillcolor: "#fed7d7", opacity: 0.6, line: { width: 0 }, layer: "below" }));
  await Promise.all([
    draw("chart-history-candles", traces, { title: { text: `${d.symbol} hourly candles (gaps shaded)${simulated}` },
      shapes, xaxis: { type: "date", rangeslider: { visible: false } } }),
    draw("chart-history-volume", has && [
      { type: "bar", x: c.time, y: c.volume, name: "volume (candles)", marker: { color: "#a0aec0" } },
      line(c.time, c.coverage, "coverage", { yaxis: "y2" })],
      { title: { text: "volume and coverage (minutes present / 60)" },
        yaxis2: { overlaying: "y", side: "right", range: [0, 1.05] } }),
  ]);
}

// ---- forecast -------------------------------------------------------------------------------
async function drawForecast(d) {
  const f = d.future;
  const p = d.past;
  const reg = d.registry;
  const current = reg.current || {};
  const by = f.served_by || {};
  // the served point model as the forecast's rows name it ("persistence — LSTM candidate rejected: ...")
  const point = by.point_model === "lstm" ? `LSTM ${current.version || f.model_version || ""}`.trim()
    : by.point_reason || by.point_model || (current.version ? `LSTM ${current.version}` : "no forecast served yet");
  cards("forecast-model", [["served point model", point, f.count === 0],
    ["band", by.band_model || "n/a"],
    ["promoted LSTM", current.promoted_at ? `${current.promoted_at}${current.forced ? " (forced)" : ""}`
      : reg.versions.length ? "none yet (no candidate beat persistence)" : "none yet (no model trained)"],
    ["forecast issued", f.issue_time ? `${f.issue_time} (${age(f.age_s)} ago)` : "n/a", f.covers_now === false],
    ["from hour", f.origin_hour_start || "n/a"],
    ["interval", f.interval_level ? `${Math.round(f.interval_level * 100)} %` : "n/a"]]);
  reason("forecast-future", [f.reason, f.band_reason, by.band_reason && `band: ${by.band_reason}`]
    .filter(Boolean).join("; "));
  const level = f.interval_level ? `${Math.round(f.interval_level * 100)} %` : "";
  const future = f.count > 0 ? [
    ...(f.lower.length ? [
      { type: "scatter", mode: "lines", x: f.target, y: f.lower, name: "lower", line: { width: 0 }, showlegend: false },
      { type: "scatter", mode: "lines", x: f.target, y: f.upper, name: `${level} band`, fill: "tonexty",
        fillcolor: "rgba(66,153,225,0.25)", line: { width: 0 } }] : []),
    line(f.target, f.predicted, "forecast", { line: { color: "#2b6cb0" } }),
  ] : null;
  reason("forecast-past", [p.reason, p.actual_reason && `actual closes: ${p.actual_reason}`].filter(Boolean).join("; "));
  const past = p.count > 0 ? [line(p.target, p.predicted, "forecast (latest issue before the hour)"),
    line(p.target, p.actual, "actual close", { line: { color: "#1a202c" } })] : null;
  // a single hour (the first forecast's first target): an hour either side and 1 % of the price
  // around it, instead of plotly's axes of a few milliseconds and cents
  const pastLayout = { title: { text: "past forecasts against what happened" } };
  if (p.count > 0 && new Set(p.target).size === 1) {
    const t = Date.parse(p.target[0]);
    pastLayout.xaxis = { type: "date", range: [new Date(t - 3600e3).toISOString(), new Date(t + 3600e3).toISOString()] };
    const ys = [...p.predicted, ...p.actual].filter((v) => v !== null && v !== undefined);
    if (ys.length) pastLayout.yaxis = { range: [Math.min(...ys) * 0.99, Math.max(...ys) * 1.01] };
  }
  await Promise.all([
    draw("chart-forecast", future, { title: { text: `${f.covers_now === false ? "latest served forecast" : "next hours"} of ${d.symbol} by ${by.point_model || f.model_version || "?"}` } }),
    draw("chart-forecast-past", past, pastLayout),
  ]);
  const ph = d.per_horizon;
  reason("per-horizon", ph.reason);
  $("#per-horizon-version").textContent = ph.version ? `(${ph.version}, ${ph.n_windows} test windows)` : "";
  table("per-horizon", [["horizon", "h"], ["model_rmse", "RMSE model", "num"], ["persistence_rmse", "RMSE persistence", "num"],
    ["drift_rmse", "RMSE drift", "num"], ["model_skill", "skill vs persistence", "num"],
    ["interval_coverage", "interval coverage", "num"]], ph.rows.concat(ph.overall ? [ph.overall] : []));
  reason("registry", reg.reason);
  table("versions", [["version", "version"], [(r) => (r.current ? "served" : ""), ""], ["status", "decision"],
    ["reason", "reason"], [(r) => (r.forced ? "yes" : ""), "forced"], ["decided_at", "decided"]], reg.versions);
  reason("metrics", d.metrics.reason);
  table("metrics", [["model_version", "version"], ["decision", "decision"], ["model_rmse", "RMSE", "num"],
    ["persistence_rmse", "persistence", "num"], ["drift_rmse", "drift", "num"], ["model_skill", "skill", "num"],
    ["skill_h1", "skill h1", "num"], ["skill_h24", "skill h24", "num"], ["interval_coverage", "coverage", "num"]],
  d.metrics.rows);
}

// ---- pipeline -------------------------------------------------------------------------------
function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  a.addEventListener("click", (event) => openInUi(event, a));
  return a;
}

// A link to an Airflow UI page (a DAG run, a task log). Framed in the UI (same origin), the UI
// itself shows it: its router is moved to that page, instead of a second UI loading inside the
// frame (the frame's sandbox forbids navigating the top window, not its history). Alone, or when
// the top window is not reachable, the link opens as usual.
function openInUi(event, a) {
  if (window.top === window || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
  try {
    const url = new URL(a.href, document.baseURI);
    if (url.origin !== window.top.location.origin) return;
    window.top.history.pushState(null, "", url.pathname + url.search + url.hash);
    window.top.dispatchEvent(new PopStateEvent("popstate", { state: null }));
    event.preventDefault();
  } catch (err) {
    console.warn("opening the link in the frame:", err);
  }
}

// The commit that wrote a table's data, and the Airflow task instance that made it (run, task log).
function producedBy(r) {
  const p = r.produced_by;
  if (!p) return r.version === null ? "" : r.reason;
  const span = document.createElement("span");
  span.className = "produced";
  span.append(`v${p.version} ${p.operation} ${p.committed_at}: `);
  if (!p.airflow) { span.append(r.reason); return span; }
  const tries = p.airflow.try_number > 1 ? ` (try ${p.airflow.try_number})` : "";
  const mapped = p.airflow.map_index !== undefined ? `[${p.airflow.map_index}]` : "";
  span.append(link(p.run, `${p.airflow.dag_id} ${p.airflow.run_id}`), " / ",
    link(p.task_log, `${p.airflow.task_id}${mapped}${tries} log`));
  return span;
}

async function drawPipeline(d) {
  const prod = d.producer;
  const st = d.stream;
  // simulated data is said so on every view: the header names the producer's source
  const mode = $("#mode");
  mode.textContent = prod.source_mode === "simulate" ? "simulated data (make run SOURCE=simulate)"
    : prod.source_mode === "replay" ? "replayed data (make run SOURCE=replay)" : "";
  const items = [];
  items.push(prod.reason ? ["producer", prod.reason, true] :
    ["producer", `${prod.state || "?"}, last publish ${age(prod.last_publish_age_s)} ago, published ${fmt(prod.published, 0)}`,
      !(prod.last_publish_age_s < 120)]);
  items.push(st.reason ? ["stream", st.reason, true] : ["stream", `updated ${age(st.updated_age_s)} ago`, !(st.updated_age_s < 300)]);
  for (const proc of d.processes) {
    items.push([`${proc.name} process`, `${proc.state}${proc.pid ? ` (pid ${proc.pid})` : ""}, ${proc.restarts} restart(s)`,
      proc.state !== "running"]);
  }
  items.push(["Kafka lag", d.kafka_lag.messages === null ? d.kafka_lag.reason : `${fmt(d.kafka_lag.messages, 0)} messages`,
    d.kafka_lag.messages === null]);
  const audit = d.data_quality.audit;
  // before the first hour has closed nothing is wrong: the audit runs after each hour's consolidation
  items.push(["ingest audit", !audit ? "first run after the first full hour (btc_hourly_consolidation, audit_ingest)"
    : audit.failed ? `${audit.failed} of ${audit.checked} symbol-hours incomplete, last ${audit.last_failure.hour_start}: ${audit.last_failure.detail}`
      : `Kafka = raw_data for ${audit.checked} symbol-hours, up to ${audit.last_hour}`, Boolean(audit && audit.failed > 0)]);
  cards("pipeline-state", items);
  table("stream-queries", [["name", "query"], ["state", "state"], ["batch_id", "batch"], ["batch_duration_ms", "batch ms", "num"],
    ["input_rows_per_s", "in rows/s", "num"], ["processed_rows_per_s", "processed rows/s", "num"],
    ["watermark", "watermark"], ["stored_total", "stored", "num"], ["duplicates_total", "copies left out", "num"],
    ["dropped_late_total", "too late for minutes", "num"], [(q) => age(q.age_s), "last batch"]], st.queries || []);
  const al = d.alerts;
  reason("alerts", al.reason || (al.undelivered ? `${al.undelivered} alert message(s) could not be delivered (monitor log)` : ""));
  table("alerts", [[(a) => (a.resolved_at ? "resolved" : "OPEN"), "state"], ["key", "alert"], ["summary", "what"],
    ["opened_at", "since"], ["resolved_at", "resolved"], ["resolution", "resolved because"]], [...al.open, ...al.recent]);
  reason("restarts", d.restarts.length ? "" : "the supervisor has started nothing yet (btc_stream_supervisor DAG)");
  table("restarts", [["time", "when"], ["name", "process"], ["action", "action"], ["reason", "reason"], ["pid", "pid"],
    [(r) => (r.task_log ? link(r.task_log, `${r.airflow.run_id} ${r.airflow.task_id}`)
      : link("../dags/btc_stream_supervisor/runs", "btc_stream_supervisor runs")), "task log"]], d.restarts);
  const q = d.quarantine;
  reason("quarantine", q.reason);
  const qTraces = q.total > 0 ? Object.entries(q.series).map(([code, counts]) =>
    ({ type: "bar", x: q.hours, y: counts, name: code })) : null;
  const dq = d.data_quality;
  reason("data-quality", dq.reason);
  const dqTraces = dq.hours.length ? [
    { type: "bar", x: dq.hours, y: dq.checks, name: "checks run", marker: { color: "#c6f6d5" } },
    { type: "bar", x: dq.hours, y: dq.errors, name: "errors", marker: { color: "#e53e3e" } },
    { type: "bar", x: dq.hours, y: dq.warnings, name: "warnings", marker: { color: "#d69e2e" } }] : null;
  await Promise.all([
    draw("chart-quarantine", qTraces, { barmode: "stack", title: { text: `${q.total} quarantined record(s) per hour` } }),
    draw("chart-quality", dqTraces, { barmode: "overlay", title: { text: "data-quality checks per hour" } }),
  ]);
  table("quarantine-sample", [["quarantined_at", "quarantined"], ["reason", "reason"], ["kafka", "topic/partition/offset"],
    ["value_text", "raw record", "text"]], q.sample);
  table("quality-failures", [["hour_start", "hour"], ["symbol", "symbol"], ["check", "check"], ["severity", "severity"],
    ["detail", "detail"]], dq.failures);
  table("datasets", [["table", "table"], [(r) => (r.version === null ? r.reason : `v${r.version}`), "version"],
    [(r) => (r.last_commit ? `${r.last_commit.operation} ${r.last_commit.committed_at}` : ""), "last commit"],
    [(r) => producedBy(r), "data written by (task log)"],
    [(r) => { const span = document.createElement("span");
      r.dags.forEach((dag, i) => { if (i) span.append(", "); span.append(link(r.dag_runs[i], dag)); });
      return span; }, "all runs"]], d.datasets);
}

// ---- wiring ---------------------------------------------------------------------------------
const VIEWS = {
  market: { key: "hours", choices: "market_hours", unit: "h", draw: drawMarket },
  history: { key: "days", choices: "history_days", unit: "d", draw: drawHistory },
  forecast: { key: "days", choices: "forecast_days", unit: "d", draw: drawForecast },
  pipeline: { key: "days", choices: "pipeline_days", unit: "d", draw: drawPipeline },
};

async function load(view) {
  const v = VIEWS[view];
  const params = { [v.key]: state.ranges[view] };
  if (view !== "pipeline") params.symbol = state.symbol;
  const d = await getJson(view, params);
  await plotlyReady;
  const started = performance.now();
  await v.draw(d);
  performance.measure(`btc:draw:${view}`, { start: started, end: performance.now() });  // where a load's time goes
  return d;
}

async function refresh() {
  const main = $("#dashboard");
  main.dataset.state = "loading";
  const results = await Promise.allSettled(Object.keys(VIEWS).map(load));
  const failed = results.filter((r) => r.status === "rejected");
  failed.forEach((r) => console.error(r.reason));
  $("#refreshed").textContent = failed.length ? `error: ${failed.map((r) => r.reason.message).join("; ")}`
    : `updated ${new Date().toISOString().slice(11, 19)} UTC, every ${state.config.refresh_s} s`;
  main.dataset.state = failed.length ? "error" : "drawn";
  performance.mark("btc:drawn");
}

async function start() {
  state.config = JSON.parse(document.getElementById("btc-config").textContent);
  const symbols = $("#symbol");
  for (const s of state.config.symbols) symbols.append(new Option(s, s));
  state.symbol = state.config.symbols[0];
  symbols.addEventListener("change", () => { state.symbol = symbols.value; refresh(); });
  for (const select of document.querySelectorAll("select.range")) {
    const v = VIEWS[select.dataset.view];
    for (const n of state.config[v.choices]) select.append(new Option(`last ${n} ${v.unit}`, n));
    const def = state.config.defaults[select.dataset.view];  // the app preloads each view's data at this range
    select.value = String(def);
    state.ranges[select.dataset.view] = def;
    select.addEventListener("change", async () => {
      state.ranges[select.dataset.view] = Number(select.value);
      $("#dashboard").dataset.state = "loading";
      await load(select.dataset.view);
      $("#dashboard").dataset.state = "drawn";
    });
  }
  await refresh();
  state.timer = setInterval(refresh, state.config.refresh_s * 1000);
}

start().catch((err) => { $("#refreshed").textContent = `error: ${err.message}`; $("#dashboard").dataset.state = "error"; });
