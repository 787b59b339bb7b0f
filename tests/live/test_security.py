"""Secrets stay secret; alerts can carry pseudonyms instead of target ids; endpoints bind to loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.config.kafka import kafka_client_kwargs
from streams.config.loader import load_rules
from streams.config.settings import Settings, load_settings
from streams.offline.backtest import run_backtest
from tests.worker_harness import REPO

EXAMPLE = str(REPO / "examples" / "events.jsonl")


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MODWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("MODWATCH_KAFKA__SASL_USERNAME", "modwatch")
    monkeypatch.setenv("MODWATCH_KAFKA__SASL_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("MODWATCH_PSEUDONYMIZE_KEY", "another-secret-key-of-32-bytes-or-more")
    monkeypatch.setenv("MODWATCH_SETTINGS", str(REPO / "tests" / "fixtures" / "empty-settings.yaml"))
    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2-very-secret"
    for shown in (repr(settings), str(settings), json.dumps(settings.redacted())):
        assert "hunter2" not in shown and "another-secret" not in shown
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "another-secret" not in out and "**********" in out
    assert "SCRAM-SHA-512" in out
    config = kafka_client_kwargs(settings.kafka)
    assert config["sasl_plain_password"] == "hunter2-very-secret"  # only handed to the client
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"


def test_help_shows_no_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODWATCH_KAFKA__SASL_PASSWORD", "hunter2-very-secret")
    for command in (["worker", "--help"], ["replay", "--help"], ["settings", "--help"], ["--help"]):
        assert main(command) == 0
    assert "hunter2" not in capsys.readouterr().out


def test_endpoints_bind_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("MODWATCH_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.metrics_host == "127.0.0.1"
    from streams.live.app import _faust_settings

    faust = _faust_settings(settings)
    assert faust["web_bind"] == "127.0.0.1" and faust["web_host"] == "127.0.0.1"


def test_pseudonymised_alerts_hide_target_ids_consistently() -> None:
    rules = load_rules(REPO / "config")
    plain = run_backtest([EXAMPLE], rules).alerts
    masked = run_backtest([EXAMPLE], rules, pseudonymize=b"k1" * 16).alerts
    again = run_backtest([EXAMPLE], rules, pseudonymize=b"k1" * 16).alerts
    other = run_backtest([EXAMPLE], rules, pseudonymize=b"k2" * 16).alerts
    assert len(masked) == len(plain) > 20
    assert [a.to_json() for a in masked] == [a.to_json() for a in again]  # consistent: analysts can correlate
    assert [a.alert_id for a in masked] != [a.alert_id for a in other]  # keyed
    target_ids = set()
    for line in Path(EXAMPLE).read_text().splitlines():
        event = json.loads(line)
        for target in [event.get("target"), *event.get("targets", [])]:
            if isinstance(target, dict):
                target_ids.add(target["id"])
                if target.get("owner_id"):
                    target_ids.add(target["owner_id"])
    # Everything an alert says about its incident (the title is the rule's own text).
    text = "\n".join(json.dumps({**a.to_dict(), "title": ""}) for a in masked)
    leaked = sorted(t for t in target_ids if f'"{t}"' in text or f" {t} " in text or f"={t}" in text)
    assert leaked == []
    assert "p_" in text
    # The rest of the incident is intact: same rules, severities and actors (employees; a reporter, the
    # actor of a report, is pseudonymised: tests/core/test_pseudonymize.py).
    assert [(a.rule_id, a.severity) for a in masked] == [(a.rule_id, a.severity) for a in plain]
    employees = [(a.rule_id, a.actor_id) for a in plain if a.rule_id != "fabricated_reports"]
    assert [(a.rule_id, a.actor_id) for a in masked if a.rule_id != "fabricated_reports"] == employees
