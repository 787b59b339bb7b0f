"""An event id reused with other content is an integrity signal, never a silent duplicate.

Someone who learns a harmless event's id could otherwise hide a bulk export behind it: the engine
skipped any second event with a known id. Same id and same content is still a redelivery (skipped,
counted); same id and other content is a conflict: counted, not evaluated, dead-lettered with reason
``event_id_conflict`` and raised as a high alert of its own, in backtest and live alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streams.config.loader import load_rules
from streams.core.decode import ID_CONFLICT, Limits
from streams.core.engine import CONFLICT_RULE, Engine
from streams.core.scoring import Severity
from streams.live.pipeline import Router
from streams.live.wire import Outgoing
from streams.offline.backtest import run_backtest
from streams.outputs.metrics import Health, registry_for

ROOT = Path(__file__).resolve().parents[2]
ACTOR = {"id": "emp-1", "kind": "employee", "region": "US"}
HARMLESS: dict[str, Any] = {
    "event_type": "report.filed", "event_id": "ev-42", "occurred_at": "2024-06-04T10:00:00Z", "actor": ACTOR,
    "target": {"kind": "meeting", "id": "m-1", "region": "US"}, "category": "spam",
}  # fmt: skip
EXPORT: dict[str, Any] = {
    "event_type": "data.export", "event_id": "ev-42", "occurred_at": "2024-06-04T10:05:00Z", "actor": ACTOR,
    "target": {"kind": "dataset", "id": "participants", "region": "US"}, "record_count": 23_000,
    "fields": ["name", "email", "ip_address"], "destination": {"kind": "government", "name": "x", "region": "CN"},
}  # fmt: skip


def _backtest(tmp_path: Path, *events: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    dead = tmp_path / "dead.jsonl"
    result = run_backtest([str(log)], load_rules(ROOT / "config"), deadletter=str(dead))
    return result, [json.loads(x) for x in dead.read_text().splitlines()] if dead.exists() else []


def test_an_export_hidden_behind_a_known_id_raises_an_integrity_alert(tmp_path: Path) -> None:
    result, dead = _backtest(tmp_path, HARMLESS, EXPORT)
    conflicts = [a for a in result.alerts if a.rule_id == CONFLICT_RULE]
    assert len(conflicts) == 1
    assert conflicts[0].severity is Severity.HIGH
    assert conflicts[0].event_ids == ["ev-42"] and conflicts[0].actor_id == "emp-1"
    assert result.engine.stats.id_conflicts == 1
    assert result.engine.stats.duplicates == 0
    assert result.rejected[ID_CONFLICT] == 1
    (letter,) = dead
    assert letter["reason"] == ID_CONFLICT and json.loads(letter["raw"])["event_type"] == "data.export"


def test_a_redelivery_is_still_a_duplicate(tmp_path: Path) -> None:
    reordered = dict(reversed(list(HARMLESS.items())))  # the same content, keys in another order
    result, dead = _backtest(tmp_path, HARMLESS, HARMLESS, reordered)
    assert result.engine.stats.duplicates == 2
    assert result.engine.stats.id_conflicts == 0
    assert not [a for a in result.alerts if a.rule_id == CONFLICT_RULE]
    assert dead == []


def test_a_redelivered_conflict_is_one_alert(tmp_path: Path) -> None:
    result, dead = _backtest(tmp_path, HARMLESS, EXPORT, EXPORT)
    assert [a.rule_id for a in result.alerts].count(CONFLICT_RULE) == 1
    assert result.engine.stats.id_conflicts == 1 and result.engine.stats.duplicates == 1
    assert len(dead) == 1


def test_each_other_content_is_its_own_conflict(tmp_path: Path) -> None:
    bigger = {**EXPORT, "record_count": 4_000_000}
    result, _ = _backtest(tmp_path, HARMLESS, EXPORT, bigger)
    ids = [a.alert_id for a in result.alerts if a.rule_id == CONFLICT_RULE]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_the_same_input_gives_the_same_conflict_alert_id(tmp_path: Path) -> None:
    first, _ = _backtest(tmp_path, HARMLESS, EXPORT)
    second, _ = _backtest(tmp_path, HARMLESS, EXPORT)
    assert [a.alert_id for a in first.alerts] == [a.alert_id for a in second.alerts]


def test_the_live_router_dead_letters_and_raises_the_conflict() -> None:
    engine = Engine(load_rules(ROOT / "config"))
    health = Health()
    router = Router(engine, "keyed", "dead", 4, Limits(), health=health)
    router.on_record("in", 0, 0, None, json.dumps(HARMLESS).encode())
    assert router.take_raised() == []
    out = router.on_record("in", 0, 1, None, json.dumps(EXPORT).encode())
    (letter,) = out
    assert isinstance(letter, Outgoing) and letter.topic == "dead"
    assert dict(letter.headers)["mw-dl-reason"] == ID_CONFLICT.encode()
    (alert,) = router.take_raised()
    assert alert.rule_id == CONFLICT_RULE and alert.severity is Severity.HIGH
    assert router.take_raised() == []
    registry = registry_for(engine, health, live=True)
    assert registry.get_sample_value("modwatch_event_id_conflicts_total") == 1.0
    assert registry.get_sample_value("modwatch_dead_letters_total", {"reason": ID_CONFLICT}) == 1.0
