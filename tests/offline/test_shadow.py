"""Shadow mode: a rule marked ``mode: shadow`` is evaluated, recorded and counted, never paged."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from streams.cli.main import main
from streams.config.loader import RuleSet, load_rules
from streams.core.alerts import Alert
from streams.offline.backtest import print_summary, run_backtest
from streams.outputs.metrics import registry_for
from streams.outputs.sinks import SinkSet
from streams.outputs.sinks.jsonl import JsonlSink
from streams.outputs.sinks.webhook import WebhookSink

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
LOG = str(ROOT / "examples" / "events.jsonl")


@pytest.fixture
def shadow_config(tmp_path: Path) -> Path:
    """The default rules with rapid_takedown in shadow mode."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    data = yaml.safe_load((target / "rules.yaml").read_text(encoding="utf-8"))
    next(r for r in data["rules"] if r["id"] == "rapid_takedown")["mode"] = "shadow"
    (target / "rules.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


class Pager:
    """A sink that notifies people, like the webhook: shadow alerts must never reach it."""

    name = "pager"
    pages = True

    def __init__(self) -> None:
        self.received: list[Alert] = []

    def deliver(self, alert: Alert) -> None:
        self.received.append(alert)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def test_shadow_alerts_are_in_the_backtest_output_and_counted(shadow_config: Path, tmp_path: Path) -> None:
    live_alerts = run_backtest([LOG], load_rules(CONFIG)).alerts
    out = tmp_path / "alerts.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        result = run_backtest([LOG], load_rules(shadow_config), output=fh)

    shadow = [a for a in result.alerts if a.rule_id == "rapid_takedown"]
    # The same incidents as when the rule is live, only marked: a shadow rule is evaluated in full.
    assert [a.alert_id for a in shadow] == [a.alert_id for a in live_alerts if a.rule_id == "rapid_takedown"]
    assert len(shadow) == 12 and all(a.mode == "shadow" for a in shadow)
    assert all(a.mode == "live" for a in result.alerts if a.rule_id != "rapid_takedown")
    assert len(result.alerts) == len(live_alerts)

    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sum(1 for line in lines if line["mode"] == "shadow") == 12
    tiananmen = next(line for line in lines if line["rule_id"] == "rapid_takedown" and line["severity"] == "critical")
    assert tiananmen["mode"] == "shadow" and "ev-000557" in tiananmen["event_ids"]

    assert result.engine is not None
    stats = result.engine.stats
    assert stats.alerts[("rapid_takedown", "critical")] == 1
    assert stats.alerts[("rapid_takedown", "low")] == 11
    registry = registry_for(result.engine)
    labels = {"rule": "rapid_takedown", "severity": "critical"}
    assert registry.get_sample_value("modwatch_alerts_total", labels) == 1.0


def test_sinks_skip_shadow_alerts_for_pagers_only(shadow_config: Path, tmp_path: Path) -> None:
    result = run_backtest([LOG], load_rules(shadow_config))
    shadow = next(a for a in result.alerts if a.rule_id == "rapid_takedown" and a.severity.label == "critical")
    live = next(a for a in result.alerts if a.rule_id == "cross_jurisdiction" and a.severity.label == "critical")
    assert shadow.mode == "shadow" and live.mode == "live"

    pager = Pager()
    webhook = WebhookSink("http://127.0.0.1:9/never-called")
    jsonl = JsonlSink(str(tmp_path / "sink.jsonl"))
    sinks = SinkSet([pager, webhook, jsonl])
    try:
        sinks.deliver(shadow)
        sinks.deliver(live)
    finally:
        asyncio.run(sinks.stop())

    assert [a.alert_id for a in pager.received] == [live.alert_id]
    assert webhook.queue is not None and webhook.queue.qsize() == 1
    assert webhook.queue.get_nowait().alert_id == live.alert_id
    written = [json.loads(line) for line in (tmp_path / "sink.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(w["alert_id"], w["mode"]) for w in written] == [(shadow.alert_id, "shadow"), (live.alert_id, "live")]
    assert sinks.delivered == {"pager": 1, "webhook": 1, "jsonl": 2}


def test_validate_counts_shadow_rules(shadow_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate", "--config", str(shadow_config)]) == 0
    assert "1 shadow" in capsys.readouterr().out


def test_backtest_summary_counts_shadow_alerts(shadow_config: Path) -> None:
    result = run_backtest([LOG], load_rules(shadow_config))
    out = io.StringIO()
    print_summary(result, out)
    assert "rapid_takedown             1 critical, 11 low" in out.getvalue()


def test_rule_set_loads_mode(shadow_config: Path) -> None:
    ruleset: RuleSet = load_rules(shadow_config)
    assert ruleset.get("rapid_takedown").config.mode == "shadow"
    assert ruleset.get("cross_jurisdiction").config.mode == "live"
