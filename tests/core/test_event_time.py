"""Event time at the edges the default rules' fixtures do not reach: late events against windows
still open, several pending timers on one key, a value that recurs near a window's edge, and two
sources whose clocks differ. Each test fails on a one-line slip in the engine or a rule kind that
the other tests let through (a late event applied to state, a timer set from the event's own time,
a distinct value keeping its first-seen time, the watermark taken from the newest source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.core.alerts import Alert
from streams.core.engine import Engine
from streams.core.state import Shard, open_record
from tests.core.rules.test_kinds import T0, decoded, event, ids, rule, ruleset, run


def _threshold() -> dict[str, Any]:
    return rule("t", "threshold", select={"events": ["action"]}, group_by=["actor.id"], window="1h", at_least=3)


def _distinct() -> dict[str, Any]:
    return rule("c", "cardinality", select={"events": ["action"]}, group_by=["actor.id"], field="target.id",
                window="1h", at_least=3)  # fmt: skip


def _on(eid: str, at: float, target_id: str, actor: str = "emp-1") -> dict[str, Any]:
    return event("account.suspend", eid, at, target={"kind": "account", "id": target_id, "region": "US"},
                 actor={"id": actor, "kind": "employee", "region": "US"})  # fmt: skip


def _other(at: float, eid: str = "other") -> dict[str, Any]:
    """An event of another actor: it only moves event time on."""
    return _on(eid, at, "x", actor="emp-9")


# -- a late event never changes a stateful rule's window, even one still open -------------------------


@pytest.mark.parametrize("kind", ["threshold", "cardinality"])
def test_a_late_event_is_not_applied_to_an_open_window(tmp_path: Path, kind: str) -> None:
    """Two of three events in a 1 h window, then event time moves 1,000 s on (watermark 700 s): a third
    event at 200 s is late. Its window (0 s to 3,600 s) is still open, but the rule must not see it."""
    rs = ruleset(tmp_path, _threshold() if kind == "threshold" else _distinct())
    engine, _, alerts = run(rs, [_on("e0", 0, "a"), _on("e1", 100, "b"), _other(1000), _on("late", 200, "c")])
    assert alerts == []
    assert engine.stats.late == 1
    # The same three events in time fire: the late one was left out, not the rule broken.
    _, _, on_time = run(rs, [_on("e0", 0, "a"), _on("e1", 100, "b"), _on("e2", 200, "c")])
    assert ids(on_time) == [["e0", "e1", "e2"]]


def test_a_late_event_within_the_lateness_is_applied(tmp_path: Path) -> None:
    """Out of order but within the 300 s lateness: not late, counted."""
    rs = ruleset(tmp_path, _threshold())
    engine, _, alerts = run(rs, [_on("e0", 0, "a"), _on("e1", 500, "b"), _on("e2", 250, "c")])
    assert engine.stats.late == 0
    assert len(alerts) == 1 and sorted(alerts[0].event_ids) == ["e0", "e1", "e2"]


# -- several pending absence timers on one key ------------------------------------------------------


def _absence() -> dict[str, Any]:
    return rule(
        "u", "absence",
        first={"events": ["action"], "where": {"field": "request_id", "exists": True}},
        then={"events": ["request"]},
        join=[{"name": "request", "first": "request_id", "then": "request_id"}],
        within="10m", lookback="1h",
    )  # fmt: skip


def _action(eid: str, at: float) -> dict[str, Any]:
    return event("meeting.shutdown", eid, at, request_id="R-1")


def _fired(rs: Any, events: list[dict[str, Any]]) -> tuple[Engine, Shard, list[Alert]]:
    return run(rs, events)


def test_each_pending_absence_fires_at_its_own_bound(tmp_path: Path) -> None:
    """Two actions wait for request R-1 on one key, 500 s apart; each bound is its time + 600 s, and
    fires once the watermark (newest time - 300 s) passes it, not before. The second is a repeat of the
    first for the key's suppression, so it shows as a suppressed alert."""
    rs = ruleset(tmp_path, _absence())
    first, second = _action("act1", 0), _action("act2", 500)
    assert _fired(rs, [first, second, _other(900)])[2] == []  # watermark 600: at the first bound
    assert ids(_fired(rs, [first, second, _other(901)])[2]) == [["act1"]]
    engine, _, alerts = _fired(rs, [first, second, _other(901), _other(1400, "o2")])
    assert (ids(alerts), engine.stats.suppressed["u"]) == ([["act1"]], 0)
    engine, _, alerts = _fired(rs, [first, second, _other(901), _other(1401, "o2")])
    assert (ids(alerts), engine.stats.suppressed["u"]) == ([["act1"]], 1)


def test_the_key_waits_for_the_next_pending_bound(tmp_path: Path) -> None:
    """After the first action's alert, the key's timer is the second action's bound: 500 s + 600 s."""
    rs = ruleset(tmp_path, _absence())
    engine, shard, alerts = run(rs, [_action("act1", 0), _action("act2", 500), _other(901)])
    assert ids(alerts) == [["act1"]]
    (key,) = [k for k in shard.store if k.startswith("request=")]
    absence = engine.by_id["u"]
    assert absence.deadline(open_record(shard.store[key])["u"][0]) == pytest.approx(T0 + 1100, abs=0.01)
    _, waiting, _ = run(rs, [_action("act1", 0), _action("act2", 500)])
    assert absence.deadline(open_record(waiting.store[key])["u"][0]) == pytest.approx(T0 + 600, abs=0.01)


# -- a distinct value that recurs near the window's edge --------------------------------------------


def test_a_recurring_value_counts_from_its_last_time(tmp_path: Path) -> None:
    """a at 0 s and again at 3,500 s, b at 100 s, c at 3,650 s: the 1 h window then spans 50 s to 3,650 s
    and holds a (last seen 3,500 s), b and c: three distinct values."""
    rs = ruleset(tmp_path, _distinct())
    _, _, alerts = run(rs, [_on("e1", 0, "a"), _on("e2", 100, "b"), _on("e3", 3500, "a"), _on("e4", 3650, "c")])
    assert len(alerts) == 1
    assert alerts[0].facts["distinct"] == 3


def test_a_value_not_seen_again_leaves_the_window(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, _distinct())
    _, _, alerts = run(rs, [_on("e1", 0, "a"), _on("e2", 100, "b"), _on("e3", 3500, "b"), _on("e4", 3650, "c")])
    assert alerts == []


# -- two sources: the watermark follows the oldest ---------------------------------------------------


def _two_sources(rs: Any, events: list[tuple[str, dict[str, Any]]]) -> tuple[Engine, list[Alert]]:
    engine, shard = Engine(rs), Shard()
    alerts: list[Alert] = []
    for source, raw in events:
        out = decoded(raw)
        assert engine.admit(out) == "new"
        alerts.extend(engine.step(shard, out, source))
    return engine, alerts


def test_the_watermark_is_the_oldest_sources_time(tmp_path: Path) -> None:
    """Partition p1 is 1,000 s ahead of p0. An event of p0 at 100 s is on time for p0: not late."""
    rs = ruleset(tmp_path, _threshold())
    engine, alerts = _two_sources(rs, [("p0", _on("e0", 0, "a")), ("p1", _other(1000)), ("p0", _on("e1", 100, "b")),
                                       ("p0", _on("e2", 150, "c"))])  # fmt: skip
    assert engine.stats.late == 0
    assert ids(alerts) == [["e0", "e1", "e2"]]


def test_a_timer_waits_for_the_slowest_source(tmp_path: Path) -> None:
    """An absence bound at 600 s does not fire while p0 is still at 0 s, however far p1 runs ahead."""
    rs = ruleset(tmp_path, _absence())
    _, alerts = _two_sources(rs, [("p0", _action("act", 0)), ("p1", _other(5000))])
    assert alerts == []
    _, alerts = _two_sources(rs, [("p0", _action("act", 0)), ("p1", _other(5000)), ("p0", _other(901, "o2"))])
    assert ids(alerts) == [["act"]]
