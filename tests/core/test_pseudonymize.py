"""Pseudonymisation: every person's id the alerts carry is replaced, the employees' stay; short keys
are refused wherever a key comes from; alerts without a key are unchanged, byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from streams.cli.main import main
from streams.config.loader import load_rules
from streams.config.settings import load_settings
from streams.core.alerts import MIN_KEY_BYTES, Pseudonymizer
from streams.core.ruleset import ConfigError
from streams.offline.backtest import run_backtest
from tests.worker_harness import REPO

EXAMPLE = str(REPO / "examples" / "events.jsonl")
KEY = b"0123456789abcdef0123456789abcdef"  # 32 bytes
PLAIN_SHA256 = "d3e6246135c3297fb101d4d7a557c72cfac1425d3003677a845a2a45bf289aab"


def _events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(EXAMPLE).read_text(encoding="utf-8").splitlines()]


def _person_ids() -> set[str]:
    """Targets, owners (of a target or a request's targets) and reporters (actors of report.filed)."""
    ids: set[str] = set()
    for event in _events():
        for target in [event.get("target"), *event.get("targets", [])]:
            if isinstance(target, dict):
                ids.update(str(target[k]) for k in ("id", "owner_id") if target.get(k))
        if event["event_type"] == "report.filed":
            ids.add(event["actor"]["id"])
    return ids - _employee_ids()


def _employee_ids() -> set[str]:
    """Actors of everything but reports, and grantees: in clear, even where they are also a target."""
    ids = {e["actor"]["id"] for e in _events() if e["event_type"] != "report.filed"}
    return ids | {e["grantee"]["id"] for e in _events() if isinstance(e.get("grantee"), dict)}


def _contains(text: str, value: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text) is not None


def test_no_persons_id_reaches_the_alerts_and_each_maps_to_one_pseudonym() -> None:
    rules = load_rules(REPO / "config")
    plain = run_backtest([EXAMPLE], rules).alerts
    masked = run_backtest([EXAMPLE], rules, pseudonymize=KEY).alerts
    assert len(plain) == len(masked) > 20
    persons = _person_ids()
    reporters = {e["actor"]["id"] for e in _events() if e["event_type"] == "report.filed"} - _employee_ids()
    assert reporters and persons > reporters
    # Everything an alert says about its incident (the title is the rule's own text: "new accounts").
    everything = "\n".join(json.dumps({**a.to_dict(), "title": ""}) for a in masked)
    assert sorted(p for p in persons if _contains(everything, p)) == []
    pseudo = Pseudonymizer(KEY)
    shown = 0
    for before, after in zip(plain, masked, strict=True):
        assert (before.rule_id, before.severity) == (after.rule_id, after.severity)
        before_text, after_text = (json.dumps({**a.to_dict(), "title": ""}) for a in (before, after))
        for person in persons:
            if _contains(before_text, person):  # the same pseudonym wherever this person appears
                assert _contains(after_text, pseudo(person)), (after.rule_id, person)
                shown += 1
    assert shown > 20  # many alerts name a target, an owner or a reporter
    reported = [a for a in masked if a.rule_id == "fabricated_reports"]
    assert reported and all(a.actor_id is not None and a.actor_id.startswith("p_") for a in reported)
    # Employees under investigation stay in clear: actors of actions and exports, grantees.
    kept = [(a.rule_id, a.actor_id) for a in masked if a.rule_id != "fabricated_reports"]
    assert kept == [(a.rule_id, a.actor_id) for a in plain if a.rule_id != "fabricated_reports"]
    assert any(a.group_key.startswith("grantee.id=emp-") for a in masked)


def test_group_keys_naming_persons_are_pseudonymised() -> None:
    pseudo = Pseudonymizer(KEY)
    report = {"event_type": "report.filed", "actor": {"id": "usr-1"}}
    action = {"event_type": "account.suspend", "actor": {"id": "emp-1"}}
    assert pseudo.group_key("target.owner_id=usr-9") == f"target.owner_id={pseudo('usr-9')}"
    assert pseudo.group_key("targets.id=usr-9") == f"targets.id={pseudo('usr-9')}"
    assert pseudo.group_key("actor.id=usr-1", report) == f"actor.id={pseudo('usr-1')}"
    assert pseudo.group_key("actor.id=emp-1", action) == "actor.id=emp-1"
    assert pseudo.group_key("grantee.id=emp-2") == "grantee.id=emp-2"
    request = {"event_type": "request.received", "targets": [{"id": "u1", "owner_id": "u2"}, "odd"]}
    assert pseudo.view(request) == {**request, "targets": [{"id": pseudo("u1"), "owner_id": pseudo("u2")}, "odd"]}


def test_short_keys_are_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                tmp_path: Path) -> None:  # fmt: skip
    short = "k" * (MIN_KEY_BYTES - 1)
    with pytest.raises(ValueError, match=f"at least {MIN_KEY_BYTES} bytes"):
        Pseudonymizer(short.encode())
    monkeypatch.setenv("SHORT_KEY", short)
    out = str(tmp_path / "alerts.jsonl")
    assert main(["backtest", EXAMPLE, "-o", out, "--config", str(REPO / "config"),
                 "--pseudonymize-key-env", "SHORT_KEY"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"SHORT_KEY: the key is {MIN_KEY_BYTES - 1} bytes, at least {MIN_KEY_BYTES}" in err and short not in err
    monkeypatch.setenv("MODWATCH_SETTINGS", str(REPO / "tests" / "fixtures" / "empty-settings.yaml"))
    monkeypatch.setenv("MODWATCH_PSEUDONYMIZE_KEY", short)
    with pytest.raises(ConfigError, match=f"pseudonymize_key: .*at least {MIN_KEY_BYTES}") as info:
        load_settings()
    assert short not in str(info.value)
    monkeypatch.setenv("MODWATCH_PSEUDONYMIZE_KEY", KEY.decode())
    assert load_settings().pseudonymize_key is not None


def test_alerts_without_a_key_are_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    assert main(["backtest", EXAMPLE, "-o", str(out), "--config", str(REPO / "config")]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == PLAIN_SHA256
