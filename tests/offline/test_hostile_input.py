"""Hostile input is rejected with a reason and bounded work: no crash, no blow-up.

The bounds below are generous ceilings against pathological behaviour (quadratic parsing,
unbounded recursion, copies of megabytes per nesting level), not speed goals: those live in the
benchmark."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.decode import DEFAULT_LIMITS, Decoded, Limits, Rejected, decode

CEILING_SECONDS = 2.0
CEILING_BYTES = 64 * 1024 * 1024

VALID = {
    "event_id": "e1",
    "event_type": "account.suspend",
    "occurred_at": "2020-06-01T00:00:00Z",
    "actor": {"id": "emp-1", "kind": "employee", "region": "US"},
    "target": {"kind": "account", "id": "acct-1", "region": "US"},
}


def bounded(record: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Decoded | Rejected, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        out = decode(record, limits)
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return out, elapsed, peak


def test_a_two_megabyte_line_is_refused_without_parsing_it() -> None:
    record = json.dumps({**VALID, "reason": "x" * (2 * 1024 * 1024)}).encode()
    out, elapsed, peak = bounded(record)
    assert isinstance(out, Rejected) and out.reason == "too_large"
    assert elapsed < CEILING_SECONDS and peak < 1024 * 1024  # refused before any copy or parse


def test_a_two_megabyte_line_under_a_raised_limit_is_bounded() -> None:
    record = json.dumps({**VALID, "padding": ["y" * 1000] * 2000}).encode()
    out, elapsed, peak = bounded(record, Limits(max_bytes=4 * 1024 * 1024))
    assert isinstance(out, Decoded)  # unknown fields are accepted...
    assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES  # ...at a cost linear in the size


def test_five_thousand_deep_nesting_is_refused_within_bounds() -> None:
    for record in (b"[" * 5000 + b"]" * 5000, json.dumps({**VALID, "x": 1}).encode()[:-1] + b',"y":'
                   + b'{"a":' * 5000 + b"1" + b"}" * 5001):  # fmt: skip
        out, elapsed, peak = bounded(record)
        assert isinstance(out, Rejected) and out.reason == "too_deep", out
        assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES


def test_long_strings_in_known_fields_are_refused() -> None:
    out = decode(json.dumps({**VALID, "reason": "r" * 5000}).encode())
    assert isinstance(out, Rejected) and out.reason == "contract_violation" and out.detail.startswith("reason:")
    out = decode(json.dumps({**VALID, "target": {**VALID["target"], "id": "i" * 201}}).encode())  # type: ignore[dict-item]
    assert isinstance(out, Rejected) and out.detail.startswith("target.id:")


def test_unknown_regions_are_kept() -> None:
    out = decode(json.dumps({**VALID, "target": {**VALID["target"], "region": "XZ"}}).encode())  # type: ignore[dict-item]
    assert isinstance(out, Decoded) and out.view["target"]["region"] == "XZ"
    from streams.core.regions import region_label

    assert region_label("XZ") == "other" and region_label("CN") == "CN"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_bounded(record: bytes) -> None:
    out, elapsed, peak = bounded(record)
    assert isinstance(out, Decoded | Rejected)
    assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(["event_id", "occurred_at", "actor", "target", "event_type", "record_count"]))
def test_arbitrary_json_in_any_field_is_bounded(value: Any, field: str) -> None:
    record = json.dumps({**VALID, field: value}).encode()
    out, elapsed, peak = bounded(record)
    assert isinstance(out, Decoded | Rejected)
    if isinstance(out, Rejected):
        assert out.reason and out.detail
    assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES
