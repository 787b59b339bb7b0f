"""``streams.core.incidents``: incidents open, attach, escalate and close in event time, with
deterministic ids, one revision per update, redeliveries counted once, and a state that survives a
JSON round trip; ``incidents.yaml`` errors name the file, the item and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.config.loader import ConfigError, bundled_rules_dir, load_incidents
from streams.core.alerts import Alert
from streams.core.incident_config import RISK_FIELDS, IncidentsConfig, RiskObject, build_incidents_config
from streams.core.incidents import IncidentEngine, IncidentUpdate, incident_id
from streams.core.scoring import Severity

HOUR = 3600.0
T0 = 1_590_000_000.0


def alert(n: int, rule: str, score: int, ts: float, actor: str = "emp-1", mode: str = "live",
          **subjects: str) -> Alert:  # fmt: skip
    severity = Severity.CRITICAL if score >= 80 else Severity.HIGH if score >= 60 else \
        Severity.MEDIUM if score >= 40 else Severity.LOW  # fmt: skip
    return Alert(alert_id=f"a{n:023d}", rule_id=rule, severity=severity, score=score, title=rule, summary=rule,
                 actor_id=actor, group_key=f"actor.id={actor}", event_ids=[f"ev-{n}"], first_seen=ts, last_seen=ts,
                 signals=[], labels={}, mode=mode, subjects=dict(subjects))  # fmt: skip


def config(**overrides: Any) -> IncidentsConfig:
    raw: dict[str, Any] = yaml.safe_load((bundled_rules_dir() / "incidents.yaml").read_text(encoding="utf-8"))
    raw.update(overrides)
    return build_incidents_config(raw, "incidents.yaml")


def changes(updates: list[IncidentUpdate]) -> list[tuple[str, int, str]]:
    return [(u.change, u.incident.revision, u.incident.severity.label) for u in updates]


def test_a_high_alert_opens_and_later_alerts_attach_and_escalate() -> None:
    engine = IncidentEngine(config())
    opened = engine.observe(alert(1, "undocumented_action", 60, T0))
    assert changes(opened) == [("opened", 1, "high")] and opened[0].pages
    first = opened[0].incident
    assert first.incident_id == incident_id("actor", "emp-1", "a" + "0" * 22 + "1")
    attached = engine.observe(alert(2, "takedown_burst", 65, T0 + 60))
    assert changes(attached) == [("attached", 2, "high")] and not attached[0].pages
    escalated = engine.observe(alert(3, "rapid_takedown", 100, T0 + 120))
    assert changes(escalated) == [("escalated", 3, "critical")] and not escalated[0].pages  # paged already
    incident = escalated[0].incident
    assert incident.incident_id == first.incident_id
    assert incident.alert_count == 3 and incident.score == 225
    assert incident.rule_ids() == ["rapid_takedown", "takedown_burst", "undocumented_action"]
    assert json.loads(incident.to_json())["risk_object"] == {"kind": "actor", "value": "emp-1"}


def test_a_redelivered_alert_counts_once() -> None:
    engine = IncidentEngine(config())
    engine.observe(alert(1, "undocumented_action", 60, T0))
    assert engine.observe(alert(1, "undocumented_action", 60, T0)) == []
    assert engine.open_incidents()[0].alert_count == 1


def test_risk_accumulates_across_rules_not_repeats() -> None:
    engine = IncidentEngine(config())
    for n in range(5):  # one rule's medium alerts again and again: that rule's own threshold's business
        assert engine.observe(alert(n, "cross_region_access", 50, T0 + n * HOUR)) == []
    opened = engine.observe(alert(9, "bulk_export", 50, T0 + 5 * HOUR))
    assert changes(opened) == [("opened", 1, "high")]
    assert opened[0].incident.opened_by == "accumulated_risk" and opened[0].incident.score == 100
    summed = IncidentEngine(config(risk_per_rule="sum"))
    updates = [u for n in range(2) for u in summed.observe(alert(n, "cross_region_access", 50, T0 + n))]
    assert changes(updates) == [("opened", 1, "high")]


def test_alerts_of_several_rules_open_one() -> None:
    rules = [{"id": "several", "distinct_rules": 3}]
    engine = IncidentEngine(config(rules=rules))
    assert engine.observe(alert(1, "r1", 40, T0)) == [] and engine.observe(alert(2, "r2", 40, T0 + 1)) == []
    opened = engine.observe(alert(3, "r3", 40, T0 + 2))
    assert opened[0].incident.reason == "alerts of 3 rules" and opened[0].incident.alert_count == 3


def test_quiet_period_closes_in_event_time_and_a_new_incident_has_a_new_id() -> None:
    engine = IncidentEngine(config())
    first = engine.observe(alert(1, "undocumented_action", 60, T0))[0].incident
    assert engine.advance(T0 + 6 * HOUR - 1) == []
    closed = engine.advance(T0 + 6 * HOUR)
    assert changes(closed) == [("closed", 2, "high")] and closed[0].incident.status == "closed"
    assert engine.open_incidents() == []
    again = engine.observe(alert(2, "undocumented_action", 60, T0 + 30 * HOUR))
    assert again[0].change == "opened" and again[0].incident.incident_id != first.incident_id


def test_shadow_low_and_info_alerts_add_no_risk() -> None:
    engine = IncidentEngine(config())
    assert engine.observe(alert(1, "r", 90, T0, mode="shadow")) == []
    assert engine.observe(alert(2, "r", 35, T0)) == []
    assert engine.objects == {}


def test_one_page_per_pattern_the_actor_first() -> None:
    engine = IncidentEngine(config())
    kwargs = {"target.owner_id": "acct-9", "requester.agency": "MSS", "requester.jurisdiction": "CN"}
    opened = engine.observe(alert(1, "rapid_takedown", 100, T0, **kwargs))
    assert [(u.change, u.incident.kind) for u in opened] == [("opened", "actor")]
    # Another actor on the same owner: the owner's open incident? none: the alert opens its own actor's.
    other = engine.observe(alert(2, "undocumented_action", 60, T0 + 10, actor="emp-2", **kwargs))
    assert [(u.change, u.incident.kind) for u in other] == [("opened", "actor")]


def test_the_requester_of_a_request_is_learned_from_an_earlier_alert() -> None:
    requester = {"kind": "requester", "weight": 1, "fields": ["requester.agency", "requester.jurisdiction"]}
    engine = IncidentEngine(config(risk_objects=[requester]))
    engine.observe(alert(1, "cross_jurisdiction", 45, T0, request_id="req-1", **{"requester.agency": "MSS",
                                                                                 "requester.jurisdiction": "CN"}))
    opened = engine.observe(alert(2, "undocumented_action", 60, T0 + 5, request_id="req-1"))
    assert opened[0].incident.value == "MSS / CN" and opened[0].incident.alert_count == 2


def test_state_is_bounded() -> None:
    engine = IncidentEngine(config(max_alerts=5))
    for n in range(40):  # a slow exfiltration: forty alerts, one incident
        engine.observe(alert(n, "cumulative_exfiltration", 75, T0 + n * 600))
    (incident,) = engine.open_incidents()
    assert incident.alert_count == 40 and len(incident.alert_ids) == 5
    assert all(len(s.entries) <= 5 for s in engine.objects.values())


def test_snapshot_round_trips_through_json_and_recognises_redeliveries() -> None:
    stream = [alert(1, "r1", 45, T0, **{"target.owner_id": "acct-1"}), alert(2, "r2", 60, T0 + 60),
              alert(3, "r3", 90, T0 + 7 * HOUR), alert(4, "r1", 50, T0 + 8 * HOUR)]  # fmt: skip
    whole = IncidentEngine(config())
    expected = [u.to_json() for a in stream for u in whole.observe(a)]
    first = IncidentEngine(config())
    got = [u.to_json() for a in stream[:2] for u in first.observe(a)]
    data = json.loads(json.dumps(first.snapshot()))
    second = IncidentEngine.restore(config(), data)
    assert second.observe(stream[1]) == []  # redelivered after the restore: counted once
    got += [u.to_json() for a in stream[2:] for u in second.observe(a)]
    assert got == expected


def test_alert_json_is_unchanged_by_the_internal_fields() -> None:
    a = alert(1, "rapid_takedown", 100, T0, **{"target.owner_id": "acct-1"})
    a.page = True
    assert "page" not in a.to_dict() and "subjects" not in a.to_dict()


def test_risk_fields_are_the_alert_subjects() -> None:
    assert set(RiskObject.model_fields["fields"].annotation.__args__[0].__args__) == set(RISK_FIELDS)  # type: ignore[union-attr]


def test_bundled_config_loads() -> None:
    loaded = load_incidents(bundled_rules_dir())
    assert [o.kind for o in loaded.risk_objects] == ["actor", "target_owner", "requester"]


@pytest.mark.parametrize(("change", "message"), [
    ({"rules": [{"id": "x", "window": "soon", "severity_at_least": "high"}]}, "rule 'x': window:"),
    ({"rules": [{"id": "x"}]}, "rule 'x': (rule): give at least one of"),
    ({"rules": [{"id": "x", "risk_at_least": 10, "objects": ["nobody"]}]}, "rule 'x': objects: unknown risk object"),
    ({"risk_objects": [{"kind": "actor", "fields": ["actor.id"], "weight": 1}]}, "risk object 'actor': fields.0:"),
    ({"risk_objects": [{"kind": "actor", "fields": ["actor_id"], "weight": 0}]}, "risk object 'actor': weight:"),
    ({"risk_objects": [{"kind": "actor", "fields": ["actor_id"], "weight": 1, "colour": 1}]},
     "risk object 'actor': colour: Extra inputs are not permitted"),
    ({"paging": "high"}, "incidents.yaml: paging: Extra inputs are not permitted"),
])  # fmt: skip
def test_config_errors_name_file_item_and_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = yaml.safe_load((bundled_rules_dir() / "incidents.yaml").read_text(encoding="utf-8"))
    raw.update(change)
    (tmp_path / "incidents.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_incidents(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "incidents.yaml") + ": ")
    assert message in str(caught.value), str(caught.value)
