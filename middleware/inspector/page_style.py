"""The inspector page's stylesheet (inline, allowed by its hash in the page's CSP)."""

from __future__ import annotations

from typing import Final

__all__ = ["CSS"]

CSS: Final = """
:root { color-scheme: light dark; --fg: #1d232b; --muted: #6a737d; --line: #d8dde3;
  --bg: #ffffff; --panel: #f6f8fa; --sel: #dbeafe; --bar: #3b82f6; --err: #dc2626;
  --ok: #15803d; --warn: #b45309; --info: #2563eb; --here: #fef3c7;
  font: 13px/1.4 system-ui, sans-serif; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #8b949e;
  --line: #30363d; --bg: #0d1117; --panel: #161b22; --sel: #1f3a5f; --bar: #58a6ff;
  --info: #58a6ff; --here: #3d2e00; } }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg); height: 100vh;
  display: flex; flex-direction: column; }
header { display: flex; gap: 1em; align-items: center; padding: .4em 1em;
  border-bottom: 1px solid var(--line); background: var(--panel); }
h1 { font-size: 15px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 .5em; word-break: break-all; }
h3 { font-size: 12px; text-transform: uppercase; color: var(--muted); margin: 1.2em 0 .4em; }
#live.on { color: var(--ok); } #live.off { color: var(--warn); }
#count { color: var(--muted); }
#filter { flex: 1; max-width: 36em; font: inherit; padding: .2em .5em;
  border: 1px solid var(--line); border-radius: 4px; background: var(--bg); color: var(--fg); }
button { font: inherit; padding: .15em .7em; border: 1px solid var(--line); border-radius: 4px;
  background: var(--bg); color: var(--fg); cursor: pointer; }
button:hover { background: var(--sel); }
main { flex: 1; display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
  min-height: 0; }
#list { overflow: auto; border-right: 1px solid var(--line); }
#detail { overflow: auto; padding: .8em 1em; }
table { border-collapse: collapse; width: 100%; }
#list th { position: sticky; top: 0; background: var(--panel); text-align: left;
  font-weight: 600; padding: .3em .5em; border-bottom: 1px solid var(--line);
  cursor: pointer; user-select: none; white-space: nowrap; }
#list th.asc::after { content: " \\25B2"; font-size: 9px; }
#list th.desc::after { content: " \\25BC"; font-size: 9px; }
#list td { padding: .25em .5em; border-bottom: 1px solid var(--line); white-space: nowrap; }
tr.req { cursor: pointer; } tr.req:hover { background: var(--panel); }
tr.req.selected { background: var(--sel); }
td.path { max-width: 24em; overflow: hidden; text-overflow: ellipsis; }
.raw, .rid, .hint { color: var(--muted); }
.rid { font-family: ui-monospace, monospace; font-size: 11px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.s1, .s2 { color: var(--ok); } .s3 { color: var(--muted); } .s4 { color: var(--warn); }
.s5, .s0, .err { color: var(--err); }
.ws { font-size: 10px; border: 1px solid var(--muted); border-radius: 3px; padding: 0 .3em; }
.lv { font-size: 11px; font-weight: 600; text-transform: uppercase; }
.lv-debug { color: var(--muted); } .lv-info { color: var(--info); }
.lv-warning { color: var(--warn); } .lv-error, .lv-critical { color: var(--err); }
table.kv th { text-align: left; font-weight: 500; color: var(--muted); vertical-align: top;
  padding: .15em .8em .15em 0; white-space: nowrap; width: 1%; }
table.kv td { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
table.logs td { padding: .15em .5em .15em 0; vertical-align: top; font-size: 12px;
  white-space: nowrap; }
table.logs td.msg { font-family: ui-monospace, monospace; word-break: break-all; width: 100%;
  white-space: normal; }
.fields { color: var(--muted); }
pre.tb { background: var(--panel); border-left: 3px solid var(--err); padding: .6em;
  overflow: auto; font-size: 12px; white-space: pre-wrap; max-height: 26em; margin: 0; }
pre.tb .lib { color: var(--muted); }
pre.tb .here { background: var(--here); font-weight: 600; display: inline-block; width: 100%; }
pre.curl { background: var(--panel); padding: .6em; font-size: 12px; white-space: pre-wrap;
  word-break: break-all; }
.waterfall { border: 1px solid var(--line); border-radius: 4px; }
.ruler { position: relative; height: 1.6em; border-bottom: 1px solid var(--line);
  font-size: 10px; color: var(--muted); }
.tick { position: absolute; top: 0; bottom: 0; border-left: 1px solid var(--line);
  padding-left: 2px; white-space: nowrap; }
.tick.end { border-left: 0; border-right: 1px solid var(--line); padding: 0 2px 0 0;
  transform: translateX(-100%); }
.span-row { display: grid; grid-template-columns: 16em 1fr; align-items: center;
  border-bottom: 1px solid var(--line); cursor: pointer; min-height: 1.8em; }
.ruler-row { display: grid; grid-template-columns: 16em 1fr; }
.span-row:last-child { border-bottom: 0; } .span-row:hover { background: var(--panel); }
.span-row.open { background: var(--sel); }
.span-row[hidden] { display: none; }
.span-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; padding: 0 .5em; }
.toggle { display: inline-block; width: 1.1em; color: var(--muted); }
.track { position: relative; height: 1.8em; margin-right: .5em; }
.bar { position: absolute; top: .4em; height: 1em; border-radius: 2px; background: var(--bar);
  min-width: 3px; }
.span-row.error .bar { background: var(--err); }
.bar-label { position: absolute; top: .25em; font-size: 11px; color: var(--muted);
  white-space: nowrap; }
.bar-label.inside { color: #fff; }
.span-info { padding: .4em .6em; }
"""
