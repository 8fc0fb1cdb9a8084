"""AccessLogMiddleware's pure pieces: the line's fields, redaction, route templates, options.

Nothing here measures or decides: the middleware times the request, picks the level and
samples; ``LineBuilder`` turns what it measured and the scope into the line's fields.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import unquote

from opentelemetry.trace import SpanContext

from asgikit._options import string_list
from asgikit.logging import LEVELS, Field
from asgikit.scopes import CHAIN_KEY
from asgikit.types import Message, Scope

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_REDACTED_QUERY_PARAMS",
    "PEER_SCOPE_KEY",
    "REDACTED",
    "REQUEST_ID_SCOPE_KEY",
    "TIMEOUT_SCOPE_KEY",
    "LineBuilder",
    "QueryRedactor",
    "exclusions",
    "file_bytes",
    "header_names",
    "level_number",
    "positive_seconds",
    "route_of",
    "route_template",
    "status_level_table",
    "truncate",
]

# Keys other middleware leave in the scope; read, never imported from them.
REQUEST_ID_SCOPE_KEY: Final = "asgikit.request_id"
"""RequestIDMiddleware's request id (a str)."""
PEER_SCOPE_KEY: Final = "asgikit.peer"
"""ProxyHeadersMiddleware's untouched peer address, present when ``client`` was rewritten."""
TIMEOUT_SCOPE_KEY: Final = "asgikit.timeout"
"""The dict TimeoutMiddleware fills in (``{"error.type": "timeout", ...}``) when a limit
fires: put there, empty, by the middleware outside it."""

REDACTED: Final = "[REDACTED]"
"""What a redacted value is replaced with."""

ALWAYS_REDACTED_HEADERS: Final = ("authorization", "cookie", "set-cookie", "proxy-authorization")
"""Header names whose values never appear in a line, whatever the options."""

DEFAULT_REDACTED_QUERY_PARAMS: Final = (
    "*token*",  # access_token, id_token, refresh_token, X-Amz-Security-Token
    "*password*",
    "*passwd*",
    "*secret*",  # client_secret
    "*api_key*",  # api_key, api-key, X-Api-Key
    "*apikey*",
    "*signature*",  # Signature, X-Amz-Signature, X-Goog-Signature
    "*credential*",  # X-Amz-Credential, X-Goog-Credential
    "sig",  # Azure shared access signatures
)
"""Query parameter name patterns redacted by default (see ``QueryRedactor``)."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+").fullmatch
# Pairs are split on the separators of any parser an app may use (& everywhere, ; in
# older ones) and on # (a URL's fragment), so a value that any of them reads as
# sensitive is redacted whichever way it splits.
_SEPARATORS = re.compile("([&;#])")
_CACHE_SIZE: Final = 1024
# From this many "&" on, a query is searched for any pattern's name before it is split.
_LOOK_FIRST_PAIRS: Final = 8


def truncate(text: str, limit: int) -> str:
    """*text*, cut to *limit* characters with a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[+{len(text) - limit} chars]"


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of *words*, written as a trie (``sig(?:nature)?``).

    The regex engine tries alternatives one by one at every position; sharing prefixes
    makes a search over a query string about twice as fast as a flat alternation.
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + emit(child) for char, child in node.items() if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


def _normalise_name(name: str) -> str:
    """A parameter name as an app reads it, folded: decoded, lowercase, ``-`` as ``_``."""
    if "%" in name or "+" in name:
        name = unquote(name.replace("+", " "), encoding="latin-1", errors="strict")
    return name.strip().lower().replace("-", "_")


class QueryRedactor:
    """Replace the values of sensitive query parameters with ``[REDACTED]``.

    Works on queries and URLs decoded from bytes as latin-1 (so every byte is one
    character). A pattern matches a whole parameter name (``sig``), a prefix
    (``x_goog_*``), a suffix (``*_pin``) or any part of it (``*token*``). Names are
    compared the way an app would read them: percent-decoded (``%74oken`` is ``token``),
    ``+`` as a space, whitespace-stripped, lowercased, ``-`` read as ``_`` (``API-Key``
    matches ``*api_key*``). Pairs are split on ``&``, ``;`` and ``#``; everything else
    is kept as it was.

    Args:
        patterns: Name patterns, as described.

    Raises:
        ValueError: A pattern is empty or has a ``*`` anywhere but at its ends.
    """

    __slots__ = ("_any_name", "_names", "_sensitive")

    def __init__(self, patterns: Iterable[str]) -> None:
        # (starts with *, ends with *) -> how the alternatives are anchored.
        shapes = {
            (False, False): ("^(?:", ")$"),
            (False, True): ("^(?:", ")"),
            (True, False): ("(?:", ")$"),
            (True, True): ("(?:", ")"),
        }
        groups: dict[tuple[bool, bool], list[str]] = {shape: [] for shape in shapes}
        cores: list[str] = []
        for pattern in patterns:
            core = pattern.strip("*")
            if not core or "*" in core:
                raise ValueError(
                    f"query parameter pattern {pattern!r} must be a name with an optional "
                    "'*' at either end"
                )
            # Spelled as the latin-1 reading of its UTF-8 bytes, as names arrive.
            name = _normalise_name(core.encode("utf-8").decode("latin-1"))
            cores.append(name)
            groups[(pattern.startswith("*"), pattern.endswith("*"))].append(re.escape(name))
        alternatives = [
            opening + "|".join(names) + closing
            for (opening, closing), names in zip(shapes.values(), groups.values(), strict=True)
            if names
        ]
        self._sensitive = re.compile("|".join(alternatives)).search if alternatives else None
        # Any pattern's name anywhere in a folded query: one search rules most queries out.
        self._any_name = re.compile(_trie_pattern(cores)).search if cores else None
        # Raw name -> sensitive: the same few names come back on every request. Bounded,
        # cleared when full, a function of its key alone.
        self._names: dict[str, bool] = {}

    def is_sensitive(self, name: str) -> bool:
        """Whether a raw parameter name is one whose value is redacted."""
        return self._sensitive is not None and self._sensitive(_normalise_name(name)) is not None

    def _might_hold_secrets(self, text: str) -> bool:
        """False when no name in *text* can match: no pattern's name appears anywhere."""
        if self._any_name is None:
            return False
        if "%" in text:  # an escaped name hides what it spells
            return True
        folded = text.lower()
        if "-" in folded:
            folded = folded.replace("-", "_")
        return self._any_name(folded) is not None

    def _learn(self, name: str) -> bool:
        """Whether *name* is sensitive, remembered for the next time it comes."""
        sensitive = self.is_sensitive(name)
        names = self._names
        if len(names) >= _CACHE_SIZE:
            names.clear()
        names[name] = sensitive
        return sensitive

    def redact(self, query: str) -> str:
        """The query with every sensitive value replaced."""
        if "=" not in query:
            return query
        if ";" in query or "#" in query:
            if not self._might_hold_secrets(query):
                return query
            # Pairs and the separators between them; a separator has no "=": skipped.
            parts = _SEPARATORS.split(query)
            glue = ""
        elif "&" not in query:  # one pair, the commonest query of all
            name, _, value = query.partition("=")
            if value:  # no value, or an empty one: nothing to hide
                sensitive = self._names.get(name)
                if sensitive or (sensitive is None and self._learn(name)):
                    return f"{name}={REDACTED}"
            return query
        else:
            # A few pairs are looked up by name (cached) at once; a long query is first
            # ruled out, most often, by one search, so that many new names (a hostile
            # query) do not each cost a pattern match.
            if query.count("&") >= _LOOK_FIRST_PAIRS and not self._might_hold_secrets(query):
                return query
            parts = query.split("&")
            glue = "&"
        names = self._names
        changed = False
        for i, part in enumerate(parts):
            name, _, value = part.partition("=")
            if value:
                sensitive = names.get(name)
                if sensitive or (sensitive is None and self._learn(name)):
                    parts[i] = f"{name}={REDACTED}"
                    changed = True
        return glue.join(parts) if changed else query

    def redact_url(self, url: str) -> str:
        """A URL (a ``Referer``) with sensitive values in its query and fragment replaced."""
        cut = url.find("?")
        if cut < 0:
            cut = url.find("#")
            if cut < 0:
                return url
        else:
            fragment = url.find("#", 0, cut)  # a "?" inside the fragment starts no query
            if fragment >= 0:
                cut = fragment
        cut += 1
        rest = url[cut:]
        redacted = self.redact(rest)
        return url if redacted is rest else url[:cut] + redacted


def _included_template(scope: Scope, route: object) -> str | None:
    """The template of a route reached through FastAPI's ``include_router``, prefix and all.

    FastAPI (from 0.165) includes routers lazily and leaves the router's own route under
    ``route``, whose path lacks the prefixes it was included with. The template it
    matched is on the route context it keeps beside it, in ``scope["fastapi"]``; read
    only when that context belongs to this very route.
    """
    state = scope.get("fastapi")
    if not isinstance(state, dict):
        return None
    context = state.get("effective_route_context")
    if context is None or getattr(context, "original_route", None) is not route:
        return None
    for source in (getattr(context, "starlette_route", None), context):
        template = getattr(source, "path_format", None)
        if isinstance(template, str) and template:
            return template
    return None


def route_template(scope: Scope) -> str | None:
    """The route template the framework matched, from what it left in the scope.

    Starlette and FastAPI put the matched route object under ``route`` (its
    ``path_format``, converters left out, or its ``path``); mounts add the path they
    matched to ``root_path``, which is prefixed back. Litestar sets ``path_template``.
    Django and plain apps leave nothing: None.
    """
    route = scope.get("route")
    if route is not None:
        template = _included_template(scope, route)
        if template is None:
            template = getattr(route, "path_format", None)
        if not isinstance(template, str):
            template = getattr(route, "path", None)
        if isinstance(template, str):
            app_root = scope.get("app_root_path")
            root = scope.get("root_path", "")
            if isinstance(app_root, str) and isinstance(root, str) and root.startswith(app_root):
                mounted = root[len(app_root) :]
                if mounted:
                    if hasattr(route, "routes"):  # a mount: root_path already ends with it
                        return mounted + "/{path}"
                    return mounted + template
            return template
    template = scope.get("path_template")
    return template if isinstance(template, str) else None


def route_of(scope: Scope) -> str | None:
    """The route template the framework left in this request's scope chain, if any.

    ``asgikit.scopes.innermost_with(scope, ("route", "path_template"))`` and then
    ``route_template``, in one pass: this runs once per logged request and span.
    """
    chain = scope.get(CHAIN_KEY)
    if chain:
        for candidate in reversed(chain):
            if "route" in candidate or "path_template" in candidate:
                return route_template(candidate)
    if "route" in scope or "path_template" in scope:
        return route_template(scope)
    return None


def file_bytes(message: Message) -> int:
    """What a pathsend or zerocopysend message has the server send, from the file."""
    try:
        if message["type"] == "http.response.pathsend":
            return os.stat(message["path"]).st_size
        count = message.get("count")
        if count is not None:
            return int(count)
        file = message["file"]  # a file object (or a bare descriptor)
        size = os.fstat(file if isinstance(file, int) else file.fileno()).st_size
        return max(size - int(message.get("offset", 0)), 0)
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return 0


_Capture = dict[bytes, tuple[str, bool]]
"""Header name -> (field name, redacted)."""


def captured(headers: Any, wanted: _Capture) -> dict[str, list[str]]:
    """The *wanted* headers' values by field name, in order, redacted where listed."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        entry = wanted.get(name)
        if entry is not None:
            key, redacted = entry
            found.setdefault(key, []).append(REDACTED if redacted else value.decode("latin-1"))
    return found


# Module globals: a dict display with these keys is the line's hot path.
_METHOD = Field.METHOD
_PATH = Field.PATH
_QUERY = Field.QUERY
_ROUTE = Field.ROUTE
_STATUS = Field.STATUS
_HTTP_VERSION = Field.HTTP_VERSION
_SCHEME = Field.SCHEME
_CLIENT_ADDRESS = Field.CLIENT_ADDRESS
_CLIENT_PORT = Field.CLIENT_PORT
_PEER_ADDRESS = Field.PEER_ADDRESS
_USER_AGENT = Field.USER_AGENT
_REFERER = Field.REFERER
_REQUEST_BODY_SIZE = Field.REQUEST_BODY_SIZE
_RESPONSE_BODY_SIZE = Field.RESPONSE_BODY_SIZE
_DURATION_MS = Field.DURATION_MS
_TTFB_MS = Field.TTFB_MS
_REQUEST_ID = Field.REQUEST_ID
_TRACE_ID = Field.TRACE_ID
_SPAN_ID = Field.SPAN_ID
_ERROR_TYPE = Field.ERROR_TYPE
_DISCONNECTED = Field.DISCONNECTED


def _capture_table(names: list[bytes], prefix: str, redacted: frozenset[bytes]) -> _Capture | None:
    if not names:
        return None
    return {name: (prefix + name.decode("ascii"), name in redacted) for name in names}


class LineBuilder:
    """Build an access line's fields from the scope and what the middleware measured.

    Client-controlled values are cut to ``limit`` characters (with a marker); the query
    and the referer's query are redacted; captured headers on the redaction list are
    logged as ``[REDACTED]``.

    Args:
        limit: The longest client-controlled value kept whole.
        query_params: Query parameter name patterns to redact (``QueryRedactor``).
        redacted_headers: Lowercase header names whose captured values are hidden.
        request_headers: Lowercase request header names to capture.
        response_headers: Lowercase response header names to capture.
    """

    __slots__ = ("_limit", "_redactor", "_request_capture", "response_capture")

    def __init__(
        self,
        *,
        limit: int,
        query_params: Iterable[str],
        redacted_headers: frozenset[bytes],
        request_headers: list[bytes],
        response_headers: list[bytes],
    ) -> None:
        self._limit = limit
        self._redactor = QueryRedactor(query_params)
        self._request_capture = _capture_table(
            request_headers, Field.REQUEST_HEADER_PREFIX, redacted_headers
        )
        self.response_capture = _capture_table(
            response_headers, Field.RESPONSE_HEADER_PREFIX, redacted_headers
        )
        """Response headers to capture, or None: the middleware keeps them only then."""

    def http(
        self,
        scope: Scope,
        status: int | None,
        duration: float,
        first_byte: float | None,
        received: int,
        sent: int,
        response_headers: Any,
        span_context: SpanContext | None,
        error_type: str | None,
        disconnected: bool,
    ) -> dict[str, Any]:
        """The fields of an http request's line."""
        limit = self._limit
        method = scope["method"]
        path = scope["path"]
        fields: dict[str, Any] = {
            _METHOD: method if len(method) <= limit else truncate(method, limit),
            _PATH: path if len(path) <= limit else truncate(path, limit),
        }
        self._add_query_and_route(scope, fields)
        if status is not None:
            fields[_STATUS] = status
        # Milliseconds to the microsecond (round(x, 3) costs several times more).
        fields[_DURATION_MS] = round(duration * 1_000_000) / 1000
        if first_byte is not None:
            fields[_TTFB_MS] = round(first_byte * 1_000_000) / 1000
        fields[_REQUEST_BODY_SIZE] = received
        fields[_RESPONSE_BODY_SIZE] = sent
        fields[_HTTP_VERSION] = scope.get("http_version", "1.1")
        fields[_SCHEME] = scope.get("scheme", "http")
        self._common(scope, fields, span_context, error_type, disconnected)
        if response_headers is not None:
            self._capture(response_headers, self.response_capture, fields)
        return fields

    def websocket(
        self,
        scope: Scope,
        status: int | None,
        duration: float,
        close_code: int | None,
        received: int,
        sent: int,
        span_context: SpanContext | None,
        error_type: str | None,
        disconnected: bool,
    ) -> dict[str, Any]:
        """The fields of a websocket connection's line."""
        limit = self._limit
        path = scope["path"]
        fields: dict[str, Any] = {_PATH: path if len(path) <= limit else truncate(path, limit)}
        self._add_query_and_route(scope, fields)
        if status is not None:
            fields[_STATUS] = status
        fields[_DURATION_MS] = round(duration * 1_000_000) / 1000
        if close_code is not None:
            fields[Field.WS_CLOSE_CODE] = close_code
        fields[Field.WS_MESSAGES_RECEIVED] = received
        fields[Field.WS_MESSAGES_SENT] = sent
        fields[_SCHEME] = scope.get("scheme", "ws")
        self._common(scope, fields, span_context, error_type, disconnected)
        return fields

    def _add_query_and_route(self, scope: Scope, fields: dict[str, Any]) -> None:
        """The redacted query and the route template, for http and websocket lines."""
        query = scope.get("query_string")
        if query:
            # Cut before redacting: a pair cut short is still redacted, and work is bounded.
            cut = len(query) - self._limit
            if cut > 0:
                text = self._redactor.redact(query[: self._limit].decode("latin-1"))
                fields[_QUERY] = f"{text}...[+{cut} chars]"
            else:
                fields[_QUERY] = self._redactor.redact(query.decode("latin-1"))
        route = route_of(scope)
        if route is not None:
            fields[_ROUTE] = route

    def _common(
        self,
        scope: Scope,
        fields: dict[str, Any],
        span_context: SpanContext | None,
        error_type: str | None,
        disconnected: bool,
    ) -> None:
        """Client, peer, user agent, referer, captured request headers; the request id,
        trace ids, ``error.type`` and ``disconnected``."""
        client = scope.get("client")
        if client:
            fields[_CLIENT_ADDRESS] = client[0]
            if client[1]:  # 0: unknown (a proxy named the client without a port)
                fields[_CLIENT_PORT] = client[1]
        peer = scope.get(PEER_SCOPE_KEY)
        if peer:
            fields[_PEER_ADDRESS] = peer[0]
        headers = scope.get("headers", ())
        limit = self._limit
        user_agent = referer = None
        for name, value in headers:  # get_header twice, in one pass (the first of each)
            if name == b"user-agent":
                if user_agent is None:
                    user_agent = value
            elif name == b"referer" and referer is None:
                referer = value
        if user_agent is not None:
            text = user_agent.decode("latin-1")
            fields[_USER_AGENT] = text if len(text) <= limit else truncate(text, limit)
        if referer is not None:
            text = self._redactor.redact_url(referer.decode("latin-1"))
            fields[_REFERER] = text if len(text) <= limit else truncate(text, limit)
        if self._request_capture is not None:
            self._capture(headers, self._request_capture, fields)
        request_id = scope.get(REQUEST_ID_SCOPE_KEY)
        if request_id is not None:
            fields[_REQUEST_ID] = request_id
        if span_context is not None:
            fields[_TRACE_ID] = f"{span_context.trace_id:032x}"
            fields[_SPAN_ID] = f"{span_context.span_id:016x}"
        if error_type is not None:
            fields[_ERROR_TYPE] = error_type
        if disconnected:
            fields[_DISCONNECTED] = True

    def _capture(self, headers: Any, wanted: _Capture | None, fields: dict[str, Any]) -> None:
        assert wanted is not None
        for key, values in captured(headers, wanted).items():
            fields[key] = truncate(", ".join(values), self._limit)


# --------------------------------------------------------------------------------------
# Option checks (start-up only)


def level_number(value: object, option: str) -> int:
    """A level name (``"warning"``, any case) as its number."""
    number = LEVELS.get(value.lower()) if isinstance(value, str) else None
    if number is None:
        raise ValueError(f"{option}: {value!r} is not a level name ({', '.join(LEVELS)})")
    return number


def status_level_table(overrides: Mapping[int | str, str]) -> tuple[int, ...]:
    """Level numbers indexed by status (0-599): 1xx-3xx info, 4xx warning, 5xx error.

    Keys of *overrides* are a status (``404`` or ``"404"``) or a class (``"4xx"``);
    a status entry wins over its class.
    """
    by_class = {1: 20, 2: 20, 3: 20, 4: 30, 5: 40}
    by_status: dict[int, int] = {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"status_levels must be a mapping, not {overrides!r}")
    for key, name in overrides.items():
        number = level_number(name, f"status_levels[{key!r}]")
        text = str(key).lower() if not isinstance(key, bool) else ""
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            by_class[int(text[0])] = number
        elif text.isdigit() and 100 <= int(text) <= 599:
            by_status[int(text)] = number
        else:
            raise ValueError(
                f"status_levels key {key!r} is neither a status (100-599) nor a class ('4xx')"
            )
    table = [by_class[5]] * 100  # below 100: not a status a server accepts
    for status in range(100, 600):
        table.append(by_status.get(status, by_class[status // 100]))
    return tuple(table)


def header_names(value: str | Iterable[str], option: str) -> list[bytes]:
    """Header names from an option, lowercase bytes, checked against the token grammar."""
    names = []
    for name in string_list(value, option):
        lowered = name.lower()
        if not _TOKEN(lowered):
            raise ValueError(f"{option}: {name!r} is not a valid header field name")
        names.append(lowered.encode("ascii"))
    return names


def exclusions(value: str | Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact paths and path prefixes (entries ending in ``*``) to leave out."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for entry in string_list(value, "exclude_paths"):
        if not entry.startswith("/") or "*" in entry[:-1]:
            raise ValueError(
                f"exclude_paths: {entry!r} must be a path starting with '/', with an "
                "optional '*' at its end for a prefix"
            )
        if entry.endswith("*"):
            prefixes.append(entry[:-1])
        else:
            exact.add(entry)
    return frozenset(exact), tuple(prefixes)


def positive_seconds(value: Any, option: str) -> float | None:
    """A positive, finite number of seconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{option} must be a number of seconds or None, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option} must be a positive, finite number of seconds: {value!r}")
    return float(value)
