"""``modwatch normalize`` end to end: two sources merged in event time, stable bytes across runs, a
redelivered record keeping its event id, dead letters, the summary; then a backtest of the output
raising the rapid-takedown alert. Also unwrap/explode ids and the input commands' exit codes."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from streams.cli.main import main
from streams.config.loader import bundled_rules_dir, load_rules
from streams.inputs import Mapped, Mapping, bundled_inputs_dir, load_mappings
from streams.inputs.mapping import MappingSpec
from streams.offline.backtest import run_backtest
from streams.offline.normalize import format_summary, normalize

REGISTER = """\
request_id,received_at,agency,requester_kind,jurisdiction,request_kind,targets,\
deadline_seconds,confidential
REQ-1,2020-06-03T12:00:00Z,Ministry of State Security,government,CN,takedown,account:dissident@example.org:HK,60,true
REQ-2,2020-06-03T13:00:00Z,A Court,court,Germany,preservation,account:x:DE,,no
REQ-3,2020-06-03T11:00:00Z,A Court,court,Atlantis,user_data,account:x:DE,,no
"""


def _okta(uuid: str, published: str, event_type: str = "user.lifecycle.suspend") -> str:
    return json.dumps({
        "uuid": uuid, "published": published, "eventType": event_type,
        "actor": {"alternateId": "liaison@example.com", "type": "User"},
        "client": {"geographicalContext": {"country": "Hong Kong"}},
        "outcome": {"result": "SUCCESS"},
        "target": [{"alternateId": "dissident@example.org", "type": "User"}],
    })  # fmt: skip


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, Path]:
    register = tmp_path / "register.csv"
    register.write_text(REGISTER, encoding="utf-8")
    okta = tmp_path / "okta.jsonl.gz"
    lines = [
        _okta("u-suspend", "2020-06-03T12:00:20.123Z"),
        _okta("u-login", "2020-06-03T11:59:00Z", "user.session.start"),
        _okta("u-early", "2020-06-03T11:30:00Z", "user.lifecycle.deactivate"),
        "not json",
        _okta("u-suspend", "2020-06-03T12:00:20.123Z"),  # redelivered
    ]
    okta.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return {"requests-csv": register, "okta": okta}


def _run(logs: dict[str, Path], tmp_path: Path) -> tuple[str, Any]:
    out = io.StringIO()
    result = normalize([(name, str(path)) for name, path in logs.items()], load_mappings(bundled_inputs_dir()), out,
                       deadletter=str(tmp_path / "dead.jsonl"))  # fmt: skip
    return out.getvalue(), result


def test_two_sources_merged_in_event_time_with_stable_ids(logs: dict[str, Path], tmp_path: Path) -> None:
    text, result = _run(logs, tmp_path)
    events = [json.loads(line) for line in text.splitlines()]
    assert [e["event_id"] for e in events] == ["u-early", "request:REQ-1", "u-suspend", "u-suspend"]
    assert [e["occurred_at"] for e in events] == sorted(e["occurred_at"] for e in events)
    assert all(line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
               for line in text.splitlines())  # fmt: skip
    again, _ = _run(logs, tmp_path)
    assert again == text  # same bytes, same ids, run after run
    requests, okta = result.sources
    assert (requests.read, requests.mapped, dict(requests.dropped), dict(requests.rejected)) == (
        3, 1, {"preservation": 1}, {"conversion_failed": 1})
    assert (okta.read, okta.mapped, dict(okta.dropped), dict(okta.rejected)) == (
        5, 3, {"user.session.start": 1}, {"invalid_json": 1})
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["line"]) for d in dead] == [("conversion_failed", 4), ("invalid_json", 4)]
    assert dead[0]["detail"].startswith("requests-csv: requester.jurisdiction:")
    summary = "\n".join(format_summary(result))
    assert "okta (" in summary and "user.session.start 1" in summary and "4 events written" in summary


def test_the_output_raises_a_rapid_takedown_alert(logs: dict[str, Path], tmp_path: Path) -> None:
    text, _ = _run(logs, tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_text(text, encoding="utf-8")
    alerts = io.StringIO()
    result = run_backtest([str(events)], load_rules(bundled_rules_dir()), output=alerts)
    fired = [json.loads(line) for line in alerts.getvalue().splitlines()]
    rapid = [a for a in fired if a["rule_id"] == "rapid_takedown"]
    assert len(rapid) == 1, fired
    assert result.duplicates == 1  # the redelivered suspension is the same event


def test_unwrap_and_explode_give_distinct_deterministic_ids() -> None:
    spec = MappingSpec.model_validate({
        "id": "hooks", "version": 1, "description": "event hook batches of activities", "unwrap": "data.events",
        "explode": "events", "action": "item.name", "actions": {"SUSPEND_USER": "account.suspend"},
        "time": {"path": "time", "convert": "rfc3339"}, "event_id": {"hash": ["id", "item.name"]},
        "fields": {"actor.id": "actor", "actor.kind": {"const": "employee"}, "actor.region": {"const": "ZZ"},
                   "target.kind": {"const": "account"}, "target.id": "item.user", "target.region": {"const": "ZZ"}},
    })  # fmt: skip
    mapping = Mapping(spec)
    activity = {"id": "a1", "time": "2020-06-03T12:00:00Z", "actor": "admin",
                "events": [{"name": "SUSPEND_USER", "user": "u1"}, {"name": "SUSPEND_USER", "user": "u2"},
                           {"name": "CHANGE_PASSWORD"}]}  # fmt: skip
    first = mapping.map({"data": {"events": [activity]}})
    second = mapping.map({"data": {"events": [activity]}})
    ids = [o.event["event_id"] for o in first if isinstance(o, Mapped)]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert ids == [o.event["event_id"] for o in second if isinstance(o, Mapped)]
    assert [type(o).__name__ for o in first] == ["Mapped", "Mapped", "Dropped"]
    assert [o.reason for o in mapping.map({"data": {}})] == ["unwrap_missing"]  # type: ignore[union-attr]


def test_input_commands(logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["normalize", "--input", f"okta={logs['okta']}", "--input", f"requests-csv={logs['requests-csv']}",
                 "-o", str(out)]) == 0  # fmt: skip
    assert len(out.read_text().splitlines()) == 4
    assert main(["normalize", "--input", f"nosuch={logs['okta']}", "-o", str(out)]) == 2
    assert "no mapping 'nosuch'" in capsys.readouterr().err
    assert main(["normalize", "--input", "okta", "-o", str(out)]) == 2
    shipped = len(list(bundled_inputs_dir().glob("*.yaml")))
    assert main(["inputs", "validate"]) == 0 and f"{shipped} mappings OK" in capsys.readouterr().out
    assert main(["inputs", "list"]) == 0 and "user.lifecycle.suspend -> account.suspend" in capsys.readouterr().out
    assert main(["inputs", "test"]) == 0

    broken = tmp_path / "inputs"
    (broken / "fixtures").mkdir(parents=True)
    for name in ("okta.yaml", "fixtures/okta.yaml"):
        text = (bundled_inputs_dir() / name).read_text(encoding="utf-8")
        (broken / name).write_text(text.replace("region: HK}", "region: CN}"), encoding="utf-8")
    capsys.readouterr()
    assert main(["inputs", "test", "--inputs", str(broken), "okta"]) == 1
    assert "FAIL okta" in capsys.readouterr().out


def test_an_over_long_line_is_a_too_large_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "okta.jsonl"
    path.write_text(_okta("u-1", "2020-06-03T12:00:20Z") + "\n" + json.dumps({"pad": "x" * 5000}) + "\n")
    from streams.core.decode import Limits

    result = normalize([("okta", str(path))], load_mappings(bundled_inputs_dir()), io.StringIO(),
                       limits=Limits(max_bytes=2048))  # fmt: skip
    assert dict(result.sources[0].rejected) == {"too_large": 1} and result.written == 1
