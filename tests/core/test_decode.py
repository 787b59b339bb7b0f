"""The event contract's error paths through ``streams.core.decode.decode``: every bad record becomes a
``Rejected`` with a bounded reason code and a detail that names the field, never its value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core import decode as codes
from streams.core.decode import Decoded, Limits, Rejected, decode

NOW = 1_709_287_200.0  # 2024-03-01T10:00:00Z
SECRET = "alice@example.com"  # a personal value that must never appear in a rejection detail


def suspend(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_type": "account.suspend",
        "event_id": "s1",
        "occurred_at": "2024-03-01T09:00:00Z",
        "actor": {"id": "emp-1", "kind": "employee", "region": "US"},
        "target": {"kind": "account", "id": "acct-1", "region": "DE"},
        "reason": "spam",
    }
    event.update(changes)
    return event


def export(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_type": "data.export",
        "event_id": "x1",
        "occurred_at": "2024-03-01T09:00:00Z",
        "actor": {"id": "emp-2", "kind": "employee", "region": "US"},
        "target": {"kind": "dataset", "id": "users", "region": "US"},
        "record_count": 1200,
        "destination": {"kind": "external", "name": "vendor", "region": "US"},
    }
    event.update(changes)
    return event


def without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    node = event
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return event


def raw(event: Any) -> bytes:
    return json.dumps(event).encode()


def rejected(record: bytes | str, limits: Limits = codes.DEFAULT_LIMITS) -> Rejected:
    out = decode(record, limits, now=NOW)
    assert isinstance(out, Rejected), out
    assert out.reason in codes.REASONS
    return out


def test_a_valid_event_decodes() -> None:
    out = decode(raw(suspend()), now=NOW)
    assert isinstance(out, Decoded)
    assert out.event.event_type == "account.suspend"
    assert out.ts == NOW - 3600
    assert out.view["target"]["region"] == "DE"


def test_text_input_decodes_too() -> None:
    assert isinstance(decode(json.dumps(suspend()), now=NOW), Decoded)


def test_unknown_extra_fields_are_accepted_and_kept_in_the_view() -> None:
    event = suspend(scenario="x", producer_version=7, nested={"new": [1, 2]})
    event["target"]["future_field"] = True
    out = decode(raw(event), now=NOW)
    assert isinstance(out, Decoded)
    assert out.view["producer_version"] == 7
    assert not hasattr(out.event, "producer_version")


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        (without(suspend(), "actor"), "actor: Field required"),
        (without(suspend(), "target", "region"), "target.region: Field required"),
        (without(export(), "destination"), "destination: Field required"),
        (without(suspend(), "occurred_at"), "occurred_at: Field required"),
        (without(suspend(), "event_id"), "event_id: Field required"),
    ],
    ids=["actor", "target.region", "destination", "occurred_at", "event_id"],
)
def test_missing_required_field(event: dict[str, Any], detail: str) -> None:
    out = rejected(raw(event))
    assert out.reason == codes.CONTRACT
    assert out.detail.startswith(detail)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (export(record_count=SECRET), "record_count"),
        (export(record_count=12.5), "record_count"),
        (suspend(actor={"id": "emp-1", "kind": "robot", "region": "US"}), "actor.kind"),
        (suspend(target=SECRET), "target"),
        (suspend(tags=SECRET), "tags"),
        (suspend(occurred_at=SECRET), "occurred_at"),
        (export(subject_regions={"US": SECRET}), "subject_regions.US"),
        (suspend(actor={"id": 17, "kind": "employee", "region": "US"}), "actor.id"),
    ],
    ids=["string count", "float count", "enum", "object", "list", "timestamp", "map value", "id type"],
)
def test_mistyped_field(event: dict[str, Any], field: str) -> None:
    out = rejected(raw(event))
    assert out.reason == codes.CONTRACT
    assert out.detail.startswith(f"{field}: ")
    assert SECRET not in out.detail
    assert "alice" not in out.detail


def test_several_errors_report_the_first_and_a_count() -> None:
    out = rejected(raw(without(without(suspend(), "actor"), "target")))
    assert out.detail == "actor: Field required (+1 more)"


def test_naive_timestamp() -> None:
    out = rejected(raw(suspend(occurred_at="2024-03-01T09:00:00")))
    assert out.reason == codes.CONTRACT
    assert out.detail.startswith("occurred_at: ")
    assert "zone" in out.detail


def test_naive_nested_timestamp() -> None:
    actor = {"id": "u", "kind": "user", "region": "US", "created_at": "2024-02-01T00:00:00"}
    out = rejected(raw(suspend(actor=actor)))
    assert (out.reason, out.detail.split(":")[0]) == (codes.CONTRACT, "actor.created_at")


def test_unknown_event_type() -> None:
    out = rejected(raw(suspend(event_type="meeting.delete")))
    assert out.reason == codes.UNKNOWN_TYPE
    assert out.detail.startswith("event_type: must be one of request.received, meeting.shutdown")
    assert "meeting.delete" not in out.detail


@pytest.mark.parametrize("value", [None, 7, ""], ids=["null", "number", "empty"])
def test_mistyped_event_type(value: Any) -> None:
    out = rejected(raw(suspend(event_type=value)))
    assert out.reason in (codes.UNKNOWN_TYPE, codes.CONTRACT)
    assert out.detail.startswith("event_type: ")


def test_missing_event_type() -> None:
    out = rejected(raw(without(suspend(), "event_type")))
    assert (out.reason, out.detail) == (codes.CONTRACT, "event_type: field required")


@pytest.mark.parametrize("record", [b'{"event_type": ', b"{'single': 'alice'}", b"{} trailing", b"NaN-ish"])
def test_invalid_json(record: bytes) -> None:
    out = rejected(record)
    assert out.reason == codes.INVALID_JSON
    assert out.detail.startswith("invalid JSON: ")
    assert "alice" not in out.detail


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (b"[1, 2]", "list"),
        (b"42", "int"),
        (b"4.5", "float"),
        (b'"text"', "str"),
        (b"null", "NoneType"),
        (b"true", "bool"),
    ],
)
def test_non_object_json(record: bytes, kind: str) -> None:
    out = rejected(record)
    assert (out.reason, out.detail) == (codes.NOT_OBJECT, f"expected a JSON object, got {kind}")


def test_invalid_utf8() -> None:
    record = raw(suspend(reason="x")).replace(b'"x"', b'"\xff\xfe"')
    bad_at = record.index(b"\xff")
    out = rejected(record)
    assert out.reason == codes.INVALID_UTF8
    assert out.detail == f"invalid UTF-8 at byte {bad_at}"


@pytest.mark.parametrize("record", [b"", b"   ", b"\n", "", " \t\r\n"])
def test_empty(record: bytes | str) -> None:
    assert rejected(record).reason == codes.EMPTY


def test_over_the_size_limit() -> None:
    record = raw(suspend(reason="x" * 300))
    out = rejected(record, Limits(max_bytes=200))
    assert (out.reason, out.detail) == (codes.TOO_LARGE, f"record is {len(record)} bytes, limit 200")
    assert isinstance(decode(record, Limits(max_bytes=len(record)), now=NOW), Decoded)


def test_over_the_default_size_limit() -> None:
    record = raw(suspend(reason="x" * (1024 * 1024)))
    assert rejected(record).reason == codes.TOO_LARGE


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def test_nesting_at_the_limit_is_accepted() -> None:
    # the event object itself is level 1, so the extra field may hold depth - 1 levels
    out = decode(raw(suspend(extra=_nested(31))), now=NOW)
    assert isinstance(out, Decoded)


def test_nesting_deeper_than_the_limit() -> None:
    out = rejected(raw(suspend(extra=_nested(32))))
    assert (out.reason, out.detail) == (codes.TOO_DEEP, "nesting deeper than 32")
    assert rejected(raw(suspend(extra=_nested(8))), Limits(max_depth=4)).reason == codes.TOO_DEEP


@pytest.mark.parametrize(
    "record",
    [
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b"[" * 5000 + b"]" * 5000,
        b'{"event_type": "account.suspend", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"[" * 200_000,
    ],
    ids=["objects", "lists", "inside an event", "unclosed"],
)
def test_very_deep_nesting_does_not_raise(record: bytes) -> None:
    out = decode(record, Limits(max_bytes=10**6), now=NOW)
    assert isinstance(out, Rejected)
    assert out.reason in (codes.TOO_DEEP, codes.INVALID_JSON)


@pytest.mark.parametrize(("count", "ok"), [(-1, False), (0, True), (10**10, True), (10**10 + 1, False)])
def test_record_count_bounds(count: int, ok: bool) -> None:
    out = decode(raw(export(record_count=count)), now=NOW)
    if ok:
        assert isinstance(out, Decoded)
    else:
        assert isinstance(out, Rejected)
        assert out.reason == codes.CONTRACT
        assert out.detail.startswith("record_count: Input should be")


def test_subject_region_count_bounds() -> None:
    out = rejected(raw(export(subject_regions={"US": -5})))
    assert out.detail.startswith("subject_regions.US: ")


@pytest.mark.parametrize(
    ("occurred_at", "ok"),
    [
        ("1999-12-31T23:59:59Z", False),
        ("2000-01-01T00:00:00Z", True),
        ("1970-01-01T00:00:00+00:00", False),
        ("2024-03-02T09:59:59Z", True),  # within a day of ``now``
        ("2024-03-02T10:00:01Z", False),
        ("2124-03-01T10:00:00Z", False),
    ],
)
def test_timestamp_range(occurred_at: str, ok: bool) -> None:
    out = decode(raw(suspend(occurred_at=occurred_at)), now=NOW)
    if ok:
        assert isinstance(out, Decoded)
    else:
        assert isinstance(out, Rejected)
        assert (out.reason, out.detail) == (
            codes.BAD_TIME,
            "occurred_at: before 2000 or too far in the future",
        )


def test_far_future_bound_uses_the_wall_clock_by_default() -> None:
    out = decode(raw(suspend(occurred_at="2999-01-01T00:00:00Z")))
    assert isinstance(out, Rejected)
    assert out.reason == codes.BAD_TIME


@pytest.mark.parametrize(("length", "ok"), [(200, True), (201, False)])
def test_event_id_length(length: int, ok: bool) -> None:
    out = decode(raw(suspend(event_id="e" * length)), now=NOW)
    if ok:
        assert isinstance(out, Decoded)
    else:
        assert isinstance(out, Rejected)
        assert out.reason == codes.CONTRACT
        assert out.detail.startswith("event_id: ")
        assert "e" * 50 not in out.detail


def test_empty_event_id_rejected() -> None:
    assert rejected(raw(suspend(event_id=""))).detail.startswith("event_id: ")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(record: bytes) -> None:
    out = decode(record, now=NOW)
    assert isinstance(out, Decoded | Rejected)
    if isinstance(out, Rejected):
        assert out.reason in codes.REASONS


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=30,
    )
)
def test_arbitrary_json_never_raises(value: Any) -> None:
    out = decode(json.dumps(value), now=NOW)
    assert isinstance(out, Rejected)
    assert out.reason in codes.REASONS


# -- the orjson fast path decides nothing on its own ----------------------------------------------

_EDGE_RECORDS = [
    raw(suspend()),
    raw(export(record_count=2**63 - 1)),
    json.dumps(suspend(reason=float("nan"))).encode(),  # NaN: json reads it, orjson does not
    json.dumps(suspend(reason=float("inf"))).encode(),
    b'{"event_type": "account.suspend", "reason": "\\ud800"}',  # a lone surrogate escape
    "\ufeff".encode() + raw(suspend()),  # a byte-order mark
    raw(suspend(event_id="a")).replace(b'"event_id": "a"', b'"event_id": "a", "event_id": "b"'),
    json.dumps(_nested(33)).encode(),
    b"[" * 40 + b"]" * 40,
    b'{"a": ' * 40 + b"1" + b"}" * 40,
    b'{"a": ' * 2000 + b"1" + b"}" * 2000,  # past orjson's own recursion limit
    b"\xff\xfe{}",
    raw(suspend()).decode("utf-8"),  # text, not bytes
    b'{"event_type": "account.suspend"} ',
    b"[]",
    b"1e400",
]


@pytest.mark.parametrize("record", _EDGE_RECORDS, ids=[str(i) for i in range(len(_EDGE_RECORDS))])
def test_the_fast_path_gives_what_json_alone_gives(record: bytes | str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = decode(record, now=NOW)
    monkeypatch.setattr(codes, "_fast_parse", lambda raw, limits: None)
    slow = decode(record, now=NOW)
    assert fast == slow


def test_an_integer_past_64_bits_is_rejected_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    record = raw(export(record_count=2**70))  # orjson reads it as a float, json as an int
    fast = decode(record, now=NOW)
    monkeypatch.setattr(codes, "_fast_parse", lambda raw, limits: None)
    slow = decode(record, now=NOW)
    assert isinstance(fast, Rejected) and isinstance(slow, Rejected)
    assert fast.reason == slow.reason == codes.CONTRACT
    assert fast.detail.startswith("record_count:") and slow.detail.startswith("record_count:")


@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=20))  # fmt: skip
def test_the_fast_path_agrees_on_any_json_value(value: Any) -> None:
    record = json.dumps({**suspend(), "extra": value}).encode()
    fast = decode(record, now=NOW)
    original = codes._fast_parse
    try:
        codes._fast_parse = lambda raw, limits: None  # type: ignore[assignment]
        slow = decode(record, now=NOW)
    finally:
        codes._fast_parse = original
    assert fast == slow
