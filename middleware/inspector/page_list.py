"""The inspector page's script, first half: the request list (live rows, filter, sort,
clear). It only puts text into the DOM (``append`` of strings), never HTML."""

from __future__ import annotations

from typing import Final

__all__ = ["LIST_JS"]

LIST_JS: Final = """
"use strict";
const rows = document.getElementById("rows");
const detail = document.getElementById("detail");
const live = document.getElementById("live");
const count = document.getElementById("count");
const empty = document.getElementById("empty");
const filterBox = document.getElementById("filter");
const maxRows = Number(document.body.dataset.max) || 200;
let newest = 0;
let selected = null;
let all = [];
let sortKey = "id";
let sortDir = -1;

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

// Filter words, all of which a row must match: status:5xx (or 5xx, 404), method:POST,
// path:/items, is:ws / is:http, level:error; any other word is looked for in every field.
function matcher(text) {
  const tests = [];
  for (const word of text.trim().toLowerCase().split(/\\s+/)) {
    if (!word) continue;
    const [key, value] = word.includes(":") ? word.split(/:(.*)/s) : ["", word];
    if (key === "status" || (!key && /^[1-5](xx|\\d\\d)$/.test(value))) {
      tests.push((r) => r.status != null && (value.endsWith("xx") ?
        String(r.status)[0] === value[0] : String(r.status) === value));
    } else if (key === "method") tests.push((r) => r.method.toLowerCase() === value);
    else if (key === "path") {
      tests.push((r) => r.path.toLowerCase().includes(value) ||
        (r.route || "").toLowerCase().includes(value));
    } else if (key === "is" || key === "kind") {
      tests.push((r) => (value === "ws" ? "websocket" : value) === r.kind);
    } else if (key === "level") tests.push((r) => r.log_level === value);
    else {
      tests.push((r) => Object.values(r).some((v) =>
        v != null && String(v).toLowerCase().includes(word)));
    }
  }
  return (r) => tests.every((test) => test(r));
}

function sortValue(r) {
  const value = r[sortKey];
  return value == null ? "" : value;
}
function compare(a, b) {
  const x = sortValue(a), y = sortValue(b);
  if (x === y) return b.id - a.id;
  return (x < y ? -1 : 1) * sortDir;
}

function rowOf(r) {
  const where = el("td", {class: "path", title: r.path}, r.route || r.path);
  if (r.route && r.route !== r.path) where.append(el("span", {class: "raw"}, " " + r.path));
  const code = r.status == null ? "-" : String(r.status);
  const status = el("td", {class: statusClass(r.status)}, code);
  if (r.error) status.append(el("span", {class: "err"}, " " + r.error));
  const method = r.kind === "websocket" ? el("span", {class: "ws"}, "WS") : r.method;
  const size = r.kind === "websocket" ? r.received + " in / " + r.size + " out" : String(r.size);
  const level = "num lv lv-" + (r.log_level || "none");
  const logs = el("td", {class: level}, r.logs ? String(r.logs) : "");
  const mark = r.id === selected ? " selected" : "";
  const tr = el("tr", {class: "req" + mark, "data-id": String(r.id)},
    el("td", {}, clock(r.time)), el("td", {}, method), where, status,
    el("td", {class: "num"}, r.duration_ms.toFixed(1)), el("td", {class: "num"}, size), logs,
    el("td", {class: "rid", title: (r.request_id || "") + (r.pid ? " (worker pid " + r.pid + ")" :
      "")}, (r.request_id || "").slice(0, 12)));
  tr.addEventListener("click", () => show(r.id));
  return tr;
}

function render() {
  const keep = matcher(filterBox.value);
  const shown = all.filter(keep).sort(compare);
  rows.replaceChildren(...shown.map(rowOf));
  count.textContent = (shown.length === all.length ? "" : shown.length + " of ") +
    all.length + " requests";
  empty.hidden = all.length > 0;
  for (const th of document.querySelectorAll("th[data-key]")) {
    th.className = th.dataset.key === sortKey ? (sortDir > 0 ? "asc" : "desc") : "";
  }
}

let pending = false;
function addRow(r) {
  if (r.id <= newest) return;
  newest = r.id;
  all.push(r);
  if (all.length > maxRows) all = all.slice(all.length - maxRows);
  if (!pending) {  // a burst of events is drawn once
    pending = true;
    setTimeout(() => { pending = false; render(); }, 20);
  }
}

for (const th of document.querySelectorAll("th[data-key]")) {
  th.addEventListener("click", () => {
    if (sortKey === th.dataset.key) sortDir = -sortDir;
    else { sortKey = th.dataset.key; sortDir = sortKey === "id" ? -1 : 1; }
    render();
  });
}
filterBox.addEventListener("input", render);
document.getElementById("clear").addEventListener("click", async () => {
  await fetch("api/clear", {method: "POST", headers: {"x-asgikit-inspector": "clear"}});
  all = [];
  selected = null;
  detail.replaceChildren(el("p", {class: "hint"}, "Cleared."));
  render();
});
"""
