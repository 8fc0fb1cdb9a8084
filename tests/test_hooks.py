"""asgikit.hooks: a user hook's failure is contained, and reported at most once a period."""

from __future__ import annotations

import logging

import pytest

from asgikit.hooks import Hook, contained, contained_fields, hook_option


def test_a_hook_returns_what_the_function_returns() -> None:
    assert Hook(lambda a, b: a + b, "h")(1, 2) == 3


def test_a_raising_hook_returns_none_and_is_reported_once_a_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]

    def broken(value: int) -> int:
        raise ValueError(f"bad {value}")

    hook = Hook(broken, "TracingMiddleware.request_hook", period=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="asgikit.hooks"):
        assert hook(1) is None
        assert hook(2) is None  # within the period: counted, not reported
        assert hook(3) is None
        now[0] += 61
        assert hook(4) is None  # reported again, with the two it left out
    reports = [r for r in caplog.records if r.name == "asgikit.hooks"]
    assert len(reports) == 2
    assert "TracingMiddleware.request_hook raised ValueError" in reports[0].getMessage()
    assert "0 more failures" in reports[0].getMessage()
    assert "2 more failures" in reports[1].getMessage()
    assert reports[1].exc_info is not None and "bad 4" in str(reports[1].exc_info[1])


def test_cancellation_is_not_contained() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Hook(interrupted, "h")()


def test_hook_option_takes_none_or_a_callable() -> None:
    assert hook_option(None, "request_hook") is None
    assert hook_option(print, "request_hook") is print
    with pytest.raises(TypeError, match=r"^request_hook: expected a callable"):
        hook_option("module:function", "request_hook")


def test_contained_checks_the_option_and_names_the_hook(caplog: pytest.LogCaptureFixture) -> None:
    assert contained(None, "request_hook", "X") is None
    with pytest.raises(TypeError, match=r"^request_hook: expected a callable"):
        contained(3, "request_hook", "X")
    hook = contained(lambda: 1 / 0, "request_hook", "X")
    assert hook is not None
    with caplog.at_level(logging.WARNING, logger="asgikit.hooks"):
        assert hook() is None
    assert "X.request_hook raised ZeroDivisionError" in caplog.text


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (["a"], "fields returned list, not a mapping"),
        ({1: "a"}, "fields returned the field name 1"),
        ({"event": "a"}, "fields returned the field name 'event'"),
    ],
)
def test_contained_fields_checks_what_the_hook_returns(
    result: object, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert contained_fields(None, "fields", "X") is None
    good = contained_fields(lambda: {"a": 1}, "fields", "X", reserved=("event",))
    assert good is not None and good() == {"a": 1}
    bad = contained_fields(lambda: result, "fields", "X", reserved=("event",))
    assert bad is not None
    with caplog.at_level(logging.WARNING, logger="asgikit.hooks"):
        assert bad() is None
    [record] = caplog.records
    assert error in str(record.exc_info[1] if record.exc_info else "")
