"""Each rule kind through the engine, with small inline rule sets written to a temporary config dir.

Times are seconds after ``T0``; windows of 240 s give threshold buckets of exactly one second
(a window is cut into 240 buckets), so boundaries here are exact.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.config.loader import RuleSet, load_rules
from streams.core.alerts import Alert
from streams.core.decode import Decoded, decode
from streams.core.engine import Engine
from streams.core.state import Shard

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
ACTOR = {"id": "emp-1", "kind": "employee", "region": "US"}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "request.received": {
        "request_id": "R-1",
        "requester": {"agency": "Agency", "kind": "government", "jurisdiction": "CN"},
        "request_kind": "takedown",
    },
    "meeting.shutdown": {"target": {"kind": "meeting", "id": "m-1", "region": "US"}},
    "account.suspend": {"target": {"kind": "account", "id": "a-1", "region": "US"}},
    "data.export": {
        "target": {"kind": "dataset", "id": "d-1", "region": "US"},
        "record_count": 1,
        "destination": {"kind": "internal", "name": "warehouse", "region": "US"},
    },
    "access.grant": {
        "grantee": {"id": "emp-2", "kind": "employee", "region": "US"},
        "system": {"id": "sys-1", "region": "US"},
        "scope": "oncall",
    },
    "report.filed": {"target": {"kind": "meeting", "id": "m-1", "region": "US"}, "category": "spam"},
}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(T0 + seconds, UTC).isoformat()


def event(event_type: str, event_id: str, at: float, **fields: Any) -> dict[str, Any]:
    """A valid event of ``event_type`` at ``T0 + at``; ``fields`` replace the defaults."""
    out: dict[str, Any] = {
        "event_type": event_type,
        "event_id": event_id,
        "occurred_at": iso(at),
        "actor": ACTOR,
    }
    out.update(_DEFAULTS[event_type])
    out.update(fields)
    return out


def decoded(raw: dict[str, Any]) -> Decoded:
    out = decode(json.dumps(raw).encode(), now=float("inf"))
    assert isinstance(out, Decoded), out
    return out


def rule(rule_id: str, kind: str, **options: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "kind": kind,
        "title": rule_id,
        "summary": f"{rule_id} {{group}}",
        "score": {"base": 50},
        **options,
    }


def ruleset(tmp_path: Path, *rules: dict[str, Any], lists: dict[str, list[str]] | None = None) -> RuleSet:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"lists": lists or {}, "rules": list(rules)}))
    (tmp_path / "scoring.yaml").write_text(
        yaml.safe_dump({"bands": {"low": 20, "medium": 40, "high": 60, "critical": 80}})
    )
    return load_rules(tmp_path)


def run(
    rs: RuleSet, events: list[dict[str, Any]], lateness: float = 300.0
) -> tuple[Engine, Shard, list[Alert]]:
    engine, shard = Engine(rs, lateness=lateness), Shard()
    alerts: list[Alert] = []
    for raw in events:
        alerts.extend(engine.process(shard, decoded(raw)))
    return engine, shard, alerts


def ids(alerts: list[Alert]) -> list[list[str]]:
    return [a.event_ids for a in alerts]


# -- match ----------------------------------------------------------------------------------------


def test_match_fires_per_matching_event(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path,
        rule(
            "m",
            "match",
            select={"events": ["account.suspend"], "where": {"field": "target.region", "eq": "DE"}},
        ),
    )
    events = [
        event("account.suspend", "e1", 0, target={"kind": "account", "id": "a", "region": "DE"}),
        event("account.suspend", "e2", 1, target={"kind": "account", "id": "b", "region": "US"}),
        event("meeting.shutdown", "e3", 2, target={"kind": "meeting", "id": "c", "region": "DE"}),
    ]
    engine, _, alerts = run(rs, events)
    assert ids(alerts) == [["e1"]]
    alert = alerts[0]
    assert (alert.rule_id, alert.group_key, alert.actor_id, alert.score) == (
        "m",
        "actor.id=emp-1",
        "emp-1",
        50,
    )
    assert alert.severity.label == "medium"
    assert alert.summary == "m actor.id=emp-1"
    assert engine.stats.alerts[("m", "medium")] == 1


# Each case: a predicate, fields of an event that satisfies it, fields of one that does not.
PREDICATES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "eq",
        {"field": "target.region", "eq": "CN"},
        {"target": {"kind": "dataset", "id": "d", "region": "CN"}},
        {},
    ),
    (
        "ne",
        {"field": "target.region", "ne": "US"},
        {"target": {"kind": "dataset", "id": "d", "region": "CN"}},
        {},
    ),
    ("ne on a missing field holds for nothing", {"field": "reason", "ne": "spam"}, {"reason": "other"}, {}),
    (
        "in $list",
        {"field": "fields", "in": "$personal"},
        {"fields": ["region", "email"]},
        {"fields": ["region"]},
    ),
    (
        "in literal",
        {"field": "destination.kind", "in": ["external", "government"]},
        {"destination": {"kind": "government", "name": "g", "region": "US"}},
        {},
    ),
    (
        "not_in",
        {"field": "destination.kind", "not_in": ["internal", "data_subject"]},
        {"destination": {"kind": "partner", "name": "p", "region": "US"}},
        {},
    ),
    ("exists true", {"field": "ticket_id", "exists": True}, {"ticket_id": "T-1"}, {}),
    ("exists false", {"field": "ticket_id", "exists": False}, {}, {"ticket_id": "T-1"}),
    ("gt", {"field": "record_count", "gt": 100}, {"record_count": 101}, {"record_count": 100}),
    ("gte", {"field": "record_count", "gte": 100}, {"record_count": 100}, {"record_count": 99}),
    ("lt", {"field": "record_count", "lt": 10}, {"record_count": 9}, {"record_count": 10}),
    ("lte", {"field": "record_count", "lte": 10}, {"record_count": 10}, {"record_count": 11}),
    (
        "regex",
        {"field": "destination.name", "regex": "^lead-"},
        {"destination": {"kind": "external", "name": "lead-broker", "region": "SG"}},
        {"destination": {"kind": "external", "name": "my-lead-broker", "region": "SG"}},
    ),
    (
        "eq_field",
        {"field": "destination.region", "eq_field": "target.region"},
        {},
        {"destination": {"kind": "internal", "name": "w", "region": "IE"}},
    ),
    (
        "ne_field",
        {"field": "destination.region", "ne_field": "target.region"},
        {"destination": {"kind": "internal", "name": "w", "region": "IE"}},
        {},
    ),
    (
        "age_lt",
        {"field": "actor.created_at", "age_lt": "7d"},
        {"actor": {**ACTOR, "created_at": iso(-2 * 86400)}},
        {"actor": {**ACTOR, "created_at": iso(-8 * 86400)}},
    ),
    (
        "age_gt",
        {"field": "actor.created_at", "age_gt": "7d"},
        {"actor": {**ACTOR, "created_at": iso(-8 * 86400)}},
        {"actor": {**ACTOR, "created_at": iso(-2 * 86400)}},
    ),
    (
        "any",
        {"any": [{"field": "record_count", "gt": 1000}, {"field": "ticket_id", "exists": False}]},
        {"record_count": 5},
        {"record_count": 5, "ticket_id": "T-1"},
    ),
    (
        "all",
        {"all": [{"field": "record_count", "gt": 1000}, {"field": "ticket_id", "exists": False}]},
        {"record_count": 5000},
        {"record_count": 5000, "ticket_id": "T-1"},
    ),
    (
        "not",
        {"not": {"field": "destination.kind", "eq": "internal"}},
        {"destination": {"kind": "external", "name": "x", "region": "US"}},
        {},
    ),
    (
        "subject_regions.@keys",
        {"field": "subject_regions.@keys", "in": ["CN"]},
        {"subject_regions": {"US": 3, "CN": 1}},
        {"subject_regions": {"US": 3, "GB": 1}},
    ),
]


@pytest.mark.parametrize(("name", "where", "yes", "no"), PREDICATES, ids=[p[0] for p in PREDICATES])
def test_match_predicate_operators(
    tmp_path: Path, name: str, where: dict[str, Any], yes: dict[str, Any], no: dict[str, Any]
) -> None:
    rs = ruleset(
        tmp_path,
        rule("m", "match", select={"events": ["export"], "where": where}, suppress=0),
        lists={"personal": ["email", "name"]},
    )
    _, _, alerts = run(rs, [event("data.export", "yes", 0, **yes), event("data.export", "no", 1, **no)])
    assert ids(alerts) == [["yes"]]


def test_match_flattens_lists_in_paths(tmp_path: Path) -> None:
    """``targets.id`` is every target's id: any one of them can satisfy the condition."""
    rs = ruleset(
        tmp_path,
        rule(
            "m",
            "match",
            select={"events": ["request"], "where": {"field": "targets.id", "eq": "m-2"}},
            suppress=0,
        ),
    )
    targets = [{"kind": "meeting", "id": f"m-{i}", "region": "US"} for i in (1, 2, 3)]
    _, _, alerts = run(
        rs,
        [
            event("request.received", "yes", 0, targets=targets),
            event("request.received", "no", 1, targets=[targets[0], targets[2]]),
            event("request.received", "none", 2),
        ],
    )
    assert ids(alerts) == [["yes"]]


def test_match_repeats_for_one_key_are_suppressed(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, rule("m", "match", select={"events": ["action"]}))  # default suppress: 1 h
    other = {**ACTOR, "id": "emp-9"}
    engine, _, alerts = run(
        rs,
        [
            event("meeting.shutdown", "e1", 0),
            event("meeting.shutdown", "e2", 60),
            event("meeting.shutdown", "e3", 120, actor=other),
            event("meeting.shutdown", "e4", 3700),
        ],
    )
    assert ids(alerts) == [["e1"], ["e3"], ["e4"]]
    assert engine.stats.suppressed["m"] == 1


# -- threshold -----------------------------------------------------------------------------------


def _count_rule(**options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "select": {"events": ["action"]},
        "group_by": ["actor.id"],
        "window": "240s",
        "at_least": 3,
    }
    return rule("t", "threshold", **{**defaults, **options})


def test_threshold_count_fires_at_the_bound(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _count_rule())
    _, _, alerts = run(rs, [event("meeting.shutdown", f"e{i}", t) for i, t in enumerate((0, 100, 200))])
    assert ids(alerts) == [["e0", "e1", "e2"]]
    assert alerts[0].facts["count"] == 3
    assert alerts[0].group_key == "actor.id=emp-1"
    assert (alerts[0].first_seen, alerts[0].last_seen) == (T0, T0 + 200)


@pytest.mark.parametrize(
    ("times", "fires"), [((0, 120, 239), True), ((0, 120, 240), False), ((0, 1, 241), False)]
)
def test_threshold_sliding_window_boundaries(tmp_path: Path, times: tuple[int, ...], fires: bool) -> None:
    """A window of 240 s holds events less than 240 s apart; at exactly 240 s the first has left it."""
    rs = ruleset(tmp_path, _count_rule())
    _, _, alerts = run(rs, [event("meeting.shutdown", f"e{i}", t) for i, t in enumerate(times)])
    assert len(alerts) == (1 if fires else 0)


def test_threshold_window_slides_past_old_events(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _count_rule())
    _, _, alerts = run(rs, [event("meeting.shutdown", f"e{i}", t) for i, t in enumerate((0, 200, 300, 400))])
    assert ids(alerts) == [["e1", "e2", "e3"]]


@pytest.mark.parametrize(("bound", "count_to_fire"), [({"at_least": 3}, 3), ({"above": 3}, 4)])
def test_threshold_above_versus_at_least(tmp_path: Path, bound: dict[str, int], count_to_fire: int) -> None:
    rs = ruleset(
        tmp_path,
        rule("t", "threshold", select={"events": ["action"]}, group_by=["actor.id"], window="240s", **bound),
    )
    _, _, alerts = run(rs, [event("meeting.shutdown", f"e{i}", i) for i in range(5)])
    assert len(alerts) == 1
    assert alerts[0].event_ids[-1] == f"e{count_to_fire - 1}"
    assert alerts[0].facts["count"] == count_to_fire


@pytest.mark.parametrize(
    ("counts", "bound", "fires"),
    [
        ((600, 500), {"above": 1000}, True),
        ((600, 400), {"above": 1000}, False),
        ((600, 400), {"at_least": 1000}, True),
        ((2500,), {"above": 1000}, True),
    ],
)
def test_threshold_sum(tmp_path: Path, counts: tuple[int, ...], bound: dict[str, int], fires: bool) -> None:
    rs = ruleset(
        tmp_path,
        rule(
            "t",
            "threshold",
            select={"events": ["export"]},
            group_by=["actor.id"],
            aggregate="sum",
            field="record_count",
            window="1h",
            **bound,
        ),
    )
    events = [event("data.export", f"x{i}", i * 60, record_count=n) for i, n in enumerate(counts)]
    _, _, alerts = run(rs, events)
    assert len(alerts) == (1 if fires else 0)
    if fires:
        assert alerts[0].facts["total"] == sum(counts)
        assert alerts[0].event_ids == [f"x{i}" for i in range(len(counts))]


@pytest.mark.parametrize(("exports", "records", "crossing"), [(40, 60, 34), (100, 25, 81)])
def test_threshold_sum_alerts_at_the_crossing_event_however_long_the_window(
    tmp_path: Path, exports: int, records: int, crossing: int
) -> None:
    """A 30-day sum is checked at every event, not when its window closes: a drip over two weeks alerts
    at the export that takes the total past the bound, with the running total; the rest are repeats."""
    rs = ruleset(
        tmp_path,
        rule("t", "threshold", select={"events": ["export"]}, group_by=["actor.id"], aggregate="sum",
             field="record_count", window="30d", above=2000),
    )  # fmt: skip
    step = 14 * 86400 / exports
    log = [event("data.export", f"x{i + 1}", i * step, record_count=records) for i in range(exports)]
    _, _, alerts = run(rs, log)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.event_ids[-1] == f"x{crossing}"
    assert alert.last_seen == T0 + (crossing - 1) * step
    assert (alert.facts["total"], alert.facts["count"]) == (crossing * records, crossing)
    assert run(rs, log[: crossing - 1])[2] == []


def test_threshold_counts_each_group_separately(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _count_rule())
    other = {**ACTOR, "id": "emp-2"}
    events = [
        event("meeting.shutdown", "a1", 0),
        event("meeting.shutdown", "b1", 1, actor=other),
        event("meeting.shutdown", "a2", 2),
        event("meeting.shutdown", "b2", 3, actor=other),
        event("meeting.shutdown", "a3", 4),
    ]
    _, _, alerts = run(rs, events)
    assert [(a.group_key, a.event_ids) for a in alerts] == [("actor.id=emp-1", ["a1", "a2", "a3"])]


def test_threshold_group_by_keeps_only_listed_values(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path,
        _count_rule(group_by=[{"field": "target.tags", "in": "$sensitive"}]),
        lists={"sensitive": ["political", "religious"]},
    )

    def shutdown(eid: str, at: int, tags: list[str]) -> dict[str, Any]:
        return event(
            "meeting.shutdown", eid, at, target={"kind": "meeting", "id": eid, "region": "US", "tags": tags}
        )

    events = [
        shutdown("s1", 0, ["spam"]),
        shutdown("s2", 1, ["spam"]),
        shutdown("s3", 2, ["spam"]),
        shutdown("p1", 3, ["political", "spam"]),
        shutdown("p2", 4, ["political"]),
        shutdown("p3", 5, ["spam", "political"]),
    ]
    _, shard, alerts = run(rs, events)
    assert [(a.group_key, a.event_ids) for a in alerts] == [("target.tags=political", ["p1", "p2", "p3"])]
    assert "target.tags=spam" not in shard.store


def test_threshold_suppresses_a_new_incident_within_suppress(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _count_rule(suppress="1h"))
    times = (0, 1, 2, 1000, 1001, 1002, 5000, 5001, 5002)
    engine, _, alerts = run(rs, [event("meeting.shutdown", f"e{t}", t) for t in times])
    assert ids(alerts) == [["e0", "e1", "e2"], ["e5000", "e5001", "e5002"]]
    assert engine.stats.suppressed["t"] == 1


def test_threshold_more_events_in_the_same_window_are_one_incident(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _count_rule())
    engine, _, alerts = run(rs, [event("meeting.shutdown", f"e{i}", i) for i in range(6)])
    assert ids(alerts) == [["e0", "e1", "e2"]]
    # e3..e5 extend the same incident (same anchor): held back and counted as suppressed
    assert engine.stats.suppressed["t"] == 3
    assert engine.stats.duplicates == 0


# -- cardinality ----------------------------------------------------------------------------------


def _distinct_rule() -> dict[str, Any]:
    return rule(
        "c",
        "cardinality",
        select={"events": ["action"]},
        group_by=["actor.id"],
        field="target.id",
        window="1h",
        at_least=3,
    )


def _on(eid: str, at: float, target_id: str) -> dict[str, Any]:
    return event("account.suspend", eid, at, target={"kind": "account", "id": target_id, "region": "US"})


def test_cardinality_counts_distinct_values(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _distinct_rule())
    _, _, alerts = run(
        rs,
        [_on("e1", 0, "a"), _on("e2", 10, "a"), _on("e3", 20, "b"), _on("e4", 30, "a"), _on("e5", 40, "c")],
    )
    assert len(alerts) == 1
    assert alerts[0].facts["distinct"] == 3
    assert alerts[0].event_ids == ["e1", "e2", "e3", "e4", "e5"]


def test_cardinality_repeats_of_one_value_do_not_fire(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _distinct_rule())
    _, _, alerts = run(rs, [_on(f"e{i}", i, "same") for i in range(10)])
    assert alerts == []


def test_cardinality_values_outside_the_window_do_not_count(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _distinct_rule())
    _, _, alerts = run(rs, [_on("e1", 0, "a"), _on("e2", 1800, "b"), _on("e3", 3600, "c")])
    assert alerts == []
    rs2 = ruleset(tmp_path, _distinct_rule())
    _, _, alerts = run(rs2, [_on("e1", 0, "a"), _on("e2", 1800, "b"), _on("e3", 3599, "c")])
    assert len(alerts) == 1


def test_cardinality_min_events_asks_for_enough_events_too(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, {**_distinct_rule(), "at_least": 2, "min_events": 4})
    three = [_on("e1", 0, "a"), _on("e2", 10, "b"), _on("e3", 20, "b")]
    assert run(rs, three)[2] == []
    _, _, alerts = run(rs, [*three, _on("e4", 30, "a")])
    assert [(a.event_ids, a.facts["distinct"], a.facts["count"]) for a in alerts] == [(["e1", "e2", "e3", "e4"], 2, 4)]
    _, _, alerts = run(rs, [_on(f"e{i}", i, "same") for i in range(6)])  # many events, one value
    assert alerts == []


# -- sequence -------------------------------------------------------------------------------------


def _sequence(**options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "first": {"events": ["request"]},
        "then": {"events": ["action"]},
        "join": [
            {"name": "request", "first": "request_id", "then": "request_id"},
            {"name": "target", "first": "targets.id", "then": "target.id"},
        ],
        "within": "60s",
    }
    return rule("s", "sequence", **{**defaults, **options})


REQUEST = event("request.received", "req", 0, targets=[{"kind": "meeting", "id": "m-1", "region": "US"}])


def test_sequence_in_order(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _sequence())
    _, _, alerts = run(rs, [REQUEST, event("meeting.shutdown", "act", 30, request_id="R-1")])
    assert ids(alerts) == [["req", "act"]]
    alert = alerts[0]
    assert alert.group_key == "request=R-1"
    assert alert.facts["latency_seconds"] == 30
    assert (alert.first_seen, alert.last_seen) == (T0, T0 + 30)
    assert alert.labels["jurisdiction"] == "CN"


def test_sequence_joins_on_the_target_when_the_action_has_no_request_id(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _sequence())
    _, _, alerts = run(rs, [REQUEST, event("meeting.shutdown", "act", 30)])
    assert [(a.group_key, a.event_ids) for a in alerts] == [("target=m-1", ["req", "act"])]


def test_sequence_b_before_a_within_lateness(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _sequence())
    engine, _, alerts = run(rs, [event("meeting.shutdown", "act", 30, request_id="R-1"), REQUEST])
    assert ids(alerts) == [["req", "act"]]
    assert engine.stats.late == 0


def test_sequence_a_later_than_the_allowed_lateness_is_not_paired(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _sequence())
    engine, _, alerts = run(
        rs,
        [event("meeting.shutdown", "act", 30, request_id="R-1"), event("report.filed", "tick", 400), REQUEST],
    )
    assert alerts == []
    assert engine.stats.late == 1


@pytest.mark.parametrize(("delay", "fires"), [(60, True), (61, False), (-1, False)])
def test_sequence_within_bound(tmp_path: Path, delay: int, fires: bool) -> None:
    rs = ruleset(tmp_path, _sequence())
    _, _, alerts = run(rs, [REQUEST, event("meeting.shutdown", "act", delay, request_id="R-1")])
    assert len(alerts) == (1 if fires else 0)


@pytest.mark.parametrize(("gap", "fires"), [(30, True), (300, True), (301, False), (7200, False)])
@pytest.mark.parametrize("grouped", [False, True])
def test_sequence_after_within_pairs_a_first_logged_after_b(
    tmp_path: Path, gap: int, fires: bool, grouped: bool
) -> None:
    """A request logged up to ``after_within`` after its action still pairs, with a negative latency;
    alone, and as a member of a group (a second rule shares the request side, as in the defaults)."""
    rules = [_sequence(after_within="5m")]
    if grouped:
        rules.append({**_sequence(within="30d"), "id": "other"})
    rs = ruleset(tmp_path, *rules)
    late_request = {**REQUEST, "occurred_at": iso(30 + gap)}
    _, _, alerts = run(rs, [event("meeting.shutdown", "act", 30, request_id="R-1"), late_request])
    mine = [a for a in alerts if a.rule_id == "s"]
    assert ids(mine) == ([["req", "act"]] if fires else [])
    assert [a for a in alerts if a.rule_id == "other"] == []  # after_within 0: the default keeps A first
    if fires:
        alert = mine[0]
        assert alert.facts["latency_seconds"] == -gap
        assert alert.facts["latency"] == ("-30s" if gap == 30 else "-5m")
        assert alert.facts["order"] == "request logged after the action"
        assert (alert.first_seen, alert.last_seen) == (T0 + 30, T0 + 30 + gap)


@pytest.mark.parametrize("grouped", [False, True])
def test_sequence_after_within_in_either_arrival_order(tmp_path: Path, grouped: bool) -> None:
    """The request's event time is after the action's, but it arrives first (within lateness)."""
    rules = [_sequence(after_within="5m")]
    if grouped:
        rules.append({**_sequence(within="30d"), "id": "other"})
    rs = ruleset(tmp_path, *rules)
    later_request = {**REQUEST, "occurred_at": iso(60)}
    _, _, alerts = run(rs, [later_request, event("meeting.shutdown", "act", 30, request_id="R-1")])
    assert [(a.rule_id, a.event_ids, a.facts["latency_seconds"]) for a in alerts] == [("s", ["req", "act"], -30)]


def test_sequence_after_within_keeps_a_pending_b_past_the_lateness(tmp_path: Path) -> None:
    """A pending action waits for the watermark to pass it + ``after_within``, not just itself."""
    rs = ruleset(tmp_path, _sequence(after_within="10m"))
    action = event("meeting.shutdown", "act", 0, request_id="R-1")
    tick = event("report.filed", "tick", 500)  # watermark 200: past the action, not past it + 10m
    _, _, alerts = run(rs, [action, tick, {**REQUEST, "occurred_at": iso(550)}])
    assert ids(alerts) == [["req", "act"]]
    _, shard, alerts = run(rs, [action, event("report.filed", "tick", 1000)])  # watermark 700 > 600
    assert alerts == [] and not shard.store


def test_sequence_pair_predicate_reads_the_first_event(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path, _sequence(where={"field": "target.region", "ne_field": "first.requester.jurisdiction"})
    )

    def action(eid: str, region: str) -> dict[str, Any]:
        return event(
            "meeting.shutdown",
            eid,
            10,
            request_id="R-1",
            target={"kind": "meeting", "id": eid, "region": region},
        )

    _, _, alerts = run(rs, [REQUEST, action("in-cn", "CN"), action("in-us", "US")])
    assert ids(alerts) == [["req", "in-us"]]


def test_sequence_duplicate_b_is_one_pair(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _sequence(suppress=0))
    act = event("meeting.shutdown", "act", 30, request_id="R-1")
    engine, _, alerts = run(rs, [REQUEST, act, act])
    assert ids(alerts) == [["req", "act"]]
    assert engine.stats.duplicates == 1


# -- absence --------------------------------------------------------------------------------------


def _absence(**options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "first": {"events": ["action"], "where": {"field": "request_id", "exists": True}},
        "then": {"events": ["request"]},
        "join": [{"name": "request", "first": "request_id", "then": "request_id"}],
        "within": "10m",
        "lookback": "1h",
    }
    return rule("u", "absence", **{**defaults, **options})


ACTION = event("meeting.shutdown", "act", 0, request_id="R-1")


def tick(at: float, eid: str = "tick") -> dict[str, Any]:
    return event("report.filed", eid, at)


def test_absence_fires_only_when_the_watermark_passes_the_bound(tmp_path: Path) -> None:
    """Bound: action + 600 s; the watermark is the newest event time minus 300 s of lateness."""
    rs = ruleset(tmp_path, _absence())
    _, _, alerts = run(rs, [ACTION])
    assert alerts == []
    _, _, alerts = run(rs, [ACTION, tick(900)])
    assert alerts == []
    _, _, alerts = run(rs, [ACTION, tick(901)])
    assert ids(alerts) == [["act"]]
    assert (alerts[0].group_key, alerts[0].first_seen, alerts[0].last_seen) == ("request=R-1", T0, T0 + 600)
    assert alerts[0].facts["within"] == "10m"


def test_absence_fires_once(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _absence())
    _, _, alerts = run(rs, [ACTION, tick(901), tick(2000, "t2"), tick(90000, "t3")])
    assert ids(alerts) == [["act"]]


@pytest.mark.parametrize(
    ("request_at", "cancelled"),
    [
        (300, True),  # after the action, within 10 min
        (600, True),  # at the bound
        (601, False),  # too late
        (-1800, True),  # before the action, within the 1 h lookback
        (-3601, False),  # before the lookback
    ],
)
def test_absence_cancelled_by_b(tmp_path: Path, request_at: int, cancelled: bool) -> None:
    rs = ruleset(tmp_path, _absence())
    request = event("request.received", "req", request_at)
    log = [request, ACTION, tick(2000)] if request_at < 0 else [ACTION, request, tick(2000)]
    _, _, alerts = run(rs, log)
    assert len(alerts) == (0 if cancelled else 1)


def test_absence_late_b_within_lateness_still_cancels(tmp_path: Path) -> None:
    """Event time reaches 850 s (watermark 550 s) before the request stamped 590 s arrives."""
    rs = ruleset(tmp_path, _absence())
    engine, _, alerts = run(rs, [ACTION, tick(850, "t1"), event("request.received", "req", 590), tick(2000)])
    assert alerts == []
    assert engine.stats.late == 0


def test_absence_b_for_another_key_does_not_cancel(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _absence())
    _, _, alerts = run(rs, [ACTION, event("request.received", "req", 10, request_id="R-2"), tick(2000)])
    assert ids(alerts) == [["act"]]


def test_absence_state_is_released(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _absence(suppress="10m"))
    _, shard, _ = run(rs, [ACTION, event("request.received", "req", 5000), tick(100000)])
    assert dict(shard.store) == {}
