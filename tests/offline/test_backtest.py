"""`modwatch backtest` end to end on the example log: which alerts fire, at which severity, which
stay quiet; byte-identical reruns; dead letters; exit codes."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from streams.cli.main import main
from tests.worker_harness import REPO

EXAMPLE = REPO / "examples" / "events.jsonl"
CONFIG = str(REPO / "config")


def run(tmp_path: Path, *extra: str, log: Path = EXAMPLE) -> tuple[int, list[dict[str, object]], Path]:
    out = tmp_path / "alerts.jsonl"
    code = main(["backtest", str(log), "--config", CONFIG, "--output", str(out), *extra])
    alerts = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return code, alerts, out


def scenario_events() -> dict[str, set[str]]:
    """Event ids of each injected incident (the generator tags them with a `scenario` field)."""
    found: dict[str, set[str]] = {}
    for line in EXAMPLE.read_text().splitlines():
        event = json.loads(line)
        if "scenario" in event:
            found.setdefault(event["scenario"], set()).add(event["event_id"])
    return found


SEVERE = {"high", "critical"}


def test_every_case_pattern_reaches_high_or_critical(tmp_path: Path) -> None:
    code, alerts, _ = run(tmp_path)
    assert code == 0
    incidents = scenario_events()
    assert len(incidents) == 8
    expected_rules = {
        "tiananmen_shutdown": {"rapid_takedown", "cross_jurisdiction", "takedown_burst", "undocumented_action"},
        "participant_export": {"bulk_export", "cross_jurisdiction", "undocumented_action"},
        "xinjiang_accounts": {"bulk_export", "cross_jurisdiction", "cumulative_exfiltration"},
        "fabricated_reports": {"fabricated_reports"},
        "off_books_access": {"cross_region_access"},
        "quarantine_christian_group": {"undocumented_action"},
        "cumulative_exfiltration": {"cumulative_exfiltration"},
        "unlogged_request": {"unlogged_request"},
    }
    for scenario, rules in expected_rules.items():
        ids = incidents[scenario]
        fired = {a["rule_id"] for a in alerts if set(a["event_ids"]) & ids and a["severity"] in SEVERE}  # type: ignore[arg-type]
        assert rules <= fired, f"{scenario}: expected {sorted(rules)} at high/critical, got {sorted(fired)}"
    critical = {a["rule_id"] for a in alerts if a["severity"] == "critical"}
    assert {"rapid_takedown", "cross_jurisdiction", "bulk_export"} <= critical


def test_routine_traffic_stays_below_high(tmp_path: Path) -> None:
    _, alerts, _ = run(tmp_path)
    incident_ids = set().union(*scenario_events().values())
    routine = [a for a in alerts if not set(a["event_ids"]) & incident_ids]  # type: ignore[arg-type]
    assert routine, "the example's routine look-alikes (NCMEC takedowns, warehouse exports...) do raise low alerts"
    assert [a for a in routine if a["severity"] in SEVERE] == []
    by_rule = Counter(str(a["rule_id"]) for a in routine)
    # Lawful requests answered in their own jurisdiction raise nothing at all.
    assert by_rule["cross_jurisdiction"] == 0 and by_rule["unlogged_request"] == 0
    severe = [a for a in alerts if a["severity"] in SEVERE]
    assert len(severe) <= 25, "a team would drown: the case has 8 incidents"


def test_output_is_byte_identical_on_a_second_run(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = run(tmp_path / "a")[2].read_bytes()
    second = run(tmp_path / "b")[2].read_bytes()
    assert first == second and len(first) > 1000


def test_summary_counts_and_dead_letters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = EXAMPLE.read_text().splitlines()[:50]
    bad = ["{oops", "[]", json.dumps({**json.loads(good[0]), "occurred_at": "2020-05-01T00:00:00"}), ""]
    log = tmp_path / "mixed.jsonl.gz"
    with gzip.open(log, "wt") as fh:
        fh.write("\n".join(good[:10] + bad + good[10:] + [good[3]]) + "\n")  # good[3] again: a duplicate
    dead = tmp_path / "dead.jsonl"
    code, _, _ = run(tmp_path, "--deadletter", str(dead), log=log)
    assert code == 0
    err = capsys.readouterr().err
    assert "events read: 54" in err and "rejected: 3" in err and "duplicates skipped: 1" in err
    rejected = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (11, "invalid_json"), (12, "not_object"), (13, "contract_violation"),
    ]  # fmt: skip
    assert "occurred_at" in rejected[2]["detail"]
    assert rejected[0]["raw"] == "{oops"
    assert run(tmp_path, "--deadletter", str(dead), "--strict", log=log)[0] == 1


def test_since_and_until_select_a_period(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, alerts, _ = run(tmp_path, "--since", "2020-06-04T00:00:00Z", "--until", "2020-06-05T00:00:00Z")
    assert code == 0
    assert alerts and all(str(a["last_seen"]).startswith("2020-06-04") for a in alerts)
    assert "outside --since/--until: " in capsys.readouterr().err


def test_errors_name_what_is_wrong_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.jsonl: no such file" in err
    bad = tmp_path / "cfg"
    bad.mkdir()
    (bad / "rules.yaml").write_text("rules:\n  - {id: x, kind: threshold, window: soon}\n")
    assert main(["backtest", str(EXAMPLE), "--config", str(bad), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    # A config with several mistakes lists each on its own line, every line naming file, rule and field.
    lines = err.removeprefix("modwatch: ").splitlines()
    assert err.startswith("modwatch: ") and len(lines) > 1
    assert all("rules.yaml: rule 'x': " in line for line in lines)
    assert any("window: input should be a duration" in line for line in lines)
    assert main(["backtest", "--nope"]) == 2


def test_metrics_textfile(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = tmp_path / "m.prom"
    run(tmp_path, "--metrics", str(metrics))
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    processed = sum(s.value for s in families["modwatch_events_processed"].samples if s.name.endswith("_total"))
    assert processed == 600
    latency = families["modwatch_request_to_action_seconds"]
    under_minute = {
        s.labels["jurisdiction"]: s.value
        for s in latency.samples
        if s.name.endswith("_bucket") and s.labels["le"] == "60.0" and s.value > 0
    }
    assert "CN" in under_minute and "US" in under_minute  # the Tiananmen takedowns and NCMEC's removals
    labels = {k for s in families["modwatch_alerts"].samples for k in s.labels}
    assert labels == {"rule", "severity"}
