"""The expressions the mapping authors asked for: ``param`` (a name/value list item by name),
``replace``, the conversions ``rfc3339_utc``, ``count``, ``join`` and ``ip``, an ``event_id`` that
falls back to a hash (``or_hash``), and ``keep: {ip: ...}`` (the source IP in the provenance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from streams.core.ruleset import ConfigError
from streams.inputs import Mapped, Rejected, bundled_inputs_dir, load_mapping, load_mappings
from streams.inputs.convert import ConversionError, count, ip, join, rfc3339, rfc3339_utc, split
from streams.inputs.expr import Expr, Scope, compile_expr
from streams.inputs.loader import parse_mapping

PARAMS = [{"name": "ROLE_NAME", "value": "Help Desk"}, {"name": "USER_EMAIL", "value": "a@example.com"},
          {"name": "USER_EMAIL", "value": "second@example.com"}, "not an item", {"value": "no name"},
          {"name": "APPS", "multiValue": ["Drive", "Calendar"]}]  # fmt: skip
RECORD: dict[str, Any] = {
    "parameters": PARAMS,
    "ModifiedProperties": [{"Name": "Role.DisplayName", "NewValue": "Global Administrator", "OldValue": ""}],
    "detail": "Delete Meeting 812 3456 7890",
    "items": ["a", "b", "c"],
}


def _eval(spec: Any, record: Any = RECORD, item: Any = None) -> Any:
    return compile_expr(Expr.model_validate(spec))(Scope(record, item, item is not None))


# -- param -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"param": "USER_EMAIL", "in": "parameters"}, "a@example.com"),  # the first of that name
        ({"param": "ROLE_NAME", "in": "parameters"}, "Help Desk"),
        ({"param": "APPS", "in": "parameters", "value": "multiValue"}, ["Drive", "Calendar"]),
        ({"param": "APPS", "in": "parameters"}, None),  # the item has no `value`
        ({"param": "user_email", "in": "parameters"}, None),  # names compare exactly
        ({"param": "USER_EMAIL", "in": "nowhere"}, None),
        ({"param": "USER_EMAIL", "in": "detail"}, None),  # not a list
        ({"param": "USER_EMAIL", "in": "nowhere", "default": "?"}, "?"),
        ({"coalesce": [{"param": "X", "in": "parameters"}, {"const": "fallback"}]}, "fallback"),
        ({"param": "Role.DisplayName", "in": "ModifiedProperties", "name": "Name", "value": "NewValue"},
         "Global Administrator"),
        ({"param": "USER_EMAIL", "in": "parameters", "regex": "@(.+)$"}, "example.com"),
    ],
)  # fmt: skip
def test_param_selects_an_item_by_name(spec: Any, expected: Any) -> None:
    assert _eval(spec) == expected


def test_param_reads_any_position_and_the_exploded_item() -> None:
    long = [{"name": f"P{i}", "value": i} for i in range(40)]
    assert _eval({"param": "P37", "in": "item.parameters"}, {}, {"parameters": long}) == 37
    text = {"parameters": [{"name": "NOTE", "value": "two\nlines"}]}
    assert _eval({"param": "NOTE", "in": "parameters"}, text) == "two\nlines"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"param": "X"}, "give both 'param'"),
        ({"in": "parameters"}, "give both 'param'"),
        ({"path": "a", "name": "Name"}, "only with param"),
        ({"param": "X", "in": "a..b"}, "malformed"),
        ({"param": "X", "in": "a", "path": "b"}, "exactly one of"),
        ({"path": "a", "replace": {"from": "", "to": ""}}, "replace.from"),
        ({"path": "a", "replace": {"pattern": " ", "with": ""}}, "Extra inputs"),
    ],
)
def test_invalid_param_and_replace_say_why(spec: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Expr.model_validate(spec)


# -- replace ---------------------------------------------------------------------------------------


def test_replace_runs_after_regex_on_strings_and_lists() -> None:
    spec = {"path": "detail", "regex": r"Meeting\s+(\d[\d ]*\d)", "replace": {"from": " ", "to": ""}}
    assert _eval(spec) == "81234567890"
    assert _eval({"path": "items", "replace": {"from": "b", "to": "B"}}) == ["a", "B", "c"]
    assert _eval({"const": 812, "replace": {"from": "1", "to": ""}}) == 812  # not a string: unchanged
    # before map: the table sees the replaced text
    assert _eval({"const": "a-b", "replace": {"from": "-", "to": "_"}, "map": {"a_b": "ok"}}) == "ok"


# -- conversions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-02-09T15:33:26", "2020-02-09T15:33:26Z"),
        ("2020-02-09T15:33:26.1234567", "2020-02-09T15:33:26.123456Z"),
        (" 2020-02-09 15:33:26 ", "2020-02-09T15:33:26Z"),
        ("2020-02-09T15:33:26Z", "2020-02-09T15:33:26Z"),
        ("2020-02-09T17:33:26+02:00", "2020-02-09T15:33:26Z"),
    ],
)
def test_rfc3339_utc_reads_a_missing_zone_as_utc(value: str, expected: str) -> None:
    assert rfc3339_utc(value) == expected


@pytest.mark.parametrize("value", ["2020-02-09", "2020-02-30T00:00:00", "2020-02-09T15:33", 1581262406, None])
def test_rfc3339_utc_refuses_what_is_no_time(value: Any) -> None:
    with pytest.raises(ConversionError):
        rfc3339_utc(value)


def test_plain_rfc3339_still_refuses_a_zoneless_time() -> None:
    with pytest.raises(ConversionError, match="with a zone"):
        rfc3339("2020-02-09T15:33:26")


def test_count_and_join() -> None:
    assert count(["a", "b"]) == 2
    assert count([]) == 0
    assert join(["Read", "Write"]) == "Read;Write"
    assert join([7, "x"]) == "7;x"
    assert join("already one") == "already one"
    assert split(join(["a", "b"])) == ["a", "b"]
    for bad in ("ab", None, {"a": 1}, 3):
        with pytest.raises(ConversionError):
            count(bad)
    for bad in ([], [{"a": 1}], [True], None, 3):
        with pytest.raises(ConversionError):
            join(bad)
    assert _eval({"path": "items", "convert": "count"}) == 3
    assert _eval({"path": "nowhere", "convert": "count"}) is None  # missing stays missing
    assert _eval({"const": [], "convert": "join", "default": "privileges"}) == "privileges"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("203.0.113.7", "203.0.113.7"), (" 203.0.113.7:51234 ", "203.0.113.7"), ("2001:DB8::1", "2001:db8::1"),
     ("[2001:db8::1]:443", "2001:db8::1"), ("[2001:db8::1]", "2001:db8::1")],
)  # fmt: skip
def test_ip_reads_addresses_and_leaves_ports_out(value: str, expected: str) -> None:
    assert ip(value) == expected


@pytest.mark.parametrize("value", ["", "unknown", "203.0.113.300", "example.com:443", 3405803783, None])
def test_ip_refuses_what_is_no_address(value: Any) -> None:
    with pytest.raises(ConversionError):
        ip(value)


# -- event_id or_hash and keep ---------------------------------------------------------------------

SPEC: dict[str, Any] = {
    "id": "demo",
    "version": 1,
    "description": "a demo source",
    "action": "type",
    "actions": {"suspend": "account.suspend"},
    "time": {"path": "at", "convert": "rfc3339"},
    "event_id": {"path": "uid", "or_hash": ["at", "whom"]},
    "keep": {"ip": {"path": "client.ip", "convert": "ip"}},
    "fields": {
        "actor.id": {"path": "who"},
        "actor.kind": {"const": "employee"},
        "actor.region": {"const": "ZZ"},
        "target.kind": {"const": "account"},
        "target.id": {"path": "whom"},
        "target.region": {"const": "ZZ"},
    },
}
BASE = {"type": "suspend", "at": "2024-01-01T00:00:00Z", "who": "a@example.com", "whom": "b@example.com"}


def _one(record: dict[str, Any], spec: dict[str, Any] = SPEC) -> Any:
    [outcome] = parse_mapping(spec, "demo.yaml").map(record)
    return outcome


def test_event_id_is_the_source_id_when_present_else_the_hash() -> None:
    given = _one({**BASE, "uid": "u-1"})
    assert isinstance(given, Mapped)
    assert given.event["event_id"] == "u-1" and given.event["source"]["id"] == "u-1"
    hashed = _one(BASE)
    assert isinstance(hashed, Mapped) and "id" not in hashed.event["source"]
    assert len(hashed.event["event_id"]) == 24
    assert _one(dict(BASE)).event["event_id"] == hashed.event["event_id"]  # deterministic
    other = _one({**BASE, "whom": "c@example.com"})
    assert other.event["event_id"] != hashed.event["event_id"]
    # the same hash as {hash: [...]} over the same paths
    plain = _one(BASE, {**SPEC, "event_id": {"hash": ["at", "whom"]}})
    assert plain.event["event_id"] == hashed.event["event_id"]
    # a source id that is not a scalar is still refused
    assert _one({**BASE, "uid": ["u"]}) == Rejected("missing_event_id", "event_id: no value")


def test_keep_ip_goes_to_the_provenance_and_never_rejects() -> None:
    kept = _one({**BASE, "uid": "u-1", "client": {"ip": "203.0.113.7:443"}})
    assert kept.event["source"] == {"input": "demo", "mapping": "demo", "version": 1, "action": "suspend",
                                    "id": "u-1", "ip": "203.0.113.7"}  # fmt: skip
    assert '"ip":"203.0.113.7"' in kept.line
    for client in ({}, {"ip": "unknown"}, {"ip": ["203.0.113.7"]}):
        outcome = _one({**BASE, "client": client})
        assert isinstance(outcome, Mapped) and "ip" not in outcome.event["source"]
    without = _one(BASE, {k: v for k, v in SPEC.items() if k != "keep"})
    assert "ip" not in without.event["source"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"keep": {"host": {"path": "h"}}}, "keep.host: Extra inputs are not permitted"),
        ({"keep": {"ip": {"path": "a..b"}}}, "keep.ip: path 'a..b': malformed"),
        ({"event_id": {"path": "uid", "or_hash": []}}, "or_hash"),
        ({"event_id": {"path": "uid", "or_hash": ["a..b"]}}, "malformed"),
        ({"fields": {**SPEC["fields"], "target.id": {"param": "X"}}}, "fields.target.id: param: give both 'param'"),
    ],
)
def test_errors_name_file_mapping_and_field(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{path}: mapping 'demo': ")
    assert message in str(caught.value)


def test_both_zoom_mappings_name_a_meeting_the_same_way() -> None:
    mappings = load_mappings(bundled_inputs_dir())
    report = {"time": "2024-06-04T10:00:30Z", "operator": "liaison@example.com", "category_type": "Meeting",
              "action": "Delete", "operation_detail": "Delete Meeting 812 3456 7890"}  # fmt: skip
    webhook = {"event": "meeting.deleted", "event_ts": 1717495230000,
               "payload": {"account_id": "A1", "operator": "liaison@example.com",
                           "object": {"id": 81234567890, "host_id": "H1"}}}  # fmt: skip
    ids = [o.event["target"]["id"] for name, record in (("zoom-operationlog", report), ("zoom-webhook", webhook))
           for o in mappings[name].map(record) if isinstance(o, Mapped)]  # fmt: skip
    assert ids == ["81234567890", "81234567890"]


def test_every_bundled_mapping_whose_source_has_an_ip_keeps_it() -> None:
    keeping = {m.id for m in load_mappings(bundled_inputs_dir()).values() if m.spec.keep.ip is not None}
    assert keeping == {"okta", "gws-admin", "slack-audit", "m365-ual", "github-audit", "ocsf"}
