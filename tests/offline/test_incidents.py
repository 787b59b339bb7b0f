"""Incidents over the example log and a generated one: the pages before (every live alert at or above
high) and after (incidents that reached high, plus the alerts of ``page: always`` rules), per pattern
of docs/threat-model.md; every pattern still pages at its severity; ``backtest --incidents`` is
byte-stable, ``explain`` recognises an incident id, and the report lists the incidents, escaped."""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.config.loader import load_incidents, load_rules
from streams.core.alerts import Alert
from streams.core.incidents import Incident, IncidentEngine
from streams.core.scoring import Severity
from streams.offline.backtest import BacktestResult, run_backtest
from streams.offline.incidents import incidents_html, page_count
from streams.tools.generate import write_log

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
EXAMPLE = str(ROOT / "examples" / "events.jsonl")

# The patterns of the example (docs/threat-model.md), by the actor the generator gives them.
ACTORS = {"emp-eng-031": "participants exported", "emp-eng-007": "account-id spreadsheet",
          "emp-mk-004": "slow exfiltration", "emp-ts-017": "unlogged request", "emp-exec-02": "fabricated reports",
          "emp-eng-019": "remote access"}  # fmt: skip
# pattern: (pages before, pages after) on the example and on `generate --events 20000 --seed 1 --incidents`
EXPECTED = {
    "takedowns within a minute": (5, 2),  # one incident + the rapid_takedown alert (page: always)
    "participants exported": (4, 1),
    "account-id spreadsheet": (4, 1),
    "slow exfiltration": (1, 1),
    "fabricated reports": (2, 2),  # the reporters and the executive who cancelled: two people
    "remote access": (1, 1),
    "liaison quarantine": (1, 1),
    "unlogged request": (2, 1),
}


def pattern(alert: Alert) -> str:
    if alert.rule_id == "fabricated_reports":
        return "fabricated reports"
    if alert.actor_id == "emp-liaison-01":
        quarantine = alert.labels.get("event_type") == "account.quarantine"
        return "liaison quarantine" if quarantine else "takedowns within a minute"
    assert alert.actor_id in ACTORS, alert
    return ACTORS[alert.actor_id]


@functools.cache
def run(log: str) -> BacktestResult:
    return run_backtest([log], load_rules(CONFIG), incidents=IncidentEngine(load_incidents(CONFIG)))


@pytest.fixture(scope="module", params=["example", "generated"])
def log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "example":
        return EXAMPLE
    path = tmp_path_factory.getbasetemp() / "generated-20000-seed1.jsonl"
    if not path.exists():
        write_log(str(path), 20000, seed=1, incidents=True)
    return str(path)


def per_pattern(result: BacktestResult) -> dict[str, tuple[int, int]]:
    by_id = {a.alert_id: a for a in result.alerts}
    paging = [a for a in result.alerts if a.mode == "live" and a.severity >= Severity.HIGH]
    before = Counter(pattern(a) for a in paging)
    after = Counter(pattern(a) for a in paging if a.page)
    for incident in paged(result):
        after[pattern(by_id[incident.alert_ids[0]])] += 1
    return {name: (before[name], after[name]) for name in sorted(set(before) | set(after))}


def paged(result: BacktestResult) -> list[Incident]:
    ids = {u.incident.incident_id for u in result.updates if u.pages}
    return [i for i in result.incidents() if i.incident_id in ids]


def test_pages_before_and_after_per_pattern(log: str) -> None:
    result = run(log)
    assert per_pattern(result) == dict(sorted(EXPECTED.items()))
    pages = page_count(result.alerts, result.updates, Severity.HIGH)
    assert (pages.before, pages.incidents, pages.always, pages.after) == (20, 9, 1, 10)


def test_every_pattern_still_pages_at_its_severity(log: str) -> None:
    result = run(log)
    by_id = {a.alert_id: a for a in result.alerts}
    worst: dict[str, Severity] = {}
    for a in result.alerts:
        if a.severity >= Severity.HIGH:
            worst[pattern(a)] = max(worst.get(pattern(a), Severity.INFO), a.severity)
    incidents = paged(result)
    for incident in incidents:  # one pattern per incident: it never mixes two
        assert len({pattern(by_id[a]) for a in incident.alert_ids}) == 1, incident
    paged_at = {pattern(by_id[i.alert_ids[0]]): i.severity for i in incidents}
    assert paged_at == worst


def test_backtest_incidents_file_is_byte_stable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for n in (1, 2):
        path = tmp_path / f"incidents-{n}.jsonl"
        argv = ["backtest", EXAMPLE, "-o", str(tmp_path / f"alerts-{n}.jsonl"), "--config", str(CONFIG),
                "--incidents", str(path)]  # fmt: skip
        assert main(argv) == 0
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]
    assert "pages: 20 without incidents, 10 with them (9 incidents + 1 page: always alerts)" in capsys.readouterr().err
    rows = [json.loads(line) for line in outputs[0].decode().splitlines()]
    assert len(rows) == 9 and len({r["incident_id"] for r in rows}) == 9
    assert rows == sorted(rows, key=lambda r: (r["first_seen"], r["incident_id"]))
    assert [line for line in outputs[0].decode().splitlines()] == [
        json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for r in rows
    ]


def test_explain_recognises_an_incident_id(capsys: pytest.CaptureFixture[str]) -> None:
    (incident,) = [i for i in run(EXAMPLE).incidents() if "rapid_takedown" in i.rule_ids()]
    assert main(["explain", incident.incident_id, "--log", EXAMPLE, "--config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"incident {incident.incident_id}  CRITICAL")
    assert "3abd4daf9ec4896708b5344e" in out and "ev-000557  request.received  <- rapid_takedown" in out
    assert main(["explain", "f" * 24, "--log", EXAMPLE, "--config", str(CONFIG)]) == 2
    assert "nor an incident id of the 9 incidents raised" in capsys.readouterr().err


def test_report_lists_the_incidents_escaped(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    argv = ["backtest", EXAMPLE, "-o", str(tmp_path / "alerts.jsonl"), "--config", str(CONFIG), "--report", str(report)]
    assert main(argv) == 0
    html = report.read_text(encoding="utf-8")
    assert '<h2 id="incidents">Incidents (9)</h2>' in html and html.count('<tr class="incident">') == 9
    assert "pages: 20 without incidents, 10 with them" in html
    (incident, *_) = run(EXAMPLE).incidents()
    hostile = Incident(**{**{f: getattr(incident, f) for f in incident.__dataclass_fields__},
                          "value": "<script>alert(1)</script>"})  # fmt: skip
    section = incidents_html([hostile], None)
    assert "<script>" not in section and "&lt;script&gt;alert(1)&lt;/script&gt;" in section
