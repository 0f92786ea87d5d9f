// callscope's built-in viewer: the dashboards (rendered from their definitions with live
// data from the query API), the active alerts with silence and acknowledge, service health
// and a trace view. Plain JavaScript, no build step; charts by uPlot (MIT, vendored).
"use strict";

const main = document.getElementById("main");
const state = { timer: null, generation: 0 };

// ---- helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function headers() {
  const h = { "content-type": "application/json" };
  const roles = document.getElementById("roles").value.trim();
  if (roles) {
    h["x-callscope-roles"] = roles;
    h["x-callscope-user"] = "viewer-ui";
  }
  return h;
}

// Fetches JSON; a non-2xx answer becomes an Error carrying the API's message.
async function api(path, options) {
  const response = await fetch(path, Object.assign({ headers: headers() }, options || {}));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const message = body && (body.error || body.message) ? (body.error || body.message) : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function rangeMs() { return Number(document.getElementById("range").value); }
function now() { return Date.now(); }

function fmt(v, unit, decimals) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const d = decimals !== undefined && decimals !== null ? decimals : (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 1 ? 2 : 3);
  const scaled = (x, units, base) => {
    let i = 0;
    while (Math.abs(x) >= base && i < units.length - 1) { x /= base; i++; }
    return `${x.toFixed(d)} ${units[i]}`;
  };
  switch (unit) {
    case "percent": return `${v.toFixed(d)} %`;
    case "percentunit": return `${(v * 100).toFixed(decimals ?? 1)} %`;
    case "ms": return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(d)} ms`;
    case "s": return v < 1 ? `${(v * 1000).toFixed(1)} ms` : `${v.toFixed(d)} s`;
    case "m": return `${v.toFixed(d)} min`;
    case "bytes": return scaled(v, ["B", "KiB", "MiB", "GiB", "TiB"], 1024);
    case "Bps": return scaled(v, ["B/s", "KiB/s", "MiB/s", "GiB/s"], 1024);
    case "reqps": return `${v.toFixed(d)} req/s`;
    case "currencyCNY": return `¥${v.toFixed(decimals ?? 2)}`;
    default: return Math.abs(v) >= 1e6 ? scaled(v, ["", "K", "M", "G"], 1000) : v.toFixed(d);
  }
}

function thresholdColor(v, thresholds) {
  let color = null;
  for (const t of thresholds || []) if (v >= t.value) color = t.color;
  const named = { green: "#73bf69", orange: "#ff9830", red: "#f2495c", yellow: "#fade2a", blue: "#5794f2", purple: "#b877d9" };
  return color ? (named[color] || color) : null;
}

function timeText(ms) { return ms ? new Date(ms).toLocaleString() : "–"; }

function legend(template, metric) {
  if (template) return template.replace(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g, (_, k) => metric[k] || "");
  const rest = Object.entries(metric).filter(([k]) => k !== "__name__").map(([k, v]) => `${k}="${v}"`);
  return `${metric.__name__ || ""}{${rest.join(", ")}}`;
}

const palette = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#3cb5a8", "#e0752d", "#8ab8ff", "#ffb357"];

// ---- data sources ----------------------------------------------------------------------

function substitute(expr, variables) {
  let out = expr;
  for (const [name, value] of Object.entries(variables)) out = out.split("${" + name + "}").join(value).split("$" + name).join(value);
  return out;
}

async function promRange(expr, start, end) {
  const step = Math.max(15, Math.round((end - start) / 1000 / 240));
  const q = new URLSearchParams({ query: expr, start: start / 1000, end: end / 1000, step });
  const body = await api(`/api/v1/query_range?${q}`);
  return body.data.result.map(s => ({ metric: s.metric, points: s.values.map(([t, v]) => [t, Number(v)]) }));
}

async function promInstant(expr, at) {
  const body = await api(`/api/v1/query?${new URLSearchParams({ query: expr, time: at / 1000 })}`);
  if (body.data.resultType === "scalar") return [{ metric: {}, value: Number(body.data.result[1]) }];
  return body.data.result.map(s => ({ metric: s.metric, value: Number(s.value[1]) }));
}

async function sqlQuery(sql, start, end) {
  const text = sql.split("$__from").join(String(start)).split("$__to").join(String(end));
  return api("/monitoring/sql", { method: "POST", body: JSON.stringify({ sql: text }) });
}

// ---- widgets -----------------------------------------------------------------------------

function chart(body, series, unit, ctx) {
  // Align every series on the union of their timestamps.
  const times = [...new Set(series.flatMap(s => s.points.map(p => p[0])))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const data = [times];
  for (const s of series) {
    const column = new Array(times.length).fill(null);
    for (const [t, v] of s.points) column[index.get(t)] = Number.isFinite(v) ? v : null;
    data.push(column);
  }
  const width = Math.max(200, body.clientWidth - 4);
  // Room for the axis and for the legend's rows (about four series a row).
  const height = Math.max(80, body.clientHeight - 36 - (series.length <= 8 ? 18 * Math.ceil(series.length / 4) : 0));
  const opts = {
    width, height,
    // The x axis is the whole range asked for, even when data covers a part of it.
    scales: { x: { time: true, range: () => [ctx.start / 1000, ctx.end / 1000] } },
    axes: [{ stroke: "#8e8e8e", grid: { stroke: "#2c3235" } },
           { stroke: "#8e8e8e", grid: { stroke: "#2c3235" }, size: 70, values: (u, vals) => vals.map(v => fmt(v, unit)) }],
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: palette[i % palette.length], width: 1.5,
                                              points: { show: times.length < 30 }, value: (u, v) => fmt(v, unit) }))],
    legend: { show: series.length <= 8 },
  };
  body.replaceChildren();
  // eslint-disable-next-line no-undef
  new uPlot(opts, data, body);
}

function table(body, columns, rows) {
  body.replaceChildren(el("table", {}, el("tr", {}, columns.map(c => el("th", {}, c))),
    rows.map(r => el("tr", {}, r.map(v => el("td", {}, v === null || v === undefined ? "" : (v instanceof Node ? v : String(v))))))));
}

function bars(body, items, unit, decimals) {
  const max = Math.max(...items.map(i => Math.abs(i.value)), 1e-9);
  body.replaceChildren(el("div", { class: "bars" }, items.map(i =>
    el("div", {}, el("span", { style: "width: 40%; overflow: hidden" }, i.label),
      el("span", { class: "bar", style: `width: ${Math.max(1, 50 * Math.abs(i.value) / max)}%` }),
      el("span", {}, fmt(i.value, unit, decimals))))));
}

function sqlSeries(result) {
  // First column the time, the numeric others one series each.
  const cols = result.columns.map(c => c.name);
  return cols.slice(1).map((name, i) => ({
    label: name,
    points: result.rows.map(r => [new Date(r[0]).getTime() / 1000, Number(r[i + 1])]),
  }));
}

async function renderWidget(widget, kind, body, ctx) {
  const v = widget.visualization;
  const viz = v.kind;
  const exprs = widget.queries.map(q => ({ ...q, expr: substitute(q.expr, ctx.variables) }));
  if (kind === "prometheus") {
    if (viz === "timeseries") {
      const all = [];
      for (const q of exprs) {
        for (const s of await promRange(q.expr, ctx.start, ctx.end)) all.push({ label: legend(q.legend, s.metric), points: s.points });
      }
      if (!all.length) { body.replaceChildren(el("div", { class: "muted" }, "no data in this range")); return "empty"; }
      chart(body, all, v.unit, ctx);
      return "ok";
    }
    const results = [];
    for (const q of exprs) for (const s of await promInstant(q.expr, ctx.end)) results.push({ label: legend(q.legend, s.metric), value: s.value });
    const values = results.filter(r => Number.isFinite(r.value));
    if (!values.length) { body.replaceChildren(el("div", { class: "stat muted" }, "no data")); return "empty"; }
    if (viz === "stat" || viz === "gauge") {
      const value = values[0].value;
      const color = thresholdColor(value, v.thresholds);
      body.replaceChildren(el("div", { class: "stat", style: color ? `color: ${color}` : "" }, fmt(value, v.unit, v.decimals)));
      return "ok";
    }
    if (viz === "barchart") { bars(body, values, v.unit, v.decimals); return "ok"; }
    table(body, ["series", "value"], values.map(r => [r.label, fmt(r.value, v.unit, v.decimals)]));
    return "ok";
  }
  if (kind === "sql") {
    const result = await sqlQuery(exprs[0].expr, ctx.start, ctx.end);
    if (!result.rows.length) { body.replaceChildren(el("div", { class: "muted" }, "no rows")); return "empty"; }
    if (viz === "timeseries") { chart(body, sqlSeries(result), v.unit, ctx); return "ok"; }
    if (viz === "stat" || viz === "gauge") {
      const value = Number(result.rows[0][0]);
      body.replaceChildren(el("div", { class: "stat" }, fmt(value, v.unit, v.decimals)));
      return Number.isFinite(value) ? "ok" : "empty";
    }
    if (viz === "barchart") { bars(body, result.rows.map(r => ({ label: String(r[0]), value: Number(r[1]) })), v.unit, v.decimals); return "ok"; }
    table(body, result.columns.map(c => c.name), result.rows);
    return "ok";
  }
  if (kind === "jaeger") {
    if (viz === "service_map") return renderServiceMap(body, ctx);
    const q = new URLSearchParams(exprs[0].expr);
    q.set("start", String(ctx.start)); q.set("end", String(ctx.end));
    const found = await api(`/monitoring/tracing/traces?${q}`);
    const traces = found.traces || found;
    if (!traces.length) { body.replaceChildren(el("div", { class: "muted" }, "no traces")); return "empty"; }
    table(body, ["trace", "root", "start", "duration", "spans", "errors"], traces.map(t => [
      el("a", { href: `#/trace/${t.trace_id}` }, t.trace_id.slice(0, 16)), `${t.root_service} ${t.root_operation}`,
      timeText(t.start_time_us / 1000), fmt(t.duration_us / 1000, "ms"), t.span_count, t.error_count]));
    return "ok";
  }
  if (kind === "alerts") return renderAlertTable(body, ctx);
  if (kind === "pipeline") {
    const health = await api("/monitoring/health");
    const parts = (health.kafka && health.kafka.partitions) || [];
    if (!health.kafka || !health.kafka.connected) { body.replaceChildren(el("div", { class: "muted" }, "Kafka not connected")); return "empty"; }
    if (viz === "stat" || viz === "gauge") {
      body.replaceChildren(el("div", { class: "stat" }, fmt(health.kafka.total_lag, v.unit || "short", 0)));
      return "ok";
    }
    table(body, ["topic", "partition", "committed", "high watermark", "lag"],
      parts.map(p => [p.topic, p.partition, p.committed_offset, p.high_watermark, p.lag]));
    return parts.length ? "ok" : "empty";
  }
  if (kind === "services") {
    const s = await api("/monitoring/services");
    table(body, ["service", "status", "req/s", "errors", "p95", "reasons"], s.services.map(x => [
      x.service, el("span", { class: x.status }, x.status), fmt(x.request_rate_per_second), fmt(x.error_ratio, "percentunit"),
      fmt(x.latency_p95_ms, "ms"), x.reasons.join("; ")]));
    return s.services.length ? "ok" : "empty";
  }
  throw new Error(`unknown data source kind ${kind}`);
}

async function renderServiceMap(body, ctx) {
  const edges = await api(`/jaeger/api/dependencies?endTs=${ctx.end}&lookback=${ctx.end - ctx.start}`);
  const links = edges.data || [];
  if (!links.length) { body.replaceChildren(el("div", { class: "muted" }, "no calls between services")); return "empty"; }
  const names = [...new Set(links.flatMap(l => [l.parent, l.child]))].sort();
  const w = Math.max(300, body.clientWidth - 8), h = Math.max(200, body.clientHeight - 8);
  const r = Math.min(w, h) / 2 - 40;
  const pos = new Map(names.map((n, i) => [n, [w / 2 + r * Math.cos(2 * Math.PI * i / names.length), h / 2 + r * Math.sin(2 * Math.PI * i / names.length)]]));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", "100%"); svg.setAttribute("height", "100%");
  const max = Math.max(...links.map(l => l.callCount));
  for (const l of links) {
    const [x1, y1] = pos.get(l.parent), [x2, y2] = pos.get(l.child);
    const line = document.createElementNS(ns, "line");
    Object.entries({ x1, y1, x2, y2, stroke: "#5794f2", "stroke-opacity": 0.7, "stroke-width": 1 + 4 * l.callCount / max }).forEach(([k, v]) => line.setAttribute(k, v));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${l.parent} → ${l.child}: ${l.callCount} calls`;
    line.append(title);
    svg.append(line);
  }
  for (const [n, [x, y]] of pos) {
    const c = document.createElementNS(ns, "circle");
    Object.entries({ cx: x, cy: y, r: 7, fill: "#73bf69" }).forEach(([k, v]) => c.setAttribute(k, v));
    const t = document.createElementNS(ns, "text");
    Object.entries({ x: x + 10, y: y + 4 }).forEach(([k, v]) => t.setAttribute(k, v));
    t.textContent = n;
    svg.append(c, t);
  }
  body.replaceChildren(svg);
  return "ok";
}

// ---- pages -----------------------------------------------------------------------------

function schedule(render) {
  clearInterval(state.timer);
  const every = Number(document.getElementById("refresh").value);
  if (every > 0) state.timer = setInterval(render, every);
}

async function dashboardList() {
  const list = await api("/monitoring/dashboards");
  main.replaceChildren(el("h1", {}, "Dashboards"), el("div", { class: "list" }, list.dashboards.map(d =>
    el("div", { class: "card", "data-dashboard": d.id },
      el("a", { href: `#/d/${d.id}` }, d.title), d.builtin ? el("span", { class: "tag" }, "built-in") : null,
      el("p", {}, d.description), el("p", {}, d.tags.map(t => el("span", { class: "tag" }, t)))))));
}

async function dashboardPage(id) {
  const d = await api(`/monitoring/dashboards/${encodeURIComponent(id)}`);
  const kinds = Object.fromEntries(d.datasources.map(s => [s.id, s.kind]));
  const variables = {};
  const bar = el("div", { class: "variables" });
  for (const v of d.variables) {
    const q = v.metric ? `?${new URLSearchParams({ "match[]": v.metric })}` : "";
    const values = (await api(`/api/v1/label/${encodeURIComponent(v.label)}/values${q}`)).data;
    const select = el("select", { "data-variable": v.name }, v.include_all ? el("option", { value: ".*" }, "All") : null,
      values.map(x => el("option", { value: x }, x)));
    variables[v.name] = select.value;
    select.addEventListener("change", () => { variables[v.name] = select.value; render(); });
    bar.append(el("label", {}, `${v.name} `, select));
  }
  const grid = el("div", { class: "grid" });
  const cells = d.widgets.map(w => {
    const body = el("div", { class: "body" });
    const cell = el("div", { class: "widget", "data-widget": w.id, "data-kind": w.visualization.kind, "data-state": "loading",
      style: `grid-column: ${w.position.x + 1} / span ${w.position.w}; grid-row: ${w.position.y + 1} / span ${w.position.h}` },
      el("h3", { title: w.description || w.title }, w.title), body);
    grid.append(cell);
    return { w, cell, body };
  });
  main.replaceChildren(el("h1", {}, d.title, " ", el("span", { class: "muted" }, `v${d.version}`)), bar, grid);
  const generation = ++state.generation;
  async function render() {
    if (generation !== state.generation) return;
    const end = now(), start = end - rangeMs();
    await Promise.all(cells.map(async ({ w, cell, body }) => {
      try {
        cell.dataset.state = await renderWidget(w, kinds[w.datasource], body, { start, end, variables });
      } catch (e) {
        cell.dataset.state = "error";
        body.replaceChildren(el("div", { class: "error" }, e.message));
      }
    }));
  }
  await render();
  schedule(render);
}

async function renderAlertTable(body) {
  const a = await api("/monitoring/alerts");
  // Each alert is the routed alert's fields with the leader's `receiver`, `muted` and
  // `acknowledged`.
  const firing = a.alerts.filter(x => x.status === "firing");
  if (!firing.length) { body.replaceChildren(el("div", { class: "muted" }, "nothing firing")); return "empty"; }
  table(body, ["alert", "service", "severity", "since", "state", ""], firing.map(x => {
    const l = x.labels;
    return [l.alertname, l.service, el("span", { class: l.severity }, l.severity), timeText(x.starts_at_ms),
      x.muted ? "silenced" : x.acknowledged ? "acknowledged" : "open",
      el("span", {},
        el("button", { "data-action": "silence", onclick: () => silence([{ name: "alertname", value: l.alertname }, { name: "service", value: l.service }], "from the viewer").then(() => route()) }, "Silence 1h"),
        " ",
        el("button", { "data-action": "ack", onclick: () => api(`/monitoring/alerts/${x.fingerprint}/ack`, { method: "POST", body: JSON.stringify({ by: "viewer-ui", comment: "acknowledged in the viewer" }) }).then(() => route()) }, "Acknowledge"))];
  }));
  return "ok";
}

async function silence(matchers, comment, hours) {
  const endsAt = new Date(now() + (hours || 1) * 3600000).toISOString();
  return api("/monitoring/alerts/silences", { method: "POST", body: JSON.stringify({
    matchers: matchers.map(m => ({ name: m.name, value: m.value, isRegex: false, isEqual: true })),
    endsAt, createdBy: "viewer-ui", comment }) });
}

async function alertsPage() {
  const body = el("div", {});
  const status = el("span", { class: "muted", id: "silence-status" });
  const form = el("form", { class: "silence", id: "new-silence" },
    el("label", {}, "label ", el("input", { name: "name", value: "alertname", size: 12 })),
    el("label", {}, "= ", el("input", { name: "value", size: 20, placeholder: "value" })),
    el("label", {}, "hours ", el("input", { name: "hours", value: "1", size: 3 })),
    el("label", {}, "comment ", el("input", { name: "comment", size: 24, placeholder: "why" })),
    el("button", { type: "submit" }, "Create silence"), status);
  form.addEventListener("submit", async e => {
    e.preventDefault();
    const f = new FormData(form);
    try {
      const made = await silence([{ name: f.get("name"), value: f.get("value") }], f.get("comment") || "from the viewer", Number(f.get("hours")) || 1);
      status.textContent = `silence ${made.silenceID} created`;
      status.dataset.silenceId = made.silenceID;
      await listSilences();
    } catch (err) { status.textContent = err.message; status.className = "error"; }
  });
  const silences = el("div", {});
  async function listSilences() {
    const all = await api("/monitoring/alerts/silences");
    table(silences, ["id", "matchers", "state", "ends", "by", "comment"], all.map(s => [s.id,
      s.matchers.map(m => `${m.name}${m.isEqual === false ? "!" : ""}${m.isRegex ? "=~" : "="}"${m.value}"`).join(", "),
      s.status.state, s.endsAt, s.createdBy, s.comment]));
  }
  main.replaceChildren(el("h1", {}, "Alerts"), body, el("h2", {}, "Silences"), form, silences);
  const render = async () => {
    try { await renderAlertTable(body); await listSilences(); } catch (e) { body.replaceChildren(el("div", { class: "error" }, e.message)); }
  };
  await render();
  schedule(render);
}

async function servicesPage() {
  const body = el("div", { class: "widget", style: "min-height: 300px" });
  main.replaceChildren(el("h1", {}, "Services"), body);
  const render = () => renderWidget({ queries: [], visualization: { kind: "service_list" } }, "services", body, {}).catch(e => body.replaceChildren(el("div", { class: "error" }, e.message)));
  await render();
  schedule(render);
}

async function tracePage(id) {
  clearInterval(state.timer);
  const spans = await api(`/monitoring/tracing/traces/${encodeURIComponent(id)}`);
  const list = spans.spans || spans;
  const start = Math.min(...list.map(s => s.start_time_us));
  const end = Math.max(...list.map(s => s.start_time_us + s.duration_us));
  const total = Math.max(1, end - start);
  main.replaceChildren(el("h1", {}, `Trace ${id}`),
    el("p", { class: "muted" }, `${list.length} spans, ${fmt(total / 1000, "ms")}`),
    el("div", { class: "waterfall", "data-trace": id }, list.map(s => el("div", { class: "row" },
      el("div", { class: "name", title: s.operation }, `${s.service}: ${s.operation}`),
      el("div", { class: "lane" }, el("div", { class: `span ${s.status === "error" ? "error" : ""}`,
        title: `${fmt(s.duration_us / 1000, "ms")}`,
        style: `left: ${100 * (s.start_time_us - start) / total}%; width: ${100 * s.duration_us / total}%` }))))));
}

async function route() {
  const hash = location.hash || "#/";
  try {
    if (hash.startsWith("#/d/")) await dashboardPage(decodeURIComponent(hash.slice(4)));
    else if (hash === "#/alerts") await alertsPage();
    else if (hash === "#/services") await servicesPage();
    else if (hash.startsWith("#/trace/")) await tracePage(decodeURIComponent(hash.slice(8)));
    else { clearInterval(state.timer); await dashboardList(); }
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

document.getElementById("trace-lookup").addEventListener("submit", e => {
  e.preventDefault();
  const id = document.getElementById("trace-id").value.trim();
  if (id) location.hash = `#/trace/${id}`;
});
for (const id of ["range", "refresh", "roles"]) document.getElementById(id).addEventListener("change", route);
window.addEventListener("hashchange", route);
route();
