"""DevInspectorMiddleware's page: one HTML document with its CSS and vanilla JS inline.

No build step, no CDN, nothing fetched but the inspector's own JSON: it works offline.
Everything the page shows comes from requests (client-controlled), so it only ever puts
text into the DOM (``append`` of strings, ``textContent``), never HTML. The inline
script and style are allowed by their hashes in the Content-Security-Policy; nothing
else may run or load.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Final

__all__ = ["CONTENT_SECURITY_POLICY", "page"]

_CSS: Final = """
:root { color-scheme: light dark; --fg: #1d232b; --muted: #6a737d; --line: #d8dde3;
  --bg: #ffffff; --panel: #f6f8fa; --sel: #dbeafe; --bar: #3b82f6; --err: #dc2626;
  --ok: #15803d; --warn: #b45309; font: 13px/1.4 system-ui, sans-serif; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #8b949e;
  --line: #30363d; --bg: #0d1117; --panel: #161b22; --sel: #1f3a5f; --bar: #58a6ff; } }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg); height: 100vh;
  display: flex; flex-direction: column; }
header { display: flex; gap: 1em; align-items: baseline; padding: .5em 1em;
  border-bottom: 1px solid var(--line); background: var(--panel); }
h1 { font-size: 15px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 .5em; word-break: break-all; }
h3 { font-size: 12px; text-transform: uppercase; color: var(--muted); margin: 1.2em 0 .4em; }
#live.on { color: var(--ok); } #live.off { color: var(--warn); }
#count { color: var(--muted); }
main { flex: 1; display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
  min-height: 0; }
#list { overflow: auto; border-right: 1px solid var(--line); }
#detail { overflow: auto; padding: .8em 1em; }
table { border-collapse: collapse; width: 100%; }
#list th { position: sticky; top: 0; background: var(--panel); text-align: left;
  font-weight: 600; padding: .3em .5em; border-bottom: 1px solid var(--line); }
#list td { padding: .25em .5em; border-bottom: 1px solid var(--line); white-space: nowrap; }
tr.req { cursor: pointer; } tr.req:hover { background: var(--panel); }
tr.req.selected { background: var(--sel); }
td.path { max-width: 24em; overflow: hidden; text-overflow: ellipsis; }
.raw, .rid, .hint { color: var(--muted); }
.rid { font-family: ui-monospace, monospace; font-size: 11px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.s2 { color: var(--ok); } .s3 { color: var(--muted); } .s4 { color: var(--warn); }
.s5, .s0, .err { color: var(--err); }
table.kv th { text-align: left; font-weight: 500; color: var(--muted); vertical-align: top;
  padding: .15em .8em .15em 0; white-space: nowrap; width: 1%; }
table.kv td { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
pre.tb { background: var(--panel); border-left: 3px solid var(--err); padding: .6em;
  overflow: auto; font-size: 12px; white-space: pre-wrap; }
.waterfall { border: 1px solid var(--line); border-radius: 4px; }
.span-row { display: grid; grid-template-columns: 16em 1fr; align-items: center;
  border-bottom: 1px solid var(--line); cursor: pointer; min-height: 1.8em; }
.span-row:last-child { border-bottom: 0; } .span-row:hover { background: var(--panel); }
.span-row.open { background: var(--sel); }
.span-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; padding: 0 .5em; }
.track { position: relative; height: 1.8em; margin-right: .5em; }
.bar { position: absolute; top: .4em; height: 1em; border-radius: 2px; background: var(--bar);
  min-width: 2px; }
.span-row.error .bar { background: var(--err); }
.bar-label { position: absolute; top: .25em; font-size: 11px; color: var(--muted);
  white-space: nowrap; }
.bar-label.inside { color: #fff; }
.span-info { padding: .4em .6em; }
"""

_JS: Final = """
"use strict";
const rows = document.getElementById("rows");
const detail = document.getElementById("detail");
const live = document.getElementById("live");
const count = document.getElementById("count");
const empty = document.getElementById("empty");
const maxRows = Number(document.body.dataset.max) || 200;
let newest = 0;
let selected = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child == null ? "" : child);
  return node;
}
function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], {hour12: false}) + "." +
    String(d.getMilliseconds()).padStart(3, "0");
}
function statusClass(status) { return status == null ? "s0" : "s" + Math.floor(status / 100); }

function addRow(r) {
  if (r.id <= newest) return;
  newest = r.id;
  const where = el("td", {class: "path", title: r.path}, r.route || r.path);
  if (r.route && r.route !== r.path) where.append(el("span", {class: "raw"}, " " + r.path));
  const code = r.status == null ? "-" : String(r.status);
  const status = el("td", {class: statusClass(r.status)}, code);
  if (r.error) status.append(el("span", {class: "err"}, " " + r.error));
  const tr = el("tr", {class: "req", "data-id": String(r.id)},
    el("td", {}, clock(r.time)), el("td", {}, r.method), where, status,
    el("td", {class: "num"}, r.duration_ms.toFixed(1)), el("td", {class: "num"}, String(r.size)),
    el("td", {class: "rid", title: r.request_id || ""}, (r.request_id || "").slice(0, 12)));
  tr.addEventListener("click", () => show(r.id));
  rows.prepend(tr);
  while (rows.children.length > maxRows) rows.lastElementChild.remove();
  count.textContent = rows.children.length + " requests";
  empty.hidden = true;
}

function kv(pairs) {
  const table = el("table", {class: "kv"});
  for (const [key, value] of pairs) {
    table.append(el("tr", {}, el("th", {}, key),
      el("td", {}, typeof value === "string" ? value : JSON.stringify(value))));
  }
  return table;
}

function spanInfo(span, info) {
  const parts = [el("h3", {}, span.name + " (" + span.kind + ", " + span.status + ")")];
  if (span.status_description) parts.push(el("p", {}, span.status_description));
  parts.push(kv(Object.entries(span.attributes)));
  for (const event of span.events) {
    parts.push(el("h3", {}, "event: " + event.name + " at " + event.offset_ms.toFixed(2) + " ms"));
    parts.push(kv(Object.entries(event.attributes)));
  }
  info.replaceChildren(...parts);
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
  const box = el("div", {class: "waterfall"});
  const info = el("div", {class: "span-info"});
  const visit = (span, depth) => {
    const bar = el("div", {class: "bar", title: span.duration_ms.toFixed(3) + " ms"});
    const left = (span.start_ms - low) / total * 100;
    bar.style.left = left + "%";
    bar.style.width = Math.max(span.duration_ms / total * 100, 0.2) + "%";
    const label = el("span", {class: "bar-label"}, span.duration_ms.toFixed(2) + " ms");
    const end = left + span.duration_ms / total * 100;
    if (end <= 80) label.style.left = end + 1 + "%";
    else if (left >= 20) label.style.right = 101 - left + "%";
    else { label.style.left = left + 1 + "%"; label.classList.add("inside"); }
    const name = el("div", {class: "span-name", title: span.name}, span.name);
    name.style.paddingLeft = 0.5 + depth * 1.1 + "em";
    const row = el("div", {class: "span-row" + (span.status === "ERROR" ? " error" : ""),
      "data-span": span.span_id || ""}, name, el("div", {class: "track"}, bar, label));
    row.addEventListener("click", () => {
      for (const open of box.querySelectorAll(".open")) open.classList.remove("open");
      row.classList.add("open");
      spanInfo(span, info);
    });
    box.append(row);
    for (const child of children.get(span.span_id) || []) visit(child, depth + 1);
  };
  for (const root of roots) visit(root, 0);
  return el("div", {}, box, info);
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
  const heading = el("h2", {}, r.method + " " + r.path + " ",
    el("span", {class: statusClass(r.status)}, r.status == null ? "-" : String(r.status)));
  const parts = [heading, el("p", {class: "hint"}, (r.route ? "route " + r.route + " - " : "") +
    r.duration_ms.toFixed(2) + " ms - " + r.size + " bytes" +
    (r.request_id ? " - request id " + r.request_id : ""))];
  parts.push(el("h3", {}, "Spans"), waterfall(r));
  if (r.exception) {
    parts.push(el("h3", {}, "Exception"),
      el("pre", {class: "tb"},
        r.exception.traceback || r.exception.type + ": " + r.exception.message));
  }
  parts.push(el("h3", {}, "Access log fields"), kv(Object.entries(r.fields)));
  parts.push(el("h3", {}, "Request headers"), kv(r.request_headers));
  parts.push(el("h3", {}, "Response headers"), kv(r.response_headers));
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

_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>asgikit inspector</title>
<style>{css}</style>
</head>
<body data-max="{max_rows}">
<header><h1>asgikit inspector</h1><span id="live" class="off">connecting</span>
<span id="count">0 requests</span></header>
{notice}<main>
<section id="list"><table>
<thead><tr><th>time</th><th>method</th><th>route / path</th><th>status</th><th>ms</th>
<th>bytes</th><th>request id</th></tr></thead>
<tbody id="rows"></tbody></table>
<p id="empty" class="hint">&nbsp;No requests yet: make one, it appears here.</p></section>
<section id="detail"><p class="hint">Select a request to see its spans, fields and headers.</p>
</section>
</main>
<script>{js}</script>
</body>
</html>
"""


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; connect-src 'self'; "
    f"script-src {_hash(_JS)}; style-src {_hash(_CSS)}; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
).encode("ascii")
"""Only the inline script and style (by hash) run; only the inspector's JSON is fetched."""


def page(max_rows: int, notice: str = "") -> bytes:
    """The page, keeping at most *max_rows* rows in its list, with *notice* (plain text)
    under its heading."""
    shown = f'<p id="notice" class="hint">{html.escape(notice)}</p>\n' if notice else ""
    return _HTML.format(css=_CSS, js=_JS, max_rows=max_rows, notice=shown).encode("utf-8")
