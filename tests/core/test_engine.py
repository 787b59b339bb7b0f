"""The engine with the default rules: deterministic, order-insensitive within the allowed lateness,
idempotent under redelivery, bounded in state, and isolating a broken rule."""

from __future__ import annotations

import gc
import json
import math
import random
import shutil
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.config.loader import RuleSet, load_rules
from streams.core.alerts import Alert
from streams.core.decode import Decoded, decode
from streams.core.engine import Engine
from streams.core.rules import absence
from streams.core.rules.sequence import MAX_HELD, SequenceGroup, SequenceRule, group_parts
from streams.core.state import Shard, open_record, unpacked

CONFIG = Path(__file__).resolve().parents[2] / "config"
T0 = 1_590_969_600.0  # 2020-06-01T00:00:00Z
DAY = 86400.0

LIAISON = {"id": "emp-liaison-01", "kind": "employee", "region": "CN", "role": "liaison"}
MSS = {"agency": "Ministry of State Security", "kind": "government", "jurisdiction": "CN"}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(T0 + seconds, UTC).isoformat()


def ev(event_type: str, event_id: str, at: float, actor: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"event_type": event_type, "event_id": event_id, "occurred_at": iso(at), "actor": actor, **fields}


def decoded(raw: dict[str, Any]) -> Decoded:
    out = decode(json.dumps(raw).encode(), now=float("inf"))
    assert isinstance(out, Decoded), out
    return out


def staff(n: int) -> dict[str, Any]:
    return {"id": f"emp-ts-{n:03d}", "kind": "employee", "region": "US", "role": "trust_safety"}


def incidents(at: float) -> list[dict[str, Any]]:
    """One of each case pattern, starting at ``at``; every default rule fires on one of them."""
    june4 = {
        "kind": "meeting",
        "id": "mtg-june4",
        "region": "US",
        "owner_id": "acct-host",
        "tags": ["tiananmen"],
    }
    church = {"kind": "meeting", "id": "mtg-church", "region": "US", "tags": ["religious"]}
    export = {
        "target": {"kind": "dataset", "id": "accounts", "region": "US"},
        "record_count": 23000,
        "fields": ["account_id", "user_id"],
        "subject_regions": {"CN": 15000, "US": 8000},
        "destination": {"kind": "external", "name": "spreadsheet", "region": "CN"},
    }
    small = {
        **export,
        "record_count": 900,
        "ticket_id": "MKT-1",
        "actor": {"id": "emp-mk-004", "kind": "employee", "region": "US"},
    }
    new_user = {"kind": "user", "region": "HK", "created_at": iso(at - 2 * DAY)}
    return [
        ev(
            "request.received",
            "i-r1",
            at,
            LIAISON,
            request_id="REQ-1",
            requester=MSS,
            request_kind="takedown",
            targets=[june4],
            confidential=True,
        ),
        ev("meeting.shutdown", "i-a1", at + 30, LIAISON, request_id="REQ-1", target=june4),
        ev("meeting.shutdown", "i-a2", at + 40, LIAISON, target={**june4, "id": "mtg-june4-b"}),
        ev("meeting.shutdown", "i-a3", at + 50, LIAISON, target={**june4, "id": "mtg-june4-c"}),
        ev("data.export", "i-x1", at + 600, staff(7), request_id="CAC-9", **export),
        ev("data.export", "i-c1", at + 700, **small),
        ev("data.export", "i-c2", at + 2 * DAY, **small),
        ev("data.export", "i-c3", at + 4 * DAY, **small),
        ev(
            "access.grant",
            "i-g1",
            at + 900,
            staff(19),
            grantee={**LIAISON},
            system={"id": "us-jump", "region": "US"},
            scope="prod",
            remote=True,
        ),
        *[
            ev(
                "report.filed",
                f"i-f{i}",
                at + 1000 + 60 * i,
                {"id": f"user-new-{i}", **new_user},
                target=church,
                category="terrorism",
            )
            for i in range(3)
        ],
        # host_reports: two severe reports against each of two meetings of one host, none enough alone
        *[
            ev(
                "report.filed",
                f"i-h{i}",
                at + 2000 + 600 * i,
                {"id": f"user-new-h{i}", **new_user},
                target={"kind": "meeting", "id": f"mtg-pastor-{i % 2}", "region": "US", "owner_id": "acct-pastor"},
                category="violence",
            )
            for i in range(4)
        ],
    ]


def routine(rng: random.Random, start: float, count: int, prefix: str = "n") -> list[dict[str, Any]]:
    """Ticketed routine work: reports, spam shutdowns, lawful requests answered the same day."""
    out: list[dict[str, Any]] = []
    t = start
    for i in range(count):
        t += rng.uniform(5, 90)
        who = staff(rng.randint(1, 40))
        target = {"kind": "meeting", "id": f"mtg-{prefix}{i}", "region": rng.choice(["US", "GB", "DE"])}
        kind = rng.random()
        if kind < 0.4:
            out.append(
                ev("meeting.shutdown", f"{prefix}{i}", t, who, ticket_id=f"TS-{prefix}{i}", target=target)
            )
        elif kind < 0.8:
            user = {"id": f"user-{i}", "kind": "user", "region": "US", "created_at": iso(-400 * DAY)}
            out.append(ev("report.filed", f"{prefix}{i}", t, user, target=target, category="spam"))
        else:
            request = {"agency": "Court", "kind": "court", "jurisdiction": target["region"]}
            out.append(
                ev(
                    "request.received",
                    f"{prefix}{i}r",
                    t,
                    who,
                    request_id=f"RQ-{prefix}{i}",
                    requester=request,
                    request_kind="takedown",
                    targets=[target],
                )
            )
            out.append(
                ev(
                    "account.suspend",
                    f"{prefix}{i}",
                    t + 3600,
                    who,
                    request_id=f"RQ-{prefix}{i}",
                    ticket_id=f"LG-{prefix}{i}",
                    target=target,
                )
            )
    return out


def build_log(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = routine(rng, 0.0, 400) + incidents(3 * 3600) + incidents(6 * DAY)
    # the second incident set needs distinct ids
    for event in events[-len(incidents(0)) :]:
        event["event_id"] += "-2"
    events.append(
        ev(
            "report.filed",
            "final-tick",
            40 * DAY,
            staff(1),
            target={"kind": "meeting", "id": "x", "region": "US"},
            category="spam",
        )
    )
    return sorted(events, key=lambda e: e["occurred_at"])


def default_rules() -> RuleSet:
    return load_rules(CONFIG)


def feed(events: Iterable[dict[str, Any]], rules: RuleSet | None = None) -> tuple[Engine, Shard, list[Alert]]:
    engine, shard = Engine(rules or default_rules()), Shard()
    alerts: list[Alert] = []
    for raw in events:
        alerts.extend(engine.process(shard, decoded(raw)))
    return engine, shard, alerts


def test_log_exercises_every_rule() -> None:
    _, _, alerts = feed(build_log())
    assert {a.rule_id for a in alerts} == {r.id for r in default_rules().rules if r.config.mode != "observe"}


def test_same_input_gives_identical_alerts() -> None:
    log = build_log()
    _, _, first = feed(log)
    _, _, second = feed(log)
    assert len(first) >= 9
    assert [a.to_json() for a in first] == [a.to_json() for a in second]
    assert len({a.alert_id for a in first}) == len(first)


def test_a_packed_shard_alerts_as_a_plain_one_and_holds_nothing_the_collector_walks() -> None:
    """The worker packs each stored record (``Shard(packed=True)``): the alerts, the state and its
    counts are the same, and every stored value is bytes, which the garbage collector does not track."""
    log = build_log()[:-1]  # without the last event, 40 days on, which expires everything
    engine, plain, expected = feed(log)
    packed_engine, packed = Engine(default_rules()), Shard(packed=True)
    got: list[Alert] = []
    for raw in log:
        got.extend(packed_engine.process(packed, decoded(raw)))
    assert [a.to_json() for a in got] == [a.to_json() for a in expected]
    assert len(packed.store) > 50
    assert all(type(value) is bytes and not gc.is_tracked(value) for value in packed.store.values())
    assert {key: unpacked(value) for key, value in packed.store.items()} == plain.store
    assert packed_engine.state_size(packed) == engine.state_size(plain)
    assert packed.timers == plain.timers


def test_a_packed_record_keeps_the_values_json_would_change() -> None:
    shard = Shard(packed=True)
    shard.put("k", ["volume", [[float("nan"), 2**70, "\ud800"], None], None])
    (nan, big, lone), _ = open_record(shard.store["k"])["volume"][0]
    assert math.isnan(nan) and big == 2**70 and lone == "\ud800"


def _shuffle_locally(events: list[dict[str, Any]], spread: float, seed: int) -> list[dict[str, Any]]:
    """Reorder so that no event arrives more than ``spread`` seconds (of event time) out of place."""
    rng = random.Random(seed)
    keyed = [
        (datetime.fromisoformat(e["occurred_at"]).timestamp() + rng.uniform(0, spread), i, e)
        for i, e in enumerate(events)
    ]
    return [e for _, _, e in sorted(keyed)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_out_of_order_within_lateness_gives_the_same_alert_ids(seed: int) -> None:
    log = build_log()
    shuffled = _shuffle_locally(log, spread=120.0, seed=seed)
    assert shuffled != log
    _, _, expected = feed(log)
    shuffled_engine, _, got = feed(shuffled)
    assert shuffled_engine.stats.late == 0
    assert sorted(a.alert_id for a in got) == sorted(a.alert_id for a in expected)


def test_match_suppression_does_not_depend_on_arrival_order() -> None:
    """Two undocumented takedowns by one actor 30 s apart: one incident, whatever the arrival order."""
    first = ev("meeting.shutdown", "a1", 0, LIAISON, target={"kind": "meeting", "id": "m1", "region": "US"})
    second = ev("meeting.shutdown", "a2", 30, LIAISON, target={"kind": "meeting", "id": "m2", "region": "US"})
    _, _, in_order = feed([first, second])
    _, _, reversed_order = feed([second, first])
    assert [a.alert_id for a in reversed_order] == [a.alert_id for a in in_order]


def test_out_of_order_threshold_alert_ends_at_its_last_event() -> None:
    """The same burst delivered out of order gives the same alert, ending at its newest event."""
    tagged = {"kind": "meeting", "region": "US", "tags": ["tiananmen"]}
    burst = [
        ev("meeting.shutdown", f"a{t}", t, LIAISON, ticket_id=f"T{t}", target={**tagged, "id": f"m{t}"})
        for t in (0, 10, 20)
    ]
    _, _, in_order = feed(burst)
    _, _, shuffled = feed([burst[0], burst[2], burst[1]])
    assert [a.last_seen for a in in_order if a.rule_id == "takedown_burst"] == [T0 + 20]
    assert [a.last_seen for a in shuffled if a.rule_id == "takedown_burst"] == [T0 + 20]
    assert [a.to_json() for a in shuffled] == [a.to_json() for a in in_order]


def test_redelivered_log_gives_the_same_alerts() -> None:
    log = build_log()
    # every event delivered twice: the copy three positions later
    doubled: list[dict[str, Any]] = []
    for i, event in enumerate(log):
        doubled.append(event)
        if i >= 3:
            doubled.append(log[i - 3])
    doubled.extend(log[-3:])
    assert len(doubled) == 2 * len(log)
    once, _, expected = feed(log)
    twice, _, got = feed(doubled)
    assert [a.to_json() for a in got] == [a.to_json() for a in expected]
    assert twice.stats.duplicates == once.stats.duplicates + len(log)
    assert twice.stats.events == once.stats.events


def test_events_later_than_the_lateness_are_counted_and_seen_only_by_stateless_rules() -> None:
    target = {"kind": "meeting", "id": "mtg-1", "region": "US", "tags": ["political"]}
    log = [
        ev("meeting.shutdown", "a1", 0, LIAISON, request_id="REQ-1", target=target),
        ev(
            "report.filed",
            "tick",
            600,
            staff(1),
            target={"kind": "meeting", "id": "x", "region": "US"},
            category="spam",
        ),
        # the request, 10 minutes older than the newest event: beyond 5 minutes of lateness
        ev(
            "request.received",
            "r1",
            -20,
            LIAISON,
            request_id="REQ-1",
            requester=MSS,
            request_kind="takedown",
            targets=[target],
        ),
        ev("meeting.shutdown", "a2", 200, LIAISON, target={**target, "id": "mtg-2"}),
    ]
    engine, _, alerts = feed(log)
    assert engine.stats.late == 2
    assert engine.stats.events["request.received"] == 1
    rules = [a.rule_id for a in alerts]
    assert "rapid_takedown" not in rules  # stateful: a late request is not paired
    assert rules.count("undocumented_action") == 1  # stateless: a1 alerts, a2 (late) is suppressed
    assert engine.stats.suppressed["undocumented_action"] == 1


class RecordingStore(dict[str, Any]):
    """A state store that remembers every key ever written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        self.written.add(key)
        super().__setitem__(key, value)


def distinct_key_event(i: int, t: float, rng: random.Random) -> dict[str, Any]:
    """Event ``i`` of a log where every actor, target, request and grantee is new."""
    who = {"id": f"emp-{i}", "kind": "employee", "region": "US"}
    target = {"kind": "meeting", "id": f"mtg-{i}", "region": "US", "owner_id": f"acct-{i}"}
    court = {"agency": "Court", "kind": "court", "jurisdiction": "US"}
    ticket = {"ticket_id": f"T-{i}"} if rng.random() < 0.9 else {}
    destination = {"kind": rng.choice(["external", "internal"]), "name": "d", "region": "US"}
    grantee = {"id": f"g-{i}", "kind": "employee", "region": "IE"}
    reporter = {"id": f"u-{i}", "kind": "user", "region": "US", "created_at": iso(t - DAY)}
    kind = i % 5
    if kind == 0:
        return ev("request.received", f"e{i}", t, who, request_id=f"RQ-{i}", request_kind="takedown",
                  requester=court, targets=[target])  # fmt: skip
    if kind == 1:
        return ev("account.suspend", f"e{i}", t, who, request_id=f"RQ-{i - 1}", target=target, **ticket)
    if kind == 2:
        count = rng.randint(1, 5000)
        return ev("data.export", f"e{i}", t, who, target=target, record_count=count, fields=["name", "email"],
                  subject_regions={"US": 1}, destination=destination, **ticket)  # fmt: skip
    if kind == 3:
        return ev("access.grant", f"e{i}", t, who, scope="oncall", grantee=grantee,
                  system={"id": f"sys-{i}", "region": "US"}, **ticket)  # fmt: skip
    return ev("report.filed", f"e{i}", t, reporter, target=target, category="terrorism")


def test_state_is_bounded_and_drains_as_windows_expire() -> None:
    """20,000 events with distinct keys over 60 days: state follows the windows, not the history."""
    rng = random.Random(11)
    span = 60 * DAY
    log = [distinct_key_event(i, span * i / 20_000, rng) for i in range(20_000)]
    store = RecordingStore()
    engine, shard = Engine(default_rules()), Shard(store)
    peak = 0
    for raw in log:
        engine.process(shard, decoded(raw))
        peak = max(peak, len(store))
    seen = store.written
    assert len(seen) > 20_000
    # 30-day rules (cross_jurisdiction, cumulative_exfiltration) hold about half the span; others drain fast
    assert peak < len(seen) * 0.5
    at_end = len(shard.store)
    assert at_end < len(seen) * 0.5
    # event time moves past every window and suppression interval: the store empties
    later = ev(
        "report.filed",
        "tick",
        span + 62 * DAY,
        staff(1),
        target={"kind": "meeting", "id": "x", "region": "US"},
        category="spam",
    )
    engine.process(shard, decoded(later))
    assert len(shard.store) <= 1
    assert shard.timers <= 1
    assert sum(engine.state_size(shard).values()) <= 1


def test_a_failing_rule_is_isolated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rules = default_rules()
    broken = rules.get("rapid_takedown")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("rule bug")

    # The rule's pair check: sequence rules sharing their first side run in one group, which calls
    # each member's pair check (not the member's own ``apply``).
    monkeypatch.setattr(broken, "_pair", boom)
    _, _, expected = feed(build_log(), load_rules(CONFIG))
    engine, _, alerts = feed(build_log(), rules)
    assert engine.stats.rule_errors["rapid_takedown"] > 0
    assert set(engine.stats.rule_errors) == {"rapid_takedown"}
    assert "rapid_takedown" not in {a.rule_id for a in alerts}
    others = [a.to_json() for a in expected if a.rule_id != "rapid_takedown"]
    assert [a.to_json() for a in alerts] == others
    # logs name the rule and the event id, never the event
    assert any("rule rapid_takedown failed on event" in r.getMessage() for r in caplog.records)
    assert not any("Ministry" in r.getMessage() for r in caplog.records)


def test_a_failing_route_or_timer_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = default_rules()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("broken")

    monkeypatch.setattr(rules.get("bulk_export"), "route", boom)
    monkeypatch.setattr(rules.get("unlogged_request"), "advance", boom)
    engine, _, alerts = feed(build_log(), rules)
    # The engine asks a rule only about the event types it accepts: bulk_export sees exports.
    assert engine.stats.rule_errors["bulk_export"] == engine.stats.events["data.export"] > 0
    assert engine.stats.rule_errors["unlogged_request"] > 0
    fired = {a.rule_id for a in alerts}
    assert "bulk_export" not in fired
    assert "unlogged_request" not in fired
    assert {"rapid_takedown", "cross_jurisdiction", "cumulative_exfiltration", "fabricated_reports"} <= fired


# -- sequence rules sharing a store ------------------------------------------------------------------


def _feed_engine(engine: Engine, events: Iterable[dict[str, Any]]) -> tuple[Shard, list[Alert]]:
    shard = Shard()
    alerts: list[Alert] = []
    for raw in events:
        alerts.extend(engine.process(shard, decoded(raw)))
    return shard, alerts


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_grouped_sequence_rules_alert_exactly_as_separate_ones(seed: int | None) -> None:
    log = build_log() if seed is None else _shuffle_locally(build_log(), spread=120.0, seed=seed)
    grouped = Engine(default_rules())
    apart = Engine(default_rules(), group_pairs=False)
    assert [u.id for u in grouped.units if isinstance(u, SequenceGroup)] != []  # the defaults do group
    shard_g, got = _feed_engine(grouped, log)
    shard_a, want = _feed_engine(apart, log)
    assert [a.to_json() for a in got] == [a.to_json() for a in want]
    assert grouped.stats.request_latency.keys() == apart.stats.request_latency.keys()
    for key, hist in apart.stats.request_latency.items():
        assert grouped.stats.request_latency[key].counts == hist.counts
    assert grouped.state_size(shard_g) == apart.state_size(shard_a)


def test_only_sequence_rules_with_the_same_first_side_and_joins_are_grouped() -> None:
    engine = Engine(default_rules())
    groups = [u for u in engine.units if isinstance(u, SequenceGroup)]
    assert [g.member_ids for g in groups] == [["rapid_takedown", "cross_jurisdiction", "request_latency"]]
    # the absence rule and the other kinds stay on their own, in their configured order
    assert [u.id for u in engine.units if not isinstance(u, SequenceGroup)] == [
        r.id for r in default_rules().rules if r.kind != "sequence"
    ]


def test_a_group_state_saved_under_other_members_is_read_with_its_masks_translated(tmp_path: Path) -> None:
    """A configuration change that removes a member keeps the pending events and, for each, the
    members it was pending for: the state names its members and masks are translated on first use."""
    t = 5 * DAY
    request = ev("request.received", "rq-1", t, staff(2), request_id="R-1", requester=MSS, request_kind="user_data",
                 targets=[{"kind": "dataset", "id": "accounts", "region": "US"}], confidential=True)  # fmt: skip
    # an export fulfilling the request, read before the request (which is late, but within the lateness)
    export = ev("data.export", "x-1", t + 20, staff(3), request_id="R-1", ticket_id="TSK-1",
                target={"kind": "dataset", "id": "accounts", "region": "US"}, record_count=10,
                fields=["user_id"], subject_regions={"US": 10},
                destination={"kind": "external", "name": "portal", "region": "CN"})  # fmt: skip
    old = Engine(default_rules())
    shard = Shard()
    old.process(shard, decoded(export))
    group = next(u for u in old.units if isinstance(u, SequenceGroup))
    members, _, pending = group_parts(open_record(shard.store["request=R-1"])[group.id][0])
    assert members == ["rapid_takedown", "cross_jurisdiction", "request_latency"]
    assert [b[3] for b in pending] == [0b110]  # an export is no takedown: pending for the other two
    # now without rapid_takedown: cross_jurisdiction moves from bit 1 to bit 0, request_latency to bit 1
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    text = (config / "rules.yaml").read_text()
    start = text.index("  - id: rapid_takedown")
    (config / "rules.yaml").write_text(text[:start] + text[text.index("  - id: cross_jurisdiction") :])
    new = Engine(load_rules(config))
    new_group = next(u for u in new.units if isinstance(u, SequenceGroup))
    assert new_group.id == group.id and new_group.member_ids == ["cross_jurisdiction", "request_latency"]
    alerts = new.process(shard, decoded(request))
    assert [a.rule_id for a in alerts if a.rule_id in members] == ["cross_jurisdiction"]
    assert sum(h.count for h in new.stats.request_latency.values()) == 1
    members_now, _, _ = group_parts(open_record(shard.store["request=R-1"])[group.id][0])
    assert members_now == ["cross_jurisdiction", "request_latency"]


@pytest.mark.parametrize("first_grouped", [False, True], ids=["upgrade-to-groups", "groups-to-separate"])
def test_state_written_under_another_grouping_is_carried_over(first_grouped: bool) -> None:
    """Half the log through one engine, the rest through the other on the same shard (an upgrade,
    or a configuration change that joins or splits a group): the alerts are those of one engine
    throughout, so requests pending before the change still pair with actions after it."""
    log = build_log()
    cut = next(i for i, e in enumerate(log) if e["event_id"] == "i-r1")  # just before a request...
    assert any(e["event_id"] == "i-a1" for e in log[cut + 1 :])  # ...whose takedown comes after the cut
    _, want = _feed_engine(Engine(default_rules()), log)
    before = Engine(default_rules(), group_pairs=first_grouped)
    after = Engine(default_rules(), group_pairs=not first_grouped)
    shard = Shard()
    got: list[Alert] = []
    for raw in log[: cut + 1]:
        got.extend(before.process(shard, decoded(raw)))
    after.recent = before.recent
    for raw in log[cut + 1 :]:
        got.extend(after.process(shard, decoded(raw)))
    assert [a.to_json() for a in got] == [a.to_json() for a in want]
    # nothing is left where the second engine does not look (the log ends 40 days on: every timer fired)
    members = {"rapid_takedown", "cross_jurisdiction", "request_latency"}
    for stored in shard.store.values():
        for rule_id, (state, _) in open_record(stored).items():
            assert not rule_id.startswith("pairs:") if first_grouped else not (rule_id in members and state)


def test_a_held_event_is_one_string_shared_by_its_holders_and_reads_back_as_its_fields() -> None:
    from streams.core.rules import base

    target = {"kind": "meeting", "id": "m1", "region": "DE", "tags": ["religious"], "owner_id": 7}
    event = {"event_id": "e1", "event_type": "meeting.shutdown", "actor": staff(1), "target": target,
             "occurred_at": iso(0.5), "unknown": {"big": "dropped"}, "targets": [{"id": "a"}, {"id": "b"}]}  # fmt: skip
    held = base.hold(event)
    assert isinstance(held, str) and base.hold(event) is held  # every rule holding this event shares it
    assert base.unhold(held) == base.compact(event)
    assert list(base.unhold(held)) == list(base.compact(event))  # same fields, same order
    assert "unknown" not in base.unhold(held) and base.unhold(held)["target_count"] == 2
    # a view JSON cannot carry exactly (only the lenient decode path lets these through) stays a dict
    for odd in (float("nan"), float("inf"), 2**70, "\ud800"):
        view = {**event, "event_id": f"e-{odd!r}", "actor": {**staff(1), "x": odd}}
        assert base.hold(view) == base.compact(view) and base.unhold(base.hold(view)) is base.compact(view)
    assert isinstance(base.hold({**event, "event_id": "e3", "reason": None}), str)  # a null alone is fine


def _held_as_dicts(value: Any) -> Any:
    """Rule state as it was saved before held events were strings: every held event as its dict."""
    if isinstance(value, str) and value.startswith("{"):
        return json.loads(value)
    if isinstance(value, list):
        return [_held_as_dicts(v) for v in value]
    if isinstance(value, dict):
        return {k: _held_as_dicts(v) for k, v in value.items()}
    return value


KINDS = {rule.id: rule.kind for rule in default_rules().rules}


def _as_previous_version(stored: Any) -> dict[str, Any]:
    """A record as the version before saved it: {rule id: [state, suppression]}, a group's state as
    {"m": member ids, "a": first events, "b": pending events}, a threshold's as {"b": buckets, "i":
    ids, "lv": [ts, held event]}, an absence's as {"a": first events, "b": times}, held events as
    dicts."""
    record = {}
    for rule_id, (state, sup) in open_record(stored).items():
        if rule_id.startswith("pairs:") and state is not None:
            members, firsts, pending = group_parts(state)
            state = {"m": members, "a": firsts, "b": pending}
        elif KINDS.get(rule_id) == "threshold" and state is not None:
            state = {"b": state[0], "i": state[1], "lv": state[2:]}
        elif KINDS.get(rule_id) == "absence" and state is not None:
            state = {"a": state[0], "b": state[1]}
        record[rule_id] = [_held_as_dicts(state), sup]
    return record


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list | dict):
        return [leaf for v in (value.values() if isinstance(value, dict) else value) for leaf in _leaves(v)]
    return [value]


@pytest.mark.parametrize("read_grouped", [True, False])
@pytest.mark.parametrize("written_grouped", [True, False])
@pytest.mark.parametrize("cut_after", ["i-r1", "i-a1"])  # a request pending; threshold windows open too
def test_state_saved_by_the_previous_version_is_read(cut_after: str, written_grouped: bool, read_grouped: bool) -> None:
    """A worker upgraded from the version that saved a record as {rule id: [state, suppression]},
    a group's state as a dict and held events as dicts recovers that state from its changelog, with
    the same or another grouping: pending requests, actions, threshold windows and suppressions
    still pair, fire and suppress as before."""
    log = build_log()
    cut = next(i for i, e in enumerate(log) if e["event_id"] == cut_after)
    _, want = _feed_engine(Engine(default_rules()), log)
    before = Engine(default_rules(), group_pairs=written_grouped)
    shard = Shard()
    got: list[Alert] = []
    for raw in log[: cut + 1]:
        got.extend(before.process(shard, decoded(raw)))
    old = {key: _as_previous_version(stored) for key, stored in shard.store.items()}
    assert any(isinstance(v, str) and v.startswith("{") for stored in shard.store.values() for v in _leaves(stored))
    assert any(sup is not None for record in old.values() for _, sup in record.values())
    kinds = {KINDS.get(rule_id, "group") for record in old.values() for rule_id, (state, _) in record.items() if state}
    assert ("group" in kinds) == written_grouped and "absence" in kinds
    assert ("threshold" in kinds) == (cut_after == "i-a1")
    shard.store.clear()
    shard.store.update(old)
    after = Engine(default_rules(), group_pairs=read_grouped)
    after.recent = before.recent
    shard.rebuild_timers(after.deadline)
    for raw in log[cut + 1 :]:
        got.extend(after.process(shard, decoded(raw)))
    assert [a.to_json() for a in got] == [a.to_json() for a in want]


def test_a_shard_gives_back_the_memory_of_an_expired_burst() -> None:
    """Dicts keep their peak size when keys are deleted: once a burst's timers have fired and its
    keys are gone, ``release`` copies the timer index and a plain-dict store down to their size,
    keeping the store object and what is left in it."""
    shard = Shard()
    store = shard.store
    for n in range(70_000):
        store[f"actor.id=a{n}"] = [n]
        shard.schedule(f"actor.id=a{n}", float(n))
    store["kept"] = ["state"]
    shard.schedule("kept", 1e12)
    peak_store, peak_timers = sys.getsizeof(store), sys.getsizeof(shard._scheduled)
    for key in shard.due(1e9):
        del store[key]
    assert sys.getsizeof(store) == peak_store  # what CPython does without help
    shard.release()
    assert shard.store is store and store == {"kept": ["state"]} and shard.timers == 1
    assert sys.getsizeof(store) < peak_store / 100 and sys.getsizeof(shard._scheduled) < peak_timers / 100
    assert shard.due(1e13) == ["kept"]


def test_a_busy_key_holds_at_most_max_held_pending_events() -> None:
    """A dataset exported every second (an ETL job) is a target key whose exports wait, pending, for
    a request that may arrive late. Held without a bound they outgrew a changelog record; the newest
    ``MAX_HELD`` stay, the drops are counted, and a late request still pairs with those that stay."""
    dataset = {"kind": "dataset", "id": "qos_telemetry", "region": "US"}
    etl = {"id": "sys-etl-06", "kind": "system", "region": "US"}
    extra = 50
    warehouse = {"kind": "internal", "name": "warehouse", "region": "US"}
    exports = [
        ev("data.export", f"x-{n}", 10 * DAY + n, etl, ticket_id=f"TSK-{n}", target=dataset, record_count=10,
           fields=["meeting_id"], subject_regions={}, destination=warehouse)
        for n in range(MAX_HELD + extra)
    ]  # fmt: skip
    request = ev("request.received", "rq-late", 10 * DAY + 20, staff(2), request_id="R-9", requester=MSS,
                 request_kind="user_data", targets=[dataset], confidential=True)  # fmt: skip
    for grouped in (True, False):
        engine = Engine(default_rules(), group_pairs=grouped)
        shard, _ = _feed_engine(engine, exports)
        holders = [u for u in engine.units if isinstance(u, SequenceGroup | SequenceRule)]
        record = open_record(shard.store["target=qos_telemetry"])
        if grouped:
            (group,) = holders
            _, firsts, pending = group_parts(record[group.id][0])
            assert (len(firsts), len(pending)) == (0, MAX_HELD)
            assert [b[1] for b in pending] == [f"x-{n}" for n in range(extra, MAX_HELD + extra)]  # the newest
            assert group.held_dropped == extra
        else:
            for rule in holders:
                if rule.id in record:
                    assert len(record[rule.id][0]["b"]) == MAX_HELD
            assert sum(rule.held_dropped for rule in holders) >= extra
        engine.process(shard, decoded(request))  # 20 s after the first export: late, within the lateness
        latency = sum(sum(h.counts) for h in engine.stats.request_latency.values())
        assert latency == MAX_HELD, grouped  # paired with the held exports, not the 30 dropped after it


@pytest.mark.parametrize("request_at", [None, 400.0])
def test_an_absence_holds_at_most_max_held_events_per_key_and_alerts_as_unbounded(
    monkeypatch: pytest.MonkeyPatch, request_at: float | None
) -> None:
    """A bulk takedown citing one request is a key with an action every 2 s. The absence holds the
    ``MAX_HELD`` oldest (one arriving late takes the newest's place) and alerts exactly as without
    the bound: once for the key when the request never comes, not at all when it comes in time."""
    extra, start = 50, 10 * DAY
    actions = [
        ev("content.remove", f"tk-{n}", start + 2 * n, staff(3), request_id="R-1", ticket_id=f"TS-{n}",
           target={"kind": "content", "id": f"post-{n}", "region": "US"})
        for n in range(MAX_HELD + extra)
    ]  # fmt: skip
    log = actions[10:] + actions[:10]  # the ten oldest arrive last, within the allowed lateness
    if request_at is not None:
        log.append(ev("request.received", "rq-1", start + request_at, staff(2), request_id="R-1", requester=MSS,
                      request_kind="takedown", targets=[], confidential=False))  # fmt: skip
    log.append(ev("report.filed", "later", start + DAY, staff(4), target={"kind": "content", "id": "p", "region": "US"},
                  category="spam"))  # fmt: skip

    def run() -> tuple[list[tuple[str, list[str]]], Any]:
        engine = Engine(default_rules())
        shard, alerts = _feed_engine(engine, log[:-1])
        held = open_record(shard.store["request=R-1"])["unlogged_request"][0][0]
        alerts += engine.process(shard, decoded(log[-1]))
        fired = [(a.rule_id, a.event_ids) for a in alerts if a.rule_id == "unlogged_request"]
        return fired, (sorted(a[1] for a in held), engine.by_id["unlogged_request"])

    fired, (held_ids, rule) = run()
    assert len(held_ids) == MAX_HELD and rule.held_dropped == extra
    assert held_ids == sorted(f"tk-{n}" for n in range(MAX_HELD))  # the oldest, the late ten among them
    monkeypatch.setattr(absence, "MAX_HELD", 10**9)
    unbounded, (all_ids, _) = run()
    assert len(all_ids) == MAX_HELD + extra
    assert fired == unbounded
    assert fired == ([] if request_at is not None else [("unlogged_request", ["tk-10"])])  # the first to arrive
