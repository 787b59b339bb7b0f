"""``streams.offline.diff``: two rule sets over the same log, alerts matched by id."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from streams.config.loader import RuleSet, load_rules
from streams.core.alerts import Alert
from streams.offline.backtest import run_backtest
from streams.offline.diff import compare, diff_rulesets, render_text

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
LOG = str(ROOT / "examples" / "events.jsonl")


@functools.cache
def rules() -> RuleSet:
    return load_rules(CONFIG)


@functools.cache
def alerts() -> tuple[Alert, ...]:
    return tuple(run_backtest([LOG], rules()).alerts)


def tuned(tmp_path: Path, rules_edit: Callable[[dict[str, Any]], None] | None = None,
          scoring_edit: Callable[[dict[str, Any]], None] | None = None) -> RuleSet:  # fmt: skip
    """A copy of the default config with an edit applied to rules.yaml and/or scoring.yaml."""
    target = tmp_path / "tuned"
    shutil.copytree(CONFIG, target)
    for name, edit in (("rules.yaml", rules_edit), ("scoring.yaml", scoring_edit)):
        if edit is not None:
            data = yaml.safe_load((target / name).read_text(encoding="utf-8"))
            edit(data)
            (target / name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_rules(target)


def rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def test_same_rules_no_differences() -> None:
    diff = diff_rulesets(rules(), rules(), [LOG])
    assert diff.identical
    assert diff.unchanged == diff.a_total == diff.b_total == len(alerts())
    assert "no differences" in render_text(diff)


def test_raising_the_bulk_export_threshold(tmp_path: Path) -> None:
    """above: 30000 drops exactly the bulk_export alerts whose total was at most 30,000: among them the
    23,000-account Xinjiang spreadsheet, which is what a reviewer must see before this ships."""

    def edit(data: dict[str, Any]) -> None:
        rule(data, "bulk_export")["above"] = 30000

    diff = diff_rulesets(rules(), tuned(tmp_path, rules_edit=edit), [LOG])
    expected = {a.alert_id for a in alerts() if a.rule_id == "bulk_export" and a.facts["total"] <= 30000}
    assert {a.alert_id for a in diff.only_a} == expected
    assert len(expected) == 4
    assert diff.only_b == () and diff.severity_changed == () and diff.score_changed == ()
    assert diff.unchanged == len(alerts()) - len(expected)
    assert any("ev-000278" in a.event_ids for a in diff.only_a)  # the Xinjiang export

    text = render_text(diff)
    assert "only A raises: 4  only B raises: 0  severity changed: 0" in text
    assert "only A raises (4):" in text and "only B raises: none" in text
    assert "23,000 records" in text
    assert text.count("  - ") == 4


def test_a_heavier_booster_changes_exactly_the_alerts_it_applies_to(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["boosters"]["sensitive_target"]["points"] = 30

    b = tuned(tmp_path, scoring_edit=edit)
    diff = diff_rulesets(rules(), b, [LOG])
    bands = rules().scorer.bands
    severity, score = set(), set()
    for alert in alerts():
        if "sensitive_target" not in alert.signals:
            continue
        new = min(100, alert.score + 15)  # old scores below 100 were not clamped
        if bands.severity(new) != alert.severity:
            severity.add(alert.alert_id)
        elif new != alert.score:
            score.add(alert.alert_id)
    assert {a.alert_id for a, _ in diff.severity_changed} == severity
    assert {a.alert_id for a, _ in diff.score_changed} == score
    assert severity and score
    assert diff.only_a == () and diff.only_b == ()
    for a, new in diff.severity_changed:
        assert new.severity > a.severity
    assert "high 75 → critical 90" in render_text(diff)  # unlogged_request on a political meeting


def test_mode_change_and_removed_rule(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        rule(data, "takedown_burst")["mode"] = "shadow"
        data["rules"] = [r for r in data["rules"] if r["id"] != "fabricated_reports"]

    diff = diff_rulesets(rules(), tuned(tmp_path, rules_edit=edit), [LOG])
    bursts = {a.alert_id for a in alerts() if a.rule_id == "takedown_burst"}
    assert {b.alert_id for _, b in diff.mode_changed} == bursts
    assert all(b.mode == "shadow" for _, b in diff.mode_changed)
    assert {a.rule_id for a in diff.only_a} == {"fabricated_reports"}
    assert diff.by_rule() == {"fabricated_reports": {"only_a": 1}}
    assert "live → shadow" in render_text(diff)


def test_compare_and_limit() -> None:
    everything = list(alerts())
    diff = compare(everything, [], "old", "new")
    assert len(diff.only_a) == len(everything) and diff.b_total == 0
    assert [a.last_seen for a in diff.only_a] == sorted(a.last_seen for a in everything)
    text = render_text(diff, limit=3)
    assert text.count("  - ") == 3
    assert f"… and {len(everything) - 3} more" in text
    assert render_text(diff, limit=0).count("  - ") == len(everything)
