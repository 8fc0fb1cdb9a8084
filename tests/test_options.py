"""Option parsing shared by the middleware."""

import pytest

from asgikit.options import bounded_int, flag, number, positive_seconds, renamed, string_list


def test_a_comma_separated_str_drops_empty_entries() -> None:
    assert string_list(" a, b ,,", "opt") == ["a", "b"]
    assert string_list("", "opt") == []


def test_an_iterable_keeps_empty_entries_for_the_caller_to_reject() -> None:
    assert string_list(("a", " b ", ""), "opt") == ["a", "b", ""]


@pytest.mark.parametrize("value", [42, None, ["a", 1]])
def test_wrong_types_name_the_option(value: object) -> None:
    with pytest.raises(TypeError, match="opt"):
        string_list(value, "opt")  # type: ignore[arg-type]


def test_numbers_are_checked_against_their_bounds() -> None:
    assert number(0.5, "rate", minimum=0, maximum=1) == 0.5
    assert number(1, "rate", above=0) == 1.0
    with pytest.raises(
        ValueError, match=r"^rate: expected a number at least 0 and at most 1, got 1.5"
    ):
        number(1.5, "rate", minimum=0, maximum=1)
    with pytest.raises(ValueError, match=r"^timeout: expected a number above 0, got 0"):
        number(0, "timeout", above=0)
    with pytest.raises(ValueError, match=r"^timeout: expected a finite number, got inf"):
        number(float("inf"), "timeout")
    for wrong in (True, "1", None):
        with pytest.raises(TypeError, match=r"^rate: expected a number, got"):
            number(wrong, "rate")


def test_integers_bools_and_seconds() -> None:
    assert bounded_int(3, "n", 1, 9) == 3
    with pytest.raises(
        ValueError, match=r"^n: expected an integer of at least 1 and at most 9, got 10"
    ):
        bounded_int(10, "n", 1, 9)
    with pytest.raises(TypeError, match=r"^n: expected an integer, got True"):
        bounded_int(True, "n", 0)
    assert flag(False, "on") is False
    with pytest.raises(TypeError, match=r"^on: expected true or false, got 1"):
        flag(1, "on")
    assert positive_seconds(None, "t") is None and positive_seconds(2, "t") == 2.0
    with pytest.raises(ValueError, match=r"^t: expected a positive, finite number of seconds"):
        positive_seconds(-1, "t")
    with pytest.raises(TypeError, match=r"^t: expected a number of seconds or None"):
        positive_seconds("2", "t")


def test_a_renamed_option_warns_and_is_used_and_both_names_are_refused() -> None:
    assert renamed("old", None, "new", 5, 0) == 5
    with pytest.warns(DeprecationWarning, match="old is deprecated, use new"):
        assert renamed("old", 3, "new", 0, 0) == 3
    with pytest.raises(TypeError, match="old is the deprecated name of new"):
        renamed("old", 3, "new", 4, 0)
    with pytest.warns(DeprecationWarning, match="old is deprecated"):  # [] says nothing
        assert renamed("old", ["/h"], "new", [], ()) == ["/h"]
    with pytest.raises(TypeError, match="old is the deprecated name of new"):
        renamed("old", ["/h"], "new", ["/x"], ())
