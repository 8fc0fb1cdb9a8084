"""Option parsing shared by the middleware."""

import pytest

from asgikit.options import string_list


def test_a_comma_separated_str_drops_empty_entries() -> None:
    assert string_list(" a, b ,,", "opt") == ["a", "b"]
    assert string_list("", "opt") == []


def test_an_iterable_keeps_empty_entries_for_the_caller_to_reject() -> None:
    assert string_list(("a", " b ", ""), "opt") == ["a", "b", ""]


@pytest.mark.parametrize("value", [42, None, ["a", 1]])
def test_wrong_types_name_the_option(value: object) -> None:
    with pytest.raises(TypeError, match="opt"):
        string_list(value, "opt")  # type: ignore[arg-type]
