"""The shipped Prometheus and Alertmanager configuration passes the projects' own checkers, and the
alerting rules fire when, and only when, their conditions hold (``promtool test rules``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from .servers import ALERT_RULES, ALERTMANAGER_CONFIG, PROMETHEUS_DIR, binary, rule_queries
from .test_dashboards import exported_series, expr_problems


def run(*argv: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{output}"
    return output


def test_promtool_check_rules() -> None:
    output = run(binary("promtool"), "check", "rules", str(ALERT_RULES))
    assert f"SUCCESS: {len(rule_queries())} rules found" in output


def test_promtool_check_config() -> None:
    """The compose stack's prometheus.yml, with the rule file it names."""
    output = run(binary("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "1 rule files found" in output


def test_amtool_check_config() -> None:
    output = run(binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert "SUCCESS" in output


def test_rules_use_exported_metrics_and_labels() -> None:
    series = exported_series()
    problems = [f"{q.source}: {p}" for q in rule_queries() for p in expr_problems(q.expr, series)]
    assert not problems, "\n".join(problems)


def test_rules_have_severity_and_runbook() -> None:
    rules = [r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "high", "medium", "low"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


# --- promtool test rules ------------------------------------------------------------------------
# Annotations are compared verbatim by promtool; these tests are about expressions, `for` and labels,
# so they run against a copy of the rules without annotations.

PIPELINE = {"component": "pipeline"}
INCIDENTS = {"component": "incidents"}


def alert(labels: dict[str, str]) -> dict[str, Any]:
    return {"exp_labels": labels}


TESTS: list[dict[str, Any]] = [
    {   # the worker stops answering: down after 2 minutes of failed scrapes
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="modwatch", instance="worker:9464"}', "values": "1 1 0 0 0 0"},
            {"series": 'modwatch_heartbeat_timestamp_seconds{job="modwatch", instance="worker:9464"}',
             "values": "60 120 _ _ _ _"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "ModwatchDown", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "ModwatchDown", "exp_alerts": [alert(
                {"severity": "critical", "job": "modwatch", "instance": "worker:9464", **PIPELINE})]},
        ],
    },
    {   # no worker was ever scraped: no heartbeat
        "interval": "1m",
        "input_series": [{"series": 'up{job="prometheus"}', "values": "1x10"}],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "ModwatchHeartbeatMissing", "exp_alerts": []},
            {"eval_time": "6m", "alertname": "ModwatchHeartbeatMissing",
             "exp_alerts": [alert({"severity": "critical", "job": "modwatch", **PIPELINE})]},
        ],
    },
    {   # records keep arriving (lag grows) but no event is evaluated: silent; lag above 1,000: growing
        "interval": "1m",
        "input_series": [
            {"series": 'modwatch_events_processed_total{event_type="content.remove", region="US"}',
             "values": "500+0x40"},
            {"series": 'modwatch_consumer_lag{topic="modwatch.events"}', "values": "0+200x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "ModwatchSilent", "exp_alerts": []},
            {"eval_time": "25m", "alertname": "ModwatchSilent",
             "exp_alerts": [alert({"severity": "critical", **PIPELINE})]},
            {"eval_time": "20m", "alertname": "ModwatchConsumerLagGrowing",
             "exp_alerts": [alert({"severity": "high", "topic": "modwatch.events", **PIPELINE})]},
        ],
    },
    {   # events flow and lag stays small: quiet
        "interval": "1m",
        "input_series": [
            {"series": 'modwatch_events_processed_total{event_type="content.remove", region="US"}',
             "values": "0+100x40"},
            {"series": 'modwatch_consumer_lag{topic="modwatch.events"}', "values": "0+1x40"},
            {"series": "modwatch_last_commit_progress_timestamp_seconds", "values": "0+60x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "30m", "alertname": name, "exp_alerts": []}
            for name in ("ModwatchSilent", "ModwatchConsumerLagGrowing", "ModwatchCommitStalled")
        ],
    },
    {   # committed offsets stop moving while records wait: a commit stall
        "interval": "1m",
        "input_series": [
            {"series": "modwatch_last_commit_progress_timestamp_seconds", "values": "0+60x5 300+0x20"},
            {"series": 'modwatch_consumer_lag{topic="modwatch.events"}', "values": "5+0x25"},
        ],
        "alert_rule_test": [
            {"eval_time": "12m", "alertname": "ModwatchCommitStalled", "exp_alerts": []},
            {"eval_time": "16m", "alertname": "ModwatchCommitStalled",
             "exp_alerts": [alert({"severity": "high", **PIPELINE})]},
        ],
    },
    {   # no lag, nothing to commit: not a stall however old the last commit
        "interval": "1m",
        "input_series": [
            {"series": "modwatch_last_commit_progress_timestamp_seconds", "values": "0+0x30"},
            {"series": 'modwatch_consumer_lag{topic="modwatch.events"}', "values": "0+0x30"},
        ],
        "alert_rule_test": [{"eval_time": "25m", "alertname": "ModwatchCommitStalled", "exp_alerts": []}],
    },
    {   # dead letters, sink failures and drops, rule errors appear
        "interval": "1m",
        "input_series": [
            {"series": 'modwatch_dead_letters_total{reason="invalid_json"}', "values": "0 0 3 3 3"},
            {"series": 'modwatch_sink_failures_total{sink="alertmanager"}', "values": "0+2x10"},
            {"series": 'modwatch_sink_dropped_total{sink="alertmanager"}', "values": "0 0 1 1"},
            {"series": 'modwatch_rule_errors_total{rule="bulk_export"}', "values": "0 0 2 2"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "ModwatchDeadLetters", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "ModwatchDeadLetters",
             "exp_alerts": [alert({"severity": "medium", "reason": "invalid_json", **PIPELINE})]},
            {"eval_time": "3m", "alertname": "ModwatchSinkFailures", "exp_alerts": []},
            {"eval_time": "7m", "alertname": "ModwatchSinkFailures",
             "exp_alerts": [alert({"severity": "high", "sink": "alertmanager", **PIPELINE})]},
            {"eval_time": "3m", "alertname": "ModwatchSinkDropped",
             "exp_alerts": [alert({"severity": "critical", "sink": "alertmanager", **PIPELINE})]},
            {"eval_time": "3m", "alertname": "ModwatchRuleErrors",
             "exp_alerts": [alert({"severity": "medium", "rule": "bulk_export", **PIPELINE})]},
        ],
    },
    {   # series born with their first increment (no zero sample before): still seen, for one window
        "interval": "1m",
        "input_series": [
            {"series": 'modwatch_dead_letters_total{reason="too_large"}', "values": "_ _ 1 1 1 1 1 1 1 1 1 1 1 1 1"},
            {"series": 'modwatch_alerts_total{rule="rapid_takedown", severity="critical"}',
             "values": "_ _ 1 1 1 1 1 1 1 1"},
            {"series": 'modwatch_alerts_total{rule="fabricated_reports", severity="high"}', "values": "_ 4 4 4 4"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "ModwatchDeadLetters",
             "exp_alerts": [alert({"severity": "medium", "reason": "too_large", **PIPELINE})]},
            {"eval_time": "14m", "alertname": "ModwatchDeadLetters", "exp_alerts": []},
            {"eval_time": "2m", "alertname": "ModwatchCriticalAlert",
             "exp_alerts": [alert({"severity": "critical", "rule": "rapid_takedown", **INCIDENTS})]},
            {"eval_time": "6m", "alertname": "ModwatchCriticalAlert",
             "exp_alerts": [alert({"severity": "critical", "rule": "rapid_takedown", **INCIDENTS})]},
            {"eval_time": "9m", "alertname": "ModwatchCriticalAlert", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "ModwatchHighAlertRate",
             "exp_alerts": [alert({"severity": "high", "rule": "fabricated_reports", **INCIDENTS})]},
        ],
    },
    {   # a critical incident, and more than three high ones of a rule within the hour
        "interval": "1m",
        "input_series": [
            {"series": 'modwatch_alerts_total{rule="cross_jurisdiction", severity="critical"}', "values": "0 0 1 1"},
            {"series": 'modwatch_alerts_total{rule="undocumented_action", severity="high"}', "values": "0 1 2 4 4"},
            {"series": 'modwatch_alerts_total{rule="bulk_export", severity="high"}', "values": "0 1 1 1 1"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "ModwatchCriticalAlert", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "ModwatchCriticalAlert",
             "exp_alerts": [alert({"severity": "critical", "rule": "cross_jurisdiction", **INCIDENTS})]},
            {"eval_time": "4m", "alertname": "ModwatchHighAlertRate",
             "exp_alerts": [alert({"severity": "high", "rule": "undocumented_action", **INCIDENTS})]},
        ],
    },
]


def test_alerting_rules_fire_when_their_conditions_hold(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    tested = {case["alertname"] for test in TESTS for case in test["alert_rule_test"]}
    assert tested == {q.source.removeprefix("alerts.yml: ") for q in rule_queries()}, "a rule without a test"
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": TESTS}
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    output = run(binary("promtool"), "test", "rules", "rules_test.yml", cwd=tmp_path)
    assert "SUCCESS" in output
