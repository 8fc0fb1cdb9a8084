"""Redaction shared by every middleware that shows a request: query values, headers.

The access log, tracing and the inspector all show a request's query, its referer and
chosen headers; they hide the same things the same way. ``QueryRedactor`` replaces the
values of sensitive query parameters, ``captured`` reads the headers an option asked for
(hiding the ones on the redaction list), ``truncate`` cuts client-controlled text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import unquote

from asgikit.options import string_list

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_REDACTED_QUERY_PARAMS",
    "REDACTED",
    "Capture",
    "QueryRedactor",
    "capture_table",
    "captured",
    "header_names",
    "truncate",
]

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


Capture = dict[bytes, tuple[str, bool]]
"""Header name -> (field name, redacted)."""


def capture_table(
    names: Iterable[bytes], prefix: str, redacted: frozenset[bytes]
) -> Capture | None:
    """The table ``captured`` reads: each header name to its field name (``prefix`` and
    the name) and whether its value is hidden; None when no header is captured."""
    table = {name: (prefix + name.decode("ascii"), name in redacted) for name in names}
    return table or None


def captured(headers: Any, wanted: Capture) -> dict[str, list[str]]:
    """The *wanted* headers' values by field name, in order, redacted where listed."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        entry = wanted.get(name)
        if entry is not None:
            key, redacted = entry
            found.setdefault(key, []).append(REDACTED if redacted else value.decode("latin-1"))
    return found


def header_names(value: str | Iterable[str], option: str) -> list[bytes]:
    """Header names from an option, lowercase bytes, checked against the token grammar."""
    names = []
    for name in string_list(value, option):
        lowered = name.lower()
        if not _TOKEN(lowered):
            raise ValueError(f"{option}: {name!r} is not a valid header field name")
        names.append(lowered.encode("ascii"))
    return names
