from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgikit.headers import (
    RawHeaders,
    add_vary,
    append_header,
    get_all,
    get_header,
    has_header,
    header_tokens,
    lowercase_names,
    parse_qlist,
    parse_qlist_headers,
    remove_headers,
    set_header,
)

RESPONSE: RawHeaders = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"set-cookie", b"a=1; Path=/"),
    (b"vary", b"Origin"),
    (b"cache-control", b"no-cache"),
    (b"set-cookie", b"b=2; Path=/"),
    (b"vary", b"Cookie"),
    (b"content-length", b"12"),
]


def non_vary(headers: RawHeaders) -> RawHeaders:
    return [field for field in headers if field[0] != b"vary"]


# get_header / get_all / has_header


def test_get_header_returns_first_of_repeated_fields() -> None:
    assert get_header(RESPONSE, b"set-cookie") == b"a=1; Path=/"


def test_get_header_missing_returns_default() -> None:
    assert get_header(RESPONSE, b"etag") is None
    assert get_header(RESPONSE, b"etag", b"fallback") == b"fallback"
    assert get_header([], b"etag", b"") == b""


def test_get_header_compares_names_exactly() -> None:
    headers = [(b"Content-Type", b"text/plain"), (b"content-type", b"text/html")]
    assert get_header(headers, b"content-type") == b"text/html"
    assert get_header(headers, b"content") is None


def test_get_header_accepts_any_iterable() -> None:
    assert get_header(iter(RESPONSE), b"content-length") == b"12"
    assert get_header(tuple(RESPONSE), b"vary") == b"Origin"


def test_get_all_keeps_order() -> None:
    assert get_all(RESPONSE, b"set-cookie") == [b"a=1; Path=/", b"b=2; Path=/"]
    assert get_all(RESPONSE, b"vary") == [b"Origin", b"Cookie"]
    assert get_all(RESPONSE, b"etag") == []


def test_has_header() -> None:
    assert has_header(RESPONSE, b"content-length")
    assert has_header(iter(RESPONSE), b"vary")
    assert not has_header(RESPONSE, b"content")
    assert not has_header(RESPONSE, b"Content-Length")
    assert not has_header([], b"vary")


# header_tokens


def test_header_tokens_across_repeated_fields() -> None:
    headers = [
        (b"connection", b"keep-alive, Upgrade"),
        (b"x-other", b"nope"),
        (b"connection", b"TE"),
    ]
    assert header_tokens(headers, b"connection") == [b"keep-alive", b"Upgrade", b"TE"]


def test_header_tokens_strips_ows_and_drops_empty_elements() -> None:
    headers = [(b"vary", b" ,\tA ,, b\t,  , "), (b"vary", b""), (b"vary", b"  c d  ")]
    assert header_tokens(headers, b"vary") == [b"A", b"b", b"c d"]


def test_header_tokens_missing_field() -> None:
    assert header_tokens(RESPONSE, b"connection") == []


def test_header_tokens_keeps_commas_inside_quoted_strings() -> None:
    headers = [(b"cache-control", b'private="set-cookie, x-a", no-transform')]
    assert header_tokens(headers, b"cache-control") == [
        b'private="set-cookie, x-a"',
        b"no-transform",
    ]
    etags = [(b"if-none-match", b'"a,b", W/"c\\",d", "e"')]
    assert header_tokens(etags, b"if-none-match") == [b'"a,b"', b'W/"c\\",d"', b'"e"']


def test_header_tokens_unterminated_quote_quotes_nothing() -> None:
    headers = [(b"x-list", b'a, "b, c" d, "e, f')]
    assert header_tokens(headers, b"x-list") == [b"a", b'"b, c" d', b'"e', b"f"]


def test_header_tokens_non_ascii_bytes() -> None:
    headers = [(b"x-list", b"\xff\xfe, caf\xc3\xa9 ,\x00")]
    assert header_tokens(headers, b"x-list") == [b"\xff\xfe", b"caf\xc3\xa9", b"\x00"]


# parse_qlist


def test_parse_qlist_example() -> None:
    assert parse_qlist(b"gzip;q=0.8, br, *;q=0") == [(b"gzip", 0.8), (b"br", 1.0), (b"*", 0.0)]


def test_parse_qlist_lowercases_tokens_and_q() -> None:
    assert parse_qlist(b"GZip;Q=0.5, BR") == [(b"gzip", 0.5), (b"br", 1.0)]


def test_parse_qlist_tolerates_whitespace() -> None:
    value = b" gzip \t; q = 0.5 ,\tbr;\tq=\t1 , deflate ;q=0"
    assert parse_qlist(value) == [(b"gzip", 0.5), (b"br", 1.0), (b"deflate", 0.0)]


def test_parse_qlist_ignores_other_parameters() -> None:
    assert parse_qlist(b"gzip;level=9;q=0.3, br;x;y=2") == [(b"gzip", 0.3), (b"br", 1.0)]


def test_parse_qlist_first_q_wins() -> None:
    assert parse_qlist(b"gzip;q=0.2;q=0.9, br;q=0.1;q=oops") == [(b"gzip", 0.2), (b"br", 0.1)]


def test_parse_qlist_drops_empty_elements_and_tokens() -> None:
    assert parse_qlist(b", ,gzip,,;q=0.5, ;q=1,") == [(b"gzip", 1.0)]
    assert parse_qlist(b"") == []
    assert parse_qlist(b" \t ") == []


def test_parse_qlist_keeps_order_and_repeats() -> None:
    assert parse_qlist(b"br;q=0.1, gzip, br") == [(b"br", 0.1), (b"gzip", 1.0), (b"br", 1.0)]


@pytest.mark.parametrize(
    ("qvalue", "expected"),
    [
        (b"0", 0.0),
        (b"0.", 0.0),
        (b"0.0", 0.0),
        (b"0.000", 0.0),
        (b"0.5", 0.5),
        (b"0.05", 0.05),
        (b"0.123", 0.123),
        (b"0.999", 0.999),
        (b"1", 1.0),
        (b"1.", 1.0),
        (b"1.0", 1.0),
        (b"1.000", 1.0),
    ],
)
def test_parse_qlist_valid_qvalues(qvalue: bytes, expected: float) -> None:
    assert parse_qlist(b"gzip;q=" + qvalue + b", br") == [(b"gzip", expected), (b"br", 1.0)]


@pytest.mark.parametrize(
    "qvalue",
    [
        b"",
        b"abc",
        b"1.5",
        b"1.001",
        b"2",
        b"-1",
        b"-0",
        b"+0.5",
        b".5",
        b"0.1234",
        b"1.0000",
        b"00",
        b"0 .5",
        b"0.5x",
        b"1e-1",
        b"nan",
        b"inf",
        b"0.\xd9\xa5",  # an Arabic-Indic digit: not a DIGIT
        b'"0.5"',
        b"\xff",
    ],
)
def test_parse_qlist_drops_elements_with_invalid_q(qvalue: bytes) -> None:
    assert parse_qlist(b"gzip;q=" + qvalue + b", br;q=0.5") == [(b"br", 0.5)]


def test_parse_qlist_q_without_value_is_invalid() -> None:
    assert parse_qlist(b"gzip;q, br") == [(b"br", 1.0)]


def test_parse_qlist_quoted_parameters_do_not_split() -> None:
    value = b'gzip;x="a, b;q=0";q=0.3, br'
    assert parse_qlist(value) == [(b"gzip", 0.3), (b"br", 1.0)]


def test_parse_qlist_non_ascii_bytes() -> None:
    value = b"\xc3\x89T\xc3\xa9;q=0.5, \xff;Q=1, \x80\x80"
    assert parse_qlist(value) == [(b"\xc3\x89t\xc3\xa9", 0.5), (b"\xff", 1.0), (b"\x80\x80", 1.0)]


def test_parse_qlist_headers_across_repeated_fields() -> None:
    headers = [
        (b"accept-encoding", b"gzip;q=0.5"),
        (b"accept", b"text/html"),
        (b"accept-encoding", b"BR, identity;q=0"),
    ]
    assert parse_qlist_headers(headers, b"accept-encoding") == [
        (b"gzip", 0.5),
        (b"br", 1.0),
        (b"identity", 0.0),
    ]
    assert parse_qlist_headers(headers, b"accept-language") == []


def test_parse_qlist_headers_quote_does_not_run_into_next_field() -> None:
    headers = [(b"accept-encoding", b'x;p="a'), (b"accept-encoding", b"br;q=0.2")]
    assert parse_qlist_headers(headers, b"accept-encoding") == [(b"x", 1.0), (b"br", 0.2)]


# add_vary


def test_add_vary_appends_field_when_missing() -> None:
    headers = [(b"content-type", b"text/plain")]
    assert add_vary(headers, b"Accept-Encoding") == [
        (b"content-type", b"text/plain"),
        (b"vary", b"Accept-Encoding"),
    ]


def test_add_vary_without_tokens_adds_nothing() -> None:
    headers = [(b"content-type", b"text/plain")]
    result = add_vary(headers)
    assert result == headers
    assert result is not headers
    assert add_vary(headers, b"", b" , ") == headers


def test_add_vary_appends_to_existing_field() -> None:
    headers = [(b"vary", b"Origin"), (b"content-length", b"3")]
    assert add_vary(headers, b"Accept-Encoding", b"Cookie") == [
        (b"vary", b"Origin, Accept-Encoding, Cookie"),
        (b"content-length", b"3"),
    ]


def test_add_vary_is_case_insensitive_and_keeps_original_spelling() -> None:
    headers = [(b"vary", b"accept-encoding,ORIGIN")]
    assert add_vary(headers, b"Accept-Encoding", b"origin") == headers
    assert add_vary(headers, b"Origin", b"Cookie") == [
        (b"vary", b"accept-encoding, ORIGIN, Cookie")
    ]


def test_add_vary_deduplicates_new_tokens() -> None:
    assert add_vary([], b"Origin", b"ORIGIN", b"cookie", b"Cookie") == [
        (b"vary", b"Origin, cookie")
    ]


def test_add_vary_deduplicates_existing_tokens() -> None:
    headers = [(b"vary", b"Origin, origin"), (b"x-a", b"1")]
    assert add_vary(headers) == [(b"vary", b"Origin"), (b"x-a", b"1")]


def test_add_vary_merges_repeated_fields_at_first_position() -> None:
    assert add_vary(RESPONSE, b"Accept-Encoding", b"cookie") == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"vary", b"Origin, Cookie, Accept-Encoding"),
        (b"cache-control", b"no-cache"),
        (b"set-cookie", b"b=2; Path=/"),
        (b"content-length", b"12"),
    ]


def test_add_vary_merges_repeated_fields_without_tokens() -> None:
    headers = [(b"vary", b""), (b"x-a", b"1"), (b"vary", b" ")]
    assert add_vary(headers) == [(b"vary", b""), (b"x-a", b"1")]


def test_add_vary_splits_list_arguments() -> None:
    assert add_vary([], b"Origin, Accept-Encoding ,") == [(b"vary", b"Origin, Accept-Encoding")]


def test_add_vary_existing_star_stays_star() -> None:
    headers = [(b"vary", b"*"), (b"x-a", b"1")]
    assert add_vary(headers, b"Origin") == headers
    assert add_vary([(b"vary", b"Origin, *")], b"Cookie") == [(b"vary", b"*")]


def test_add_vary_star_in_one_of_repeated_fields() -> None:
    headers = [(b"vary", b"Origin"), (b"x-a", b"1"), (b"vary", b"*")]
    assert add_vary(headers, b"Cookie") == [(b"vary", b"*"), (b"x-a", b"1")]


def test_add_vary_adding_star() -> None:
    assert add_vary([(b"vary", b"Origin")], b"Cookie", b"*") == [(b"vary", b"*")]
    assert add_vary([(b"x-a", b"1")], b"Origin", b"*") == [(b"x-a", b"1"), (b"vary", b"*")]
    assert add_vary([], b"*") == [(b"vary", b"*")]


def test_add_vary_does_not_mutate_input() -> None:
    headers = copy.deepcopy(RESPONSE)
    add_vary(headers, b"Accept-Encoding")
    assert headers == RESPONSE
    single = [(b"vary", b"Origin")]
    add_vary(single, b"Cookie")
    assert single == [(b"vary", b"Origin")]


def test_add_vary_ignores_non_lowercase_names() -> None:
    headers = [(b"Vary", b"Origin")]
    assert add_vary(headers, b"Cookie") == [(b"Vary", b"Origin"), (b"vary", b"Cookie")]


# set_header / remove_headers / append_header


def test_set_header_replaces_all_at_first_position() -> None:
    assert set_header(RESPONSE, b"set-cookie", b"c=3") == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"set-cookie", b"c=3"),
        (b"vary", b"Origin"),
        (b"cache-control", b"no-cache"),
        (b"vary", b"Cookie"),
        (b"content-length", b"12"),
    ]


def test_set_header_single_field_keeps_position() -> None:
    result = set_header(RESPONSE, b"cache-control", b"no-store")
    assert result[3] == (b"cache-control", b"no-store")
    assert result[:3] == RESPONSE[:3]
    assert result[4:] == RESPONSE[4:]


def test_set_header_appends_when_missing() -> None:
    assert set_header(RESPONSE, b"etag", b'"x"') == [*RESPONSE, (b"etag", b'"x"')]
    assert set_header([], b"etag", b'"x"') == [(b"etag", b'"x"')]


def test_set_header_does_not_mutate_input() -> None:
    headers = list(RESPONSE)
    result = set_header(headers, b"vary", b"*")
    assert headers == RESPONSE
    assert result is not headers


def test_remove_headers_keeps_other_fields_in_order() -> None:
    assert remove_headers(RESPONSE, b"vary", b"content-length") == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"cache-control", b"no-cache"),
        (b"set-cookie", b"b=2; Path=/"),
    ]


def test_remove_headers_single_name_removes_all_repeats() -> None:
    result = remove_headers(RESPONSE, b"set-cookie")
    assert [name for name, _ in result] == [
        b"content-type",
        b"vary",
        b"cache-control",
        b"vary",
        b"content-length",
    ]


def test_remove_headers_nothing_to_remove() -> None:
    headers = list(RESPONSE)
    assert remove_headers(headers) == RESPONSE
    assert remove_headers(headers, b"etag") == RESPONSE
    assert remove_headers(headers) is not headers
    assert headers == RESPONSE


def test_append_header_keeps_repeats() -> None:
    headers = list(RESPONSE)
    result = append_header(headers, b"set-cookie", b"c=3")
    assert result == [*RESPONSE, (b"set-cookie", b"c=3")]
    assert get_all(result, b"set-cookie") == [b"a=1; Path=/", b"b=2; Path=/", b"c=3"]
    assert headers == RESPONSE


# Properties

TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
tokens_st = st.from_regex(TCHAR, fullmatch=True)
field_names_st = st.sampled_from(
    [b"accept-encoding", b"origin", b"cookie", b"content-type", b"x-request-id"]
)
vary_tokens_st = st.one_of(
    st.builds(
        lambda name, upper: name.upper() if upper else name,
        field_names_st,
        st.booleans(),
    ),
    tokens_st,
    st.just(b"*"),
)
ows_st = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])


@st.composite
def padded_list(draw: st.DrawFn, tokens: list[bytes]) -> bytes:
    """``tokens`` as a list value, in order, with random OWS and empty elements."""
    parts: list[bytes] = []
    for token in tokens:
        parts += [draw(ows_st) for _ in range(draw(st.integers(0, 2)))]
        parts.append(draw(ows_st) + token + draw(ows_st))
    parts += [draw(ows_st) for _ in range(draw(st.integers(0, 2)))]
    return b",".join(parts)


def plain_tokens(headers: RawHeaders) -> list[bytes]:
    """Vary tokens as add_vary reads them: every comma splits."""
    return [
        token.strip(b" \t")
        for name, value in headers
        if name == b"vary"
        for token in value.split(b",")
        if token.strip(b" \t")
    ]


headers_st = st.lists(
    st.tuples(
        st.sampled_from([b"vary", b"set-cookie", b"content-type", b"x-a", b"x-b"]),
        st.one_of(
            st.lists(vary_tokens_st, max_size=4).flatmap(padded_list), st.binary(max_size=20)
        ),
    ),
    max_size=12,
)
names_st = st.lists(
    st.sampled_from([b"vary", b"set-cookie", b"content-type", b"x-a", b"x-b", b"etag"])
)


@given(headers_st, st.lists(vary_tokens_st, max_size=4))
def test_prop_add_vary_is_idempotent(headers: RawHeaders, tokens: list[bytes]) -> None:
    once = add_vary(headers, *tokens)
    assert add_vary(once, *tokens) == once
    assert add_vary(once) == once


@given(headers_st, st.lists(vary_tokens_st, max_size=4))
def test_prop_add_vary_never_mutates_and_keeps_other_fields(
    headers: RawHeaders, tokens: list[bytes]
) -> None:
    before = copy.deepcopy(headers)
    result = add_vary(headers, *tokens)
    assert headers == before
    assert result is not headers
    assert non_vary(result) == non_vary(headers)


@given(headers_st, st.lists(vary_tokens_st, max_size=4))
def test_prop_add_vary_lists_every_token_once(headers: RawHeaders, tokens: list[bytes]) -> None:
    result = add_vary(headers, *tokens)
    positions = [i for i, (name, _) in enumerate(result) if name == b"vary"]
    had_vary = any(name == b"vary" for name, _ in headers)
    if not had_vary and not tokens:
        assert positions == []
        return
    assert len(positions) == 1
    if had_vary:
        # merged at the position of the first one
        first = next(i for i, (name, _) in enumerate(headers) if name == b"vary")
        assert positions == [first]
    else:
        assert positions == [len(result) - 1]

    existing = plain_tokens(headers)
    value = result[positions[0]][1]
    if b"*" in existing or b"*" in tokens:
        assert value == b"*"
        return
    listed = plain_tokens([(b"vary", value)])
    lowered = [token.lower() for token in listed]
    assert len(set(lowered)) == len(lowered)
    assert set(lowered) == {token.lower() for token in [*existing, *tokens]}
    # original spellings come first, in order, then the new ones
    expected: list[bytes] = []
    for token in [*existing, *tokens]:
        if token.lower() not in {seen.lower() for seen in expected}:
            expected.append(token)
    assert listed == expected


@given(headers_st, names_st)
def test_prop_remove_headers_keeps_everything_else(headers: RawHeaders, names: list[bytes]) -> None:
    before = list(headers)
    result = remove_headers(headers, *names)
    assert headers == before
    assert result == [field for field in headers if field[0] not in names]
    for name in names:
        assert not has_header(result, name)


@given(headers_st, st.sampled_from([b"vary", b"set-cookie", b"etag"]), st.binary(max_size=8))
def test_prop_set_header_leaves_exactly_one(headers: RawHeaders, name: bytes, value: bytes) -> None:
    before = list(headers)
    result = set_header(headers, name, value)
    assert headers == before
    assert get_all(result, name) == [value]
    assert remove_headers(result, name) == remove_headers(headers, name)
    names = [field_name for field_name, _ in headers]
    expected_at = names.index(name) if name in names else len(result) - 1
    assert result[expected_at] == (name, value)


@given(st.binary())
def test_prop_parse_qlist_never_raises_and_q_in_range(value: bytes) -> None:
    for token, q in parse_qlist(value):
        assert 0.0 <= q <= 1.0
        assert token
        assert token == token.lower()
        assert token == token.strip(b" \t")
        assert b"," not in token or b'"' in token


@given(
    st.lists(
        st.tuples(
            st.text(
                alphabet=st.characters(codec="latin-1", exclude_characters=',;"'),
                max_size=8,
            ),
            st.sampled_from(["q", "Q", " q ", "level"]),
            st.text(alphabet="0123456789.-+eE ", max_size=6),
        ),
    )
)
def test_prop_parse_qlist_agrees_with_a_reference(
    elements: list[tuple[str, str, str]],
) -> None:
    def qvalue(text: str) -> float | None:
        text = text.strip(" ")
        whole, _, fraction = text.partition(".")
        if whole == "0" and (not fraction or fraction.isdigit()) and len(fraction) <= 3:
            return float("0." + fraction) if fraction else 0.0
        if whole == "1" and set(fraction) <= {"0"} and len(fraction) <= 3:
            return 1.0
        return None

    value = ", ".join(f"{token};{param}={q}" for token, param, q in elements)
    expected: list[tuple[bytes, float]] = []
    for token, param, q in elements:
        name = token.encode("latin-1").strip(b" \t").lower()
        weight = qvalue(q) if param.strip().lower() == "q" else 1.0
        if name and weight is not None:
            expected.append((name, weight))
    assert parse_qlist(value.encode("latin-1")) == expected


@given(st.lists(st.lists(tokens_st, max_size=4), max_size=4), st.data())
def test_prop_header_tokens_round_trips(fields: list[list[bytes]], data: st.DataObject) -> None:
    headers: RawHeaders = []
    for tokens in fields:
        headers.append((b"x-list", data.draw(padded_list(tokens))))
        headers.append((b"x-other", b"ignored, tokens"))
    joined = [token for tokens in fields for token in tokens]
    assert header_tokens(headers, b"x-list") == joined
    assert header_tokens([(b"x-list", b", ".join(joined))], b"x-list") == joined


@given(st.lists(tokens_st, max_size=6), st.lists(ows_st, min_size=1))
def test_prop_header_tokens_ignores_ows_and_empty_elements(
    tokens: list[bytes], padding: list[bytes]
) -> None:
    pieces: list[bytes] = []
    for i, token in enumerate(tokens):
        pad = padding[i % len(padding)]
        pieces += [pad + token + pad, pad]
    assert header_tokens([(b"x-list", b",".join(pieces))], b"x-list") == tokens


def test_lowercase_names_only_copies_when_a_name_has_capitals() -> None:
    assert lowercase_names([(b"content-type", b"A"), (b"x-1", b"B"), (b"123", b"C")]) is None
    assert lowercase_names([]) is None
    assert lowercase_names([(b"vary", b"Origin"), (b"Content-Type", b"text/plain")]) == [
        (b"vary", b"Origin"),
        (b"content-type", b"text/plain"),
    ]
