"""Event text never reaches a terminal raw: ids, reasons and targets carrying ESC sequences and C1
controls go through backtest (summary and --explain), explain, rules diff, replay and settings, and no
ESC (0x1b) or CSI (0x9b) comes out; the worker's log line for a failing rule shows the id escaped."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from streams.cli.main import main
from streams.config.loader import load_rules
from streams.core.engine import Engine
from tests.worker_harness import REPO

EXAMPLE = REPO / "examples" / "events.jsonl"
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x9b31m\x85\x1b[0m"


def _hostile_log(tmp_path: Path) -> Path:
    events = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        event: dict[str, Any] = json.loads(line)
        event["event_id"] += HOSTILE
        event["reason"] = "because" + HOSTILE
        for side in ("actor", "target", "grantee"):
            if isinstance(event.get(side), dict):
                event[side] = {**event[side], "id": event[side]["id"] + HOSTILE}
        events.append(json.dumps(event))
    events.append(json.dumps({"event_type": "account.suspend" + HOSTILE, "event_id": "x" + HOSTILE}))
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(events) + "\n", encoding="utf-8")
    return path


def _clean(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text
    assert not any(0x80 <= ord(c) < 0xA0 for c in text)


def test_commands_print_no_control_sequences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = str(_hostile_log(tmp_path))
    config = str(REPO / "config")
    other = tmp_path / "other"
    shutil.copytree(REPO / "config", other, symlinks=False, ignore=shutil.ignore_patterns("grafana", "prometheus"))
    rules = other / "rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("at_least: 3", "at_least: 2"), encoding="utf-8")
    alerts = tmp_path / "alerts.jsonl"
    assert main(["backtest", log, "-o", str(alerts), "--config", config, "--explain"]) == 0
    # split on "\n" only: the JSON keeps U+0085 unescaped, and str.splitlines would cut a line there
    ids = [json.loads(line)["alert_id"] for line in alerts.read_text(encoding="utf-8").split("\n") if line]
    assert len(ids) > 20
    monkeypatch.setenv("MODWATCH_SETTINGS", str(REPO / "tests" / "fixtures" / "empty-settings.yaml"))
    monkeypatch.setenv("MODWATCH_APP_ID", "modwatch" + HOSTILE)
    for argv in (
        ["explain", *ids, "--log", log, "--config", config],
        ["rules", "diff", log, "--config", config, "--config", str(other), "--limit", "0"],
        ["replay", log, "--dry-run", "--deadletter", str(tmp_path / "dead.jsonl")],
        ["settings"],
    ):
        main(argv)
    out = capsys.readouterr()
    assert "severity changed (" in out.out and "condition (" in out.out  # diff and explain had text to show
    _clean(out.out)
    _clean(out.err)


def test_a_failing_rules_log_line_escapes_the_event_id(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(load_rules(REPO / "config"))
    rule = engine.rules[0]
    with caplog.at_level(logging.ERROR, logger="streams.core.engine"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            engine._rule_error(rule, {"event_id": "ev-1" + HOSTILE})
    message = caplog.records[-1].getMessage()
    assert message.startswith(f"rule {rule.id} failed on event 'ev-1")
    _clean(message)
