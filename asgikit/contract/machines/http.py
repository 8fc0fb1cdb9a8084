"""The http machines: the app's response, and the request body the server hands over."""

from __future__ import annotations

from collections.abc import Mapping

from asgikit.contract import checks
from asgikit.contract.machines import (
    ANY,
    OTHER,
    Machine,
    Misstep,
    State,
    Transitions,
    event_among,
)

# --------------------------------------------------------------------------------------
# The app's response

HTTP_TYPES = frozenset(
    {
        "http.response.start",
        "http.response.body",
        "http.response.pathsend",
        "http.response.zerocopysend",
        "http.response.push",
        "http.response.trailers",
        "http.response.early_hint",
        "http.response.debug",
    }
)


class HTTPState(State):
    """The app side of an http scope: where its response is."""

    START = ("before http.response.start", "")
    BODY = ("sending the body", "")
    BODY_THEN_TRAILERS = ("sending the body", "trailers announced")
    TRAILERS = ("sending trailers", "")
    TRAILERS_AFTER_PATHSEND = ("sending trailers", "after http.response.pathsend")
    DONE = ("response complete", "")
    DONE_BY_PATHSEND = ("response complete", "by http.response.pathsend")


H = HTTPState

# The states in which the response has started but not ended: an app that stops here
# cut its response short (H3, H4).
HTTP_IN_PROGRESS = frozenset({H.BODY, H.BODY_THEN_TRAILERS, H.TRAILERS, H.TRAILERS_AFTER_PATHSEND})
# Leaving one of these ends the body: the moment H4 and H5 are judged.
HTTP_BODY_STATES = frozenset({H.BODY, H.BODY_THEN_TRAILERS})

HTTP_SEND: Transitions[HTTPState] = {
    H.START: {
        "http.response.start": (H.BODY, checks.response_start),
        "http.response.start(trailers)": (H.BODY_THEN_TRAILERS, checks.response_start),
        "http.response.early_hint": (H.START, checks.early_hint),
        "http.response.debug": (H.START, None),
        OTHER: (H.START, None),
    },
    H.BODY: {
        "http.response.body": (H.BODY, checks.response_body),
        "http.response.body(final)": (H.DONE, checks.response_body),
        "http.response.zerocopysend": (H.BODY, checks.zerocopysend),
        "http.response.zerocopysend(final)": (H.DONE, checks.zerocopysend),
        "http.response.pathsend": (H.DONE_BY_PATHSEND, checks.pathsend),
        "http.response.push": (H.BODY, checks.push),
        "http.response.debug": (H.BODY, None),
        OTHER: (H.BODY, None),
    },
    H.BODY_THEN_TRAILERS: {
        "http.response.body": (H.BODY_THEN_TRAILERS, checks.response_body),
        "http.response.body(final)": (H.TRAILERS, checks.response_body),
        "http.response.zerocopysend": (H.BODY_THEN_TRAILERS, checks.zerocopysend),
        "http.response.zerocopysend(final)": (H.TRAILERS, checks.zerocopysend),
        "http.response.pathsend": (H.TRAILERS_AFTER_PATHSEND, checks.pathsend),
        "http.response.push": (H.BODY_THEN_TRAILERS, checks.push),
        "http.response.debug": (H.BODY_THEN_TRAILERS, None),
        OTHER: (H.BODY_THEN_TRAILERS, None),
    },
    H.TRAILERS: {
        "http.response.trailers": (H.TRAILERS, checks.trailers),
        "http.response.trailers(final)": (H.DONE, checks.trailers),
        OTHER: (H.TRAILERS, None),
    },
    H.TRAILERS_AFTER_PATHSEND: {
        "http.response.trailers": (H.TRAILERS_AFTER_PATHSEND, checks.trailers),
        "http.response.trailers(final)": (H.DONE_BY_PATHSEND, checks.trailers),
        OTHER: (H.TRAILERS_AFTER_PATHSEND, None),
    },
    H.DONE: {},
    H.DONE_BY_PATHSEND: {},
}

# A second start is H6 instead when a middleware sent it (the checker knows, not the table).
_SECOND_START = Misstep("H2", "a second http.response.start")
_AFTER_START = Misstep("H2", "{kind!r} sent after http.response.start")
_WHILE_TRAILERS = Misstep("H3", "{kind!r} sent while trailers were expected")
_AFTER_END = Misstep("H3", "{kind!r} sent after the response ended")

HTTP_SEND_OUT_OF_ORDER: Mapping[HTTPState, Mapping[str, Misstep]] = {
    H.START: {ANY: Misstep("H2", "{kind!r} sent before http.response.start")},
    H.BODY: {
        "http.response.start": _SECOND_START,
        "http.response.trailers": Misstep(
            "H3", "http.response.trailers sent but the start did not announce trailers"
        ),
        ANY: _AFTER_START,
    },
    H.BODY_THEN_TRAILERS: {
        "http.response.start": _SECOND_START,
        "http.response.trailers": Misstep(
            "H3", "http.response.trailers sent before the body ended"
        ),
        ANY: _AFTER_START,
    },
    H.TRAILERS: {"http.response.start": _SECOND_START, ANY: _WHILE_TRAILERS},
    H.TRAILERS_AFTER_PATHSEND: {"http.response.start": _SECOND_START, ANY: _WHILE_TRAILERS},
    H.DONE: {"http.response.start": _SECOND_START, ANY: _AFTER_END},
    H.DONE_BY_PATHSEND: {
        "http.response.start": _SECOND_START,
        OTHER: _AFTER_END,
        ANY: Misstep("X2", "{kind!r} sent after http.response.pathsend"),
    },
}

HTTP_SEND_MACHINE = Machine(HTTP_SEND, HTTP_SEND_OUT_OF_ORDER, event_among(HTTP_TYPES))


# --------------------------------------------------------------------------------------
# The request body the server hands over


class RequestState(State):
    """The server side of an http scope: what receive() has returned so far."""

    READING = "reading the body"
    READ = "body read"
    DISCONNECTED = "disconnected before the body ended"
    CLOSED = "body read, then disconnected"


R = RequestState

# After these, the client is gone: the app may stop without finishing its response.
REQUEST_GONE = frozenset({R.DISCONNECTED, R.CLOSED})

HTTP_RECEIVE: Transitions[RequestState] = {
    R.READING: {
        "http.request": (R.READING, checks.request),
        "http.request(final)": (R.READ, checks.request),
        "http.disconnect": (R.DISCONNECTED, None),
    },
    R.READ: {"http.disconnect": (R.CLOSED, None)},
    R.DISCONNECTED: {"http.disconnect": (R.DISCONNECTED, None)},
    R.CLOSED: {"http.disconnect": (R.CLOSED, None)},
}

# H1; a nested checker reports H8 (the middleware in between replays the body).
_NOT_HTTP = Misstep("H1", "receive() returned {kind!r} in an http scope")
_AFTER_LAST_CHUNK = Misstep(
    "H1",
    "receive() returned http.request after the last body chunk; expected disconnect",
    show_message=False,
)

HTTP_RECEIVE_OUT_OF_ORDER: Mapping[RequestState, Mapping[str, Misstep]] = {
    R.READING: {ANY: _NOT_HTTP},
    R.READ: {OTHER: _NOT_HTTP, ANY: _AFTER_LAST_CHUNK},
    R.DISCONNECTED: {
        OTHER: _NOT_HTTP,
        ANY: Misstep(
            "H1",
            "receive() returned http.request after http.disconnect; expected disconnect",
            show_message=False,
        ),
    },
    R.CLOSED: {OTHER: _NOT_HTTP, ANY: _AFTER_LAST_CHUNK},
}

HTTP_RECEIVE_MACHINE = Machine(
    HTTP_RECEIVE,
    HTTP_RECEIVE_OUT_OF_ORDER,
    event_among(frozenset({"http.request", "http.disconnect"})),
)
