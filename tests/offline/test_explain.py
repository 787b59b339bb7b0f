"""``streams.offline.explain``: why an alert fired, recomputed from the rule's hit."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from streams.config.loader import RuleSet, load_rules
from streams.core.alerts import Alert
from streams.core.scoring import Severity
from streams.offline.backtest import run_backtest
from streams.offline.explain import AlertNotFound, explain, explain_alerts, explain_ids
from streams.offline.explain_text import render_text, safe_text

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
LOG = str(ROOT / "examples" / "events.jsonl")


@functools.cache
def rules() -> RuleSet:
    return load_rules(CONFIG)


@functools.cache
def alerts() -> tuple[Alert, ...]:
    return tuple(run_backtest([LOG], rules()).alerts)


def find(rule_id: str, event_id: str) -> Alert:
    found = [a for a in alerts() if a.rule_id == rule_id and event_id in a.event_ids]
    assert len(found) == 1, found
    return found[0]


def test_tiananmen_rapid_takedown() -> None:
    alert = find("rapid_takedown", "ev-000557")
    ex = explain(rules(), alert.alert_id, [LOG])

    assert ex.alert.alert_id == alert.alert_id
    assert ex.kind == "sequence"
    assert "within 60s" in ex.condition
    # The request, then the shutdown 24 s later: in event time, with the fields read back from the log
    # (the request's four targets are not kept in rule state: they come from the log).
    assert [e.event_id for e in ex.events] == ["ev-000557", "ev-000558"]
    request, shutdown = ex.events
    assert request.view is not None and shutdown.view is not None
    assert request.ts is not None and shutdown.ts is not None
    assert 0 < shutdown.ts - request.ts < 60
    assert len(request.view["targets"]) == 4
    assert request.view["requester"]["agency"] == "Ministry of State Security"
    # 45 + foreign 20 + confidential 10 + no ticket 15 + sensitive 15 = 105, clamped to 100.
    assert ex.base == 45
    assert [(b.name, b.points) for b in ex.applied] == [
        ("foreign_requester", 20), ("confidential_request", 10), ("no_ticket", 15), ("sensitive_target", 15),
    ]  # fmt: skip
    assert ex.raw == 105 and ex.score == 100 == alert.score
    assert ex.severity is Severity.CRITICAL is alert.severity
    not_applied = {b.name: b.points for b in ex.not_applied}
    assert not_applied["ticketed"] == -10 and "personal_data" in not_applied
    assert ex.applied[0].description.startswith("the request came from another jurisdiction")

    text = render_text(ex)
    expected = ["rapid_takedown", "critical", "ev-000557", "ev-000558", "+24s", "Ministry of State Security",
                "foreign_requester", "+20", "clamped", "not applying: ticketed (-10)", "critical (>= 80)"]
    for part in expected:
        assert part in text, part
    assert text.index("ev-000557") < text.index("ev-000558")


def test_every_breakdown_adds_up_to_the_alerts_score() -> None:
    """For every alert of the example, base + boosters (clamped) and the band give the alert's score and
    severity, and the boosters that applied are the alert's signals."""
    every = list(alerts())
    explanations = explain_ids(rules(), [a.alert_id for a in every], [LOG])
    assert len(explanations) == len(every) > 50
    for alert, ex in zip(every, explanations, strict=True):
        assert ex.alert.alert_id == alert.alert_id
        assert max(0, min(100, ex.raw)) == ex.score == alert.score
        assert ex.raw == ex.base + sum(b.points for b in ex.applied)
        assert ex.severity == alert.severity == ex.bands.severity(ex.score)
        assert [b.name for b in ex.applied] == alert.signals
        assert {b.name for b in ex.boosters} == set(rules().scorer.boosters)  # every rule considers all
        assert sorted(e.event_id for e in ex.events) == sorted(alert.event_ids)
        assert all(e.view is not None for e in ex.events), alert.alert_id
        times = [e.ts for e in ex.events]
        assert times == sorted(times)  # type: ignore[type-var]


def test_absence_and_threshold_alerts() -> None:
    unlogged = explain(rules(), find("unlogged_request", "ev-000346").alert_id, [LOG])
    assert unlogged.kind == "absence"
    assert [e.event_id for e in unlogged.events] == ["ev-000346"]
    assert unlogged.alert.last_seen - unlogged.alert.first_seen == pytest.approx(600)  # fired 10 min later
    assert "no request.received" in unlogged.condition

    slow = explain(rules(), find("cumulative_exfiltration", "ev-000031").alert_id, [LOG])
    assert slow.kind == "threshold"
    assert [e.event_id for e in slow.events][:3] == ["ev-000031", "ev-000057", "ev-000105"]
    assert slow.facts["total"] > 2000
    assert "ticketed" in [b.name for b in slow.applied]  # a mitigation shows with its negative points
    assert "-10" in render_text(slow)


def test_unknown_alert_id_is_an_error_naming_it() -> None:
    with pytest.raises(KeyError) as info:
        explain(rules(), "0123456789abcdef01234567", [LOG])
    assert isinstance(info.value, AlertNotFound)
    assert "0123456789abcdef01234567" in str(info.value)
    assert "examples/events.jsonl" in str(info.value)


def test_explain_alerts_selects_by_severity_and_reports_the_period() -> None:
    run = explain_alerts(rules(), [LOG])
    serious = [a for a in alerts() if a.severity >= Severity.HIGH]
    assert [ex.alert.alert_id for ex in run.explanations] == [a.alert_id for a in serious]
    assert run.events == 600
    assert run.first_ts is not None and run.last_ts is not None and run.first_ts < run.last_ts


def test_expected_ids_stop_the_replay_early_with_the_same_result() -> None:
    """``backtest --explain/--report`` pass the ids the backtest found: the replay stops after the last one
    and only skims the rest of the log for its period."""
    full = explain_alerts(rules(), [LOG])
    ids = [ex.alert.alert_id for ex in full.explanations]
    early = explain_alerts(rules(), [LOG], expected=ids)
    assert [ex.alert.alert_id for ex in early.explanations] == ids
    assert [render_text(ex) for ex in early.explanations] == [render_text(ex) for ex in full.explanations]
    assert (early.first_ts, early.last_ts) == (full.first_ts, full.last_ts)
    assert early.events < full.events == 600
    nothing = explain_alerts(rules(), [LOG], expected=[])
    assert nothing.explanations == [] and nothing.events == 1
    assert (nothing.first_ts, nothing.last_ts) == (full.first_ts, full.last_ts)


def _event(event_id: str, at: str, **fields: object) -> dict[str, object]:
    return {"event_id": event_id, "occurred_at": at, **fields}


def test_hostile_text_is_printable(tmp_path: Path) -> None:
    """Event fields reach a terminal: escape sequences and bidi overrides must not."""
    actor = {"id": "emp-\x1b[2J\x1b]0;pwned\x07", "kind": "employee", "region": "US"}
    events = [
        _event("e1", "2020-06-01T00:00:00Z", event_type="meeting.shutdown", actor=actor, reason="a\u202eb\nc",
               target={"kind": "meeting", "id": "m1", "region": "US", "tags": ["political"]}),
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    run = explain_alerts(rules(), [str(log)], min_severity=Severity.INFO)
    assert run.explanations
    text = "\n".join(render_text(ex) for ex in run.explanations)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "emp-?[2J?]0;pwned?" in text
    assert safe_text("x" * 500, 10) == "x" * 9 + "…"


def test_pseudonymised_explanations_hide_target_ids() -> None:
    key = b"k" * 32  # the shortest key a Pseudonymizer takes
    plain = find("rapid_takedown", "ev-000557")
    run = explain_alerts(rules(), [LOG], pseudonymize=key)
    ex = next(e for e in run.explanations if e.alert.rule_id == "rapid_takedown")
    assert ex.alert.alert_id == plain.alert_id  # the group key is the request id: not pseudonymised
    text = render_text(ex)
    assert "mtg-b318" not in text and "p_" in text
    assert "mtg-b318" in render_text(explain(rules(), plain.alert_id, [LOG]))
