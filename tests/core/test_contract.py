"""The contract's types are exact: what passes validation is what the rules read.

The rules, the scoring, the metrics and the summaries read the parsed JSON (``Decoded.view``), not the
model. So a value the model would coerce (``"5000000"`` to an integer, ``"true"`` to a flag, a Unix
number to a time) would be seen one way by validation and another by the rules: a 5-million-record
export written with its count as a string raised no alert. Such values are contract violations now.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config.loader import load_rules
from streams.core import decode as codes
from streams.core.decode import Decoded, Rejected, decode
from streams.offline.backtest import run_backtest

ROOT = Path(__file__).resolve().parents[2]
NOW = float("inf")

ACTOR = {"id": "emp-1", "kind": "employee", "region": "US"}
EXPORT: dict[str, Any] = {
    "event_type": "data.export", "event_id": "x-1", "occurred_at": "2024-06-04T10:00:00Z", "actor": ACTOR,
    "target": {"kind": "dataset", "id": "participants", "region": "US"}, "record_count": 5_000_000,
    "fields": ["name", "email", "ip_address"], "destination": {"kind": "government", "name": "x", "region": "CN"},
}  # fmt: skip
GRANT: dict[str, Any] = {
    "event_type": "access.grant", "event_id": "g-1", "occurred_at": "2024-06-04T10:00:00Z", "actor": ACTOR,
    "grantee": {"id": "emp-2", "kind": "employee", "region": "CN"}, "system": {"id": "vpn", "region": "US"},
    "scope": "remote desktop", "remote": True,
}  # fmt: skip
REPORT: dict[str, Any] = {
    "event_type": "report.filed", "event_id": "r-1", "occurred_at": "2024-06-04T10:00:00Z",
    "actor": {**ACTOR, "kind": "user", "created_at": "2024-06-04T09:00:00Z"},
    "target": {"kind": "meeting", "id": "m-1", "region": "US"}, "category": "violence",
}  # fmt: skip
REQUEST: dict[str, Any] = {
    "event_type": "request.received", "event_id": "q-1", "occurred_at": "2024-06-04T10:00:00Z", "actor": ACTOR,
    "request_id": "R-1", "requester": {"agency": "a", "kind": "government", "jurisdiction": "CN"},
    "request_kind": "takedown", "deadline_seconds": 60, "confidential": True,
}  # fmt: skip


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def _decode(event: dict[str, Any]) -> Decoded | Rejected:
    return decode(json.dumps(event).encode(), now=NOW)


@pytest.mark.parametrize(
    ("base", "path", "value"),
    [
        (EXPORT, "record_count", "5000000"),
        (EXPORT, "record_count", 5e6),
        (EXPORT, "record_count", True),
        (EXPORT, "subject_regions", {"US": "5"}),
        (GRANT, "remote", "true"),
        (GRANT, "remote", 1),
        (REQUEST, "confidential", "false"),
        (REQUEST, "deadline_seconds", "60"),
        (EXPORT, "occurred_at", 1717495200),
        (EXPORT, "occurred_at", "1717495200"),
        (EXPORT, "occurred_at", "2024-06-04"),
        (EXPORT, "occurred_at", "2024-06-04T10:00:00"),
        (EXPORT, "occurred_at", "2024-06-04 10:00:00Z"),
        (REPORT, "actor.created_at", 1717491600),
        (REPORT, "actor.created_at", "1717491600"),
    ],
)
def test_a_value_of_another_type_is_a_contract_violation(base: dict[str, Any], path: str, value: Any) -> None:
    out = _decode(_with(base, path, value))
    assert isinstance(out, Rejected)
    assert out.reason == codes.CONTRACT
    assert out.detail.startswith(path.split(".")[0])


@pytest.mark.parametrize("base", [EXPORT, GRANT, REPORT, REQUEST])
def test_the_exact_types_pass(base: dict[str, Any]) -> None:
    assert isinstance(_decode(base), Decoded)


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["5000000", "true", "1", "2024-06-04T10:00:00Z", "2024-06-04T10:00:00.5+02:00", "1717495200",
                     "2024-06-04", ""]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([(EXPORT, "record_count"), (GRANT, "remote"), (REQUEST, "confidential"),
                     (REQUEST, "deadline_seconds"), (EXPORT, "occurred_at"), (REPORT, "actor.created_at")]),
    JSON_SCALARS,
)  # fmt: skip
def test_what_passes_validation_reads_the_same_in_the_view(case: tuple[dict[str, Any], str], value: Any) -> None:
    """Whatever value a field is given, if the record passes, the rules' view holds the model's value."""
    base, path = case
    out = _decode(_with(base, path, value))
    if not isinstance(out, Decoded):
        return
    model: Any = out.event
    view: Any = out.view
    for part in path.split("."):
        model, view = getattr(model, part), view[part]
    if isinstance(model, datetime):
        assert isinstance(view, str)
        assert datetime.fromisoformat(view.replace("Z", "+00:00")) == model
    else:
        assert type(view) is type(model) and view == model


def test_an_export_with_its_count_as_a_string_is_not_lost(tmp_path: Path) -> None:
    """The attack: a 5-million-record export of personal data abroad, its count written as a string.
    Before, it passed validation and no rule saw the count. Now it is a dead letter naming the field."""
    log = tmp_path / "events.jsonl"
    log.write_text(json.dumps(_with(EXPORT, "record_count", "5000000")) + "\n" + json.dumps(EXPORT) + "\n")
    deadletters = tmp_path / "dead.jsonl"
    result = run_backtest([str(log)], load_rules(ROOT / "config"), deadletter=str(deadletters))
    assert result.rejected == {codes.CONTRACT: 1}
    (dead,) = [json.loads(line) for line in deadletters.read_text().splitlines()]
    assert dead["reason"] == codes.CONTRACT and dead["detail"].startswith("record_count")
    # The well-typed copy of the same export alerts.
    assert any(a.rule_id == "bulk_export" for a in result.alerts)
