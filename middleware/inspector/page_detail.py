"""The inspector page's script, second half: one request's detail (span waterfall with
its ruler, log lines, traceback opened on the app's frame, copy as curl) and the live
event stream. Like the first half, it only puts text into the DOM."""

from __future__ import annotations

from typing import Final

__all__ = ["DETAIL_JS"]

DETAIL_JS: Final = """
function kv(pairs) {
  const table = el("table", {class: "kv"});
  for (const [key, value] of pairs) {
    table.append(el("tr", {}, el("th", {}, key),
      el("td", {}, typeof value === "string" ? value : JSON.stringify(value))));
  }
  return table;
}
function ms(value) {
  const digits = value < 1 ? 3 : value < 100 ? 2 : 1;
  return value.toFixed(digits) + " ms";
}

function spanInfo(span, info) {
  const parts = [el("h3", {}, span.name + " (" + span.kind + ", " + span.status + ", " +
    ms(span.duration_ms) + ", at +" + ms(span.start_ms) + ")")];
  if (span.status_description) parts.push(el("p", {}, span.status_description));
  parts.push(kv(Object.entries(span.attributes)));
  for (const event of span.events) {
    parts.push(el("h3", {}, "event: " + event.name + " at " + ms(event.offset_ms)));
    parts.push(kv(Object.entries(event.attributes)));
  }
  info.replaceChildren(...parts);
}

// Ticks every 1, 2 or 5 x 10^n ms, about six of them across.
function ruler(low, total) {
  const raw = total / 6;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  const track = el("div", {class: "ruler"});
  for (let at = Math.ceil(low / step) * step; at <= low + total + step / 1e6; at += step) {
    const where = (at - low) / total * 100;
    const tick = el("span", {class: where > 92 ? "tick end" : "tick"}, at.toFixed(digits) + " ms");
    tick.style.left = where + "%";
    track.append(tick);
  }
  return el("div", {class: "ruler-row"}, el("div", {class: "span-name hint"}, "ms from start"),
    track);
}

function spanRow(span, depth, low, total, hasChildren) {
  const left = (span.start_ms - low) / total * 100;
  const width = span.duration_ms / total * 100;
  const bar = el("div", {class: "bar", title: ms(span.duration_ms)});
  bar.style.left = left + "%";
  bar.style.width = width + "%";  // at least 3px wide (CSS), however short
  const label = el("span", {class: "bar-label"}, ms(span.duration_ms));
  if (left + width <= 78) label.style.left = "calc(" + (left + width) + "% + 6px)";
  else if (left >= 15) label.style.right = "calc(" + (100 - left) + "% + 6px)";
  else { label.style.left = "calc(" + left + "% + 6px)"; label.classList.add("inside"); }
  const toggle = el("span", {class: "toggle"}, hasChildren ? "\\u25BE" : "");
  const name = el("div", {class: "span-name", title: span.name}, toggle, span.name);
  name.style.paddingLeft = 0.3 + depth * 1.1 + "em";
  const row = el("div", {class: "span-row" + (span.status === "ERROR" ? " error" : ""),
    "data-span": span.span_id || ""}, name, el("div", {class: "track"}, bar, label));
  return [row, toggle];
}

function waterfall(r) {
  if (!r.tracing) {
    return el("p", {class: "hint"}, "Tracing is not set up: the inspector found no " +
      "OpenTelemetry SDK TracerProvider to collect spans from.");
  }
  if (!r.spans.length) return el("p", {class: "hint"}, "No spans were recorded for this request.");
  const byId = new Map(r.spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const span of r.spans) {
    if (span.parent_id && byId.has(span.parent_id)) {
      if (!children.has(span.parent_id)) children.set(span.parent_id, []);
      children.get(span.parent_id).push(span);
    } else roots.push(span);
  }
  const low = Math.min(0, ...r.spans.map((s) => s.start_ms));
  const high = Math.max(r.duration_ms, ...r.spans.map((s) => s.start_ms + s.duration_ms));
  const total = Math.max(high - low, 0.001);
  const box = el("div", {class: "waterfall"}, ruler(low, total));
  const info = el("div", {class: "span-info"});
  const rowsOf = new Map();
  const collapsed = new Set();
  const setShown = (span, shown) => {
    for (const child of children.get(span.span_id) || []) {
      rowsOf.get(child).hidden = !shown;
      setShown(child, shown && !collapsed.has(child));
    }
  };
  const visit = (span, depth) => {
    const kids = children.get(span.span_id) || [];
    const [row, toggle] = spanRow(span, depth, low, total, kids.length > 0);
    rowsOf.set(span, row);
    toggle.addEventListener("click", (event) => {
      if (!kids.length) return;
      event.stopPropagation();
      const closing = !collapsed.has(span);
      if (closing) collapsed.add(span); else collapsed.delete(span);
      toggle.textContent = closing ? "\\u25B8" : "\\u25BE";
      row.classList.toggle("collapsed", closing);
      setShown(span, !closing);
    });
    row.addEventListener("click", () => {
      for (const open of box.querySelectorAll(".open")) open.classList.remove("open");
      row.classList.add("open");
      spanInfo(span, info);
    });
    box.append(row);
    for (const child of kids) visit(child, depth + 1);
  };
  for (const root of roots) visit(root, 0);
  return el("div", {}, box, info);
}

function logLines(r) {
  if (!r.log_lines.length) return el("p", {class: "hint"}, "No log lines while it ran.");
  const table = el("table", {class: "logs"});
  for (const line of r.log_lines) {
    const fields = Object.entries(line.fields).map(([k, v]) => k + "=" + v).join(" ");
    table.append(el("tr", {class: "log"},
      el("td", {class: "num hint"}, "+" + ms(Math.max(line.time - r.time, 0))),
      el("td", {class: "lv lv-" + line.level}, line.level),
      el("td", {class: "hint"}, line.logger),
      el("td", {class: "msg"}, line.event, " ", el("span", {class: "fields"}, fields))));
  }
  const parts = [table];
  if (r.logs_dropped) parts.push(el("p", {class: "hint"}, r.logs_dropped + " more not kept."));
  return el("div", {}, ...parts);
}

// The traceback, library frames dimmed, opened (scrolled) on the app's innermost frame.
function tracebackPane(exception) {
  const lines = exception.traceback.split("\\n");
  const pre = el("pre", {class: "tb"});
  const library = new Set(exception.library_lines);
  let here = null;
  lines.forEach((line, index) => {
    const focus = index === exception.focus_line || index === exception.focus_line + 1;
    const span = el("span", {class: focus ? "here" : library.has(index) ? "lib" : ""}, line);
    if (focus && here === null) here = span;
    pre.append(span, "\\n");
  });
  if (here !== null) {
    here.id = "focus-frame";
    requestAnimationFrame(() => { pre.scrollTop = here.offsetTop - pre.offsetTop - 40; });
  }
  return pre;
}

function curlButton(r) {
  const out = el("div", {});
  const button = el("button", {id: "copy-curl", type: "button"}, "Copy as curl");
  button.addEventListener("click", async () => {
    let note = "copied";
    try { await navigator.clipboard.writeText(r.curl); } catch (e) { note = "select it to copy"; }
    out.replaceChildren(el("pre", {class: "curl"}, r.curl), el("p", {class: "hint"}, note));
  });
  return [button, out];
}

async function show(id) {
  selected = id;
  for (const tr of rows.querySelectorAll("tr.selected")) tr.classList.remove("selected");
  const tr = rows.querySelector('tr[data-id="' + id + '"]');
  if (tr) tr.classList.add("selected");
  const response = await fetch("api/requests/" + id);
  if (selected !== id) return;
  if (!response.ok) {
    detail.replaceChildren(el("p", {class: "hint"}, "This request is no longer kept."));
    return;
  }
  const r = await response.json();
  const what = r.kind === "websocket" ? "WEBSOCKET" : r.method;
  const heading = el("h2", {}, what + " " + r.path + " ",
    el("span", {class: statusClass(r.status)}, r.status == null ? "-" : String(r.status)));
  const parts = [heading, el("p", {class: "hint"}, (r.route ? "route " + r.route + " - " : "") +
    ms(r.duration_ms) + " - " + (r.kind === "websocket" ? r.received + " messages in, " +
    r.size + " out" : r.size + " bytes") + (r.request_id ? " - request id " + r.request_id : "") +
    (r.pid ? " - worker pid " + r.pid : ""))];
  const [button, out] = r.curl ? curlButton(r) : [null, null];
  if (button) parts.push(button, out);
  if (r.exception) {
    parts.push(el("h3", {}, "Exception"), tracebackPane(r.exception));
  }
  parts.push(el("h3", {}, "Spans"), waterfall(r));
  parts.push(el("h3", {}, "Log lines (" + r.logs + ")"), logLines(r));
  parts.push(el("h3", {}, "Access log fields"), kv(Object.entries(r.fields)));
  parts.push(el("h3", {}, "Request headers"), kv(r.request_headers));
  if (r.kind === "http") parts.push(el("h3", {}, "Response headers"), kv(r.response_headers));
  detail.replaceChildren(...parts);
}

function connect() {
  const source = new EventSource("api/events?after=" + newest);
  source.addEventListener("request", (event) => addRow(JSON.parse(event.data)));
  source.onopen = () => { live.textContent = "live"; live.className = "on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "off"; };
}

async function load() {
  try {
    const response = await fetch("api/requests");
    const list = await response.json();
    for (const r of list.slice().reverse()) addRow(r);
  } finally {
    connect();
  }
}
load();
"""
