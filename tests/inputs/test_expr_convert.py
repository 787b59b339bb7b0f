"""Conversions (each kind and its errors) and field expressions (each key, their order, the
regex guard), called directly."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from streams.inputs.convert import (
    ConversionError,
    country,
    rfc3339,
    split,
    split_parts,
    to_bool,
    to_int,
    to_str,
    unix_ms,
    unix_s,
)
from streams.inputs.expr import Expr, Scope, check_pattern, compile_expr, parse_path


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-06-03T12:00:20.123Z", "2020-06-03T12:00:20.123Z"),
        ("2020-06-03T12:00:20Z", "2020-06-03T12:00:20Z"),
        ("2020-06-03T14:00:20+02:00", "2020-06-03T12:00:20Z"),
        ("2020-06-03T12:00:20.123456789Z", "2020-06-03T12:00:20.123456Z"),
        ("2020-06-03 12:00:20.500z", "2020-06-03T12:00:20.5Z"),
    ],
)
def test_rfc3339_normalises_to_utc(value: str, expected: str) -> None:
    assert rfc3339(value) == expected


@pytest.mark.parametrize("value", ["2020-06-03T12:00:20", "2020-06-03", "2020-02-30T00:00:00Z", 1591185620, None])
def test_rfc3339_refuses_no_zone_bad_dates_and_numbers(value: Any) -> None:
    with pytest.raises(ConversionError):
        rfc3339(value)


def test_unix_times() -> None:
    assert unix_s(1591185620) == "2020-06-03T12:00:20Z"
    assert unix_s("1591185620.25") == "2020-06-03T12:00:20.25Z"
    assert unix_ms(1591185620123) == "2020-06-03T12:00:20.123Z"
    for bad in (True, "soon", float("nan"), 10**30, None, [1]):
        with pytest.raises(ConversionError):
            unix_ms(bad)


@pytest.mark.parametrize(
    ("name", "code"),
    [("United States", "US"), ("Hong Kong", "HK"), ("Korea, Republic of", "KR"), ("South Korea", "KR"),
     ("Côte d'Ivoire", "CI"), ("Cote d\u2019Ivoire", "CI"), ("St Kitts and Nevis", "KN"),
     ("de", "DE"), ("Türkiye", "TR"),
     ("United Kingdom", "GB"), ("the Netherlands", "NL")],
)  # fmt: skip
def test_country_names_and_codes(name: str, code: str) -> None:
    assert country(name) == code


@pytest.mark.parametrize("value", ["Atlantis", "", "XX", 840, None])
def test_country_refuses_what_it_does_not_know(value: Any) -> None:
    with pytest.raises(ConversionError):
        country(value)


def test_int_bool_str_split() -> None:
    assert to_int(60) == 60 and to_int("60") == 60 and to_int(60.0) == 60 and to_int(" -3 ") == -3
    for bad in (True, "6e1", 1.5, "sixty", None):
        with pytest.raises(ConversionError):
            to_int(bad)
    assert to_bool("true") is True and to_bool("No") is False and to_bool("") is False and to_bool(1) is True
    for bad in ("maybe", 2, None):
        with pytest.raises(ConversionError):
            to_bool(bad)
    assert to_str(809321987) == "809321987" and to_str("809321987") == "809321987" and to_str(5.0) == "5"
    for bad in (True, None, {"a": 1}):
        with pytest.raises(ConversionError):
            to_str(bad)
    assert split(" a; b ;;c ") == ["a", "b", "c"] and split(["x"]) == ["x"]
    with pytest.raises(ConversionError):
        split(5)


def test_split_parts_gives_the_middle_name_the_rest() -> None:
    names = ["kind", "id", "region"]
    assert split_parts("meeting:123:US", names, ":") == {"kind": "meeting", "id": "123", "region": "US"}
    assert split_parts("account:urn:x:42:HK", names, ":") == {"kind": "account", "id": "urn:x:42", "region": "HK"}
    for bad in ("meeting:123", "meeting::US", "plain"):
        with pytest.raises(ConversionError):
            split_parts(bad, names, ":")


# -- expressions ----------------------------------------------------------------------------------

RECORD = {
    "actor": {"alternateId": "a@example.com", "type": "SystemPrincipal"},
    "target": [{"id": "t1", "alternateId": None}, {"id": "t2", "alternateId": "b@example.com"}],
    "n": 7,
    "detail": "Update User x - User Role: from Member to Admin",
    "published": "2020-06-03T12:00:00Z",
}


def _eval(spec: Any, record: Any = RECORD, item: Any = None) -> Any:
    return compile_expr(Expr.model_validate(spec))(Scope(record, item, item is not None))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("actor.alternateId", "a@example.com"),
        ({"path": "target[1].alternateId"}, "b@example.com"),
        ({"path": "target[*].id"}, ["t1", "t2"]),
        ({"path": "target[*].alternateId"}, ["b@example.com"]),
        ({"path": "target[5].id"}, None),
        ({"path": "missing.deeper"}, None),
        ({"const": "okta"}, "okta"),
        ({"coalesce": [{"path": "target[0].alternateId"}, {"path": "target[0].id"}]}, "t1"),
        ({"path": "actor.type", "map": {"User": "employee", "SystemPrincipal": "system"}}, "system"),
        ({"path": "actor.type", "map": {"User": "employee"}, "default": "employee"}, "employee"),
        ({"path": "n", "map": {"7": "seven"}}, "seven"),
        ({"path": "detail", "regex": r"from (\w+) to (\w+)", "group": 2}, "Admin"),
        ({"path": "detail", "regex": r"Role: from (?P<old>\w+)", "group": "old"}, "Member"),
        ({"path": "detail", "regex": r"^Delete"}, None),
        ({"template": "okta-group:{target[1].id}"}, "okta-group:t2"),
        ({"template": "x:{nowhere}"}, None),
        ({"path": "n", "convert": "str"}, "7"),
        ({"path": "published", "convert": "unix_s", "default": "fallback"}, "fallback"),
        ({"const": "meeting:1:US;account:a:HK", "convert": "split", "parts": ["kind", "id", "region"]},
         [{"kind": "meeting", "id": "1", "region": "US"}, {"kind": "account", "id": "a", "region": "HK"}]),
        ({"path": "missing", "default": "ZZ"}, "ZZ"),
    ],
)  # fmt: skip
def test_expressions(spec: Any, expected: Any) -> None:
    assert _eval(spec) == expected


def test_item_paths_read_the_exploded_item() -> None:
    assert _eval({"path": "item.name"}, {"item": {"name": "record"}}, {"name": "SUSPEND_USER"}) == "SUSPEND_USER"
    assert _eval({"path": "item.name"}, {"item": {"name": "record"}}) == "record"  # no explode: a plain path


def test_a_failed_conversion_without_default_raises() -> None:
    with pytest.raises(ConversionError):
        _eval({"path": "published", "convert": "unix_s"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"path": "a", "const": 1}, "exactly one of"),
        ({"default": 1}, "exactly one of"),
        ({"path": "a", "convert": "rot13"}, "unknown conversion"),
        ({"path": "a", "colour": "red"}, "Extra inputs"),
        ({"path": "a..b"}, "malformed"),
        ({"path": "a[x]"}, "malformed"),
        ({"template": "{a[}"}, "malformed"),
        ({"path": "a", "regex": "(a+)+$"}, "backtrack"),
        ({"path": "a", "regex": r"(\w+)\1"}, "backreferences"),
        ({"path": "a", "regex": "(?=x)"}, "lookarounds"),
        ({"path": "a", "regex": "(unclosed"}, "regex"),
    ],
)
def test_invalid_expressions_say_why(spec: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):
        Expr.model_validate(spec)


def test_check_pattern_allows_ordinary_patterns() -> None:
    for pattern in (r"from (\w+) to (\w+)", r"^[A-Z]{2}$", r"(ab)+c", r"(?P<x>[^:]+):(\d+)", r"[(+]*"):
        check_pattern(pattern)
    assert parse_path("a.b[0][*].c") == ["a", "b", 0, "*", "c"]
