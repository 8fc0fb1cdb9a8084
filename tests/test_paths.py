"""One path vocabulary: what every ``exclude_paths`` and path rule means."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgikit.paths import PathMatcher, PathTable, path_pattern


def test_a_path_covers_itself_and_what_is_below_it_on_segment_boundaries() -> None:
    matcher = PathMatcher(["/health"])
    assert matcher("/health") and matcher("/health/") and matcher("/health/live")
    assert not matcher("/healthz") and not matcher("/heal") and not matcher("/")


def test_a_trailing_slash_makes_no_difference() -> None:
    matcher = PathMatcher(["/static/"])
    assert matcher.patterns == ("/static",)
    assert matcher("/static") and matcher("/static/app.js")
    assert not matcher("/staticfiles")


def test_a_star_at_the_end_covers_a_text_prefix() -> None:
    matcher = PathMatcher(["/static*"])
    assert matcher("/static") and matcher("/static/app.js") and matcher("/staticfiles")
    assert not matcher("/stati") and not matcher("/api/static")


def test_the_root_covers_every_path() -> None:
    matcher = PathMatcher(["/"])
    assert matcher("/") and matcher("/anything/at/all")


def test_no_patterns_is_false_and_covers_nothing() -> None:
    matcher = PathMatcher([])
    assert not matcher and not matcher("/")
    assert PathMatcher(["/x"])


def test_a_matcher_shows_its_patterns() -> None:
    assert repr(PathMatcher(["/a/", "/b*"])) == "PathMatcher(['/a', '/b*'])"


def test_a_comma_separated_str_is_a_list() -> None:
    assert PathMatcher("/health, /metrics*").patterns == ("/health", "/metrics*")


@pytest.mark.parametrize("bad", ["health", "", "/a*b", "*", "/*/x", 3])
def test_a_malformed_pattern_fails_at_start_up_naming_the_option(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match=r"exclude_paths"):
        PathMatcher([bad])  # type: ignore[list-item]


def test_path_pattern_normalises() -> None:
    assert path_pattern("/a/b/", "x") == "/a/b"
    assert path_pattern("/", "x") == "/"
    assert path_pattern("///", "x") == "/"
    assert path_pattern("/a*", "x") == "/a*"


def test_a_table_finds_the_longest_pattern() -> None:
    table = PathTable([("/api", 1), ("/api/v2", 2), ("/api/v2/files*", 3), ("/", 0)], -1)
    assert table.match("/api") == 1
    assert table.match("/api/v1/users") == 1
    assert table.match("/api/v2") == 2
    assert table.match("/api/v20") == 1
    assert table.match("/api/v2/files-old") == 3
    assert table.match("/other") == 0
    assert PathTable([("/x", 1)], -1).match("/y") == -1


def test_a_table_refuses_a_pattern_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        PathTable([("/a", 1), ("/a/", 2)], None)


_SEGMENT = st.sampled_from(["a", "b", "ab", ""])


@given(
    st.lists(st.lists(_SEGMENT, min_size=1, max_size=3), max_size=5),
    st.lists(_SEGMENT, min_size=1, max_size=4),
)
def test_matcher_and_table_agree_with_a_brute_force_segment_prefix(
    prefixes: list[list[str]], path_segments: list[str]
) -> None:
    unique = {"/" + "/".join(p).strip("/") for p in prefixes}
    path = "/" + "/".join(path_segments)

    def covers(prefix: str) -> bool:
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")

    matching = [prefix for prefix in unique if covers(prefix)]
    assert PathMatcher(sorted(unique))(path) == bool(matching)
    table = PathTable([(prefix, prefix) for prefix in unique], None)
    assert table.match(path) == (max(matching, key=len) if matching else None)


def test_a_selector_covers_its_path_or_route_and_methods() -> None:
    from asgikit.paths import selector

    by_path = selector({"path": "/api", "methods": ["get"]}, "rules[0]")
    assert by_path("/api/items", "GET") and by_path("/api", "HEAD")
    assert not by_path("/apix", "GET") and not by_path("/api", "POST")
    by_route = selector({"route": "/users/{id:int}"}, "rules[1]")
    assert by_route("/users/7", "DELETE") and not by_route("/users/x", "GET")
    assert selector({}, "rules[2]")("/anything", "PUT")
    assert selector({"path": "/"}, "rules[3]").matches is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"path": "/a", "route": "/a"}, "rules\\[0\\]: give 'path'"),
        ({"route": 3}, "rules\\[0\\].route: expected a template"),
        ({"route": "/a/{id:hex}"}, "rules\\[0\\].route: unknown convertor 'hex'"),
        ({"route": "/a/{id"}, "rules\\[0\\].route: malformed placeholder"),
        ({"route": "a"}, "rules\\[0\\].route: expected a template starting with '/'"),
        ({"methods": []}, "rules\\[0\\].methods: an empty list"),
        ({"methods": ["GE T"]}, "rules\\[0\\].methods: 'GE T' is not an HTTP method"),
    ],
)
def test_a_malformed_selector_names_its_field(spec: dict[str, object], message: str) -> None:
    from asgikit.paths import selector

    with pytest.raises(ValueError, match=message):
        selector(spec, "rules[0]")


def test_methods_must_be_a_list() -> None:
    from asgikit.paths import methods_option

    with pytest.raises(TypeError, match="m: expected a list of methods"):
        methods_option("GET", "m")


def test_the_most_specific_rule_wins_and_ties_keep_their_order() -> None:
    from asgikit.paths import RuleTable, selector

    table = RuleTable(
        [
            (selector({"path": "/a"}, "r"), "prefix"),
            (selector({"path": "/a", "methods": ["POST"]}, "r"), "post"),
            (selector({"route": "/a/{id}"}, "r"), "route"),
            (selector({"route": "/a/{x}"}, "r"), "same length, later"),
        ],
        "default",
    )
    assert table.match("/a/1", "GET") == "route"
    assert table.match("/a", "POST") == "post"
    assert table.match("/a", "PATCH") == "prefix"
    assert table.match("/b", "GET") == "default"


def test_a_final_newline_does_not_get_a_path_past_its_rule() -> None:
    # Starlette routes "/login\n" (sent as /login%0A) to "/login": so must every matcher.
    from asgikit.paths import PathMatcher, PathTable, RuleTable, selector

    assert PathMatcher(["/login"])("/login\n") and PathMatcher(["/api"])("/api/x\n")
    assert not PathMatcher(["/login"])("/login\nx") and not PathMatcher(["/login"])("/logi\n")
    assert PathTable([("/login", "strict")], "loose").match("/login\n") == "strict"
    table = RuleTable([(selector({"route": "/users/{id:int}/login"}, "r"), "strict")], "loose")
    assert table.match("/users/7/login\n", "POST") == "strict"
    assert table.match("/users/7/login\n\n", "POST") == "loose"  # "$" allows one only


def test_a_literal_route_beats_a_template_whatever_its_placeholder_is_called() -> None:
    from asgikit.paths import RuleTable, selector

    for name in ("n", "a_very_long_placeholder_name"):
        table = RuleTable(
            [
                (selector({"route": "/upload/{" + name + "}"}, "r"), "template"),
                (selector({"route": "/upload/large"}, "r"), "literal"),
            ],
            "default",
        )
        assert table.match("/upload/large", "POST") == "literal"
        assert table.match("/upload/small", "POST") == "template"
