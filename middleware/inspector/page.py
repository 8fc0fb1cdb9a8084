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

from .page_detail import DETAIL_JS
from .page_list import LIST_JS
from .page_style import CSS

__all__ = ["CONTENT_SECURITY_POLICY", "page"]

_CSS: Final = CSS
_JS: Final = LIST_JS + DETAIL_JS

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
<input id="filter" type="search" autocomplete="off" spellcheck="false"
 placeholder="filter: any text, 5xx, status:404, method:POST, path:/items, is:ws, level:error">
<button id="clear" type="button">Clear</button>
<span id="count">0 requests</span></header>
{notice}<main>
<section id="list"><table>
<thead><tr><th data-key="id">time</th><th data-key="method">method</th>
<th data-key="path">route / path</th><th data-key="status">status</th>
<th data-key="duration_ms">ms</th><th data-key="size">bytes</th><th data-key="logs">logs</th>
<th data-key="request_id">request id</th></tr></thead>
<tbody id="rows"></tbody></table>
<p id="empty" class="hint">&nbsp;No requests yet: make one, it appears here.</p></section>
<section id="detail">
<p class="hint">Select a request to see its spans, log lines, fields and headers.</p>
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
