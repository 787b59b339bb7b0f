"""Service settings: defaults, the YAML file, the environment and flags, in that order of strength."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.config.settings import Settings, load_settings
from streams.core.ruleset import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MODWATCH_"):
            monkeypatch.delenv(name)


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "modwatch.yaml"
    path.write_text("bootstrap_servers: file:9092\ntopics:\n  partitions: 3\n  alerts: file.alerts\n")
    settings = load_settings(str(path))
    assert settings.bootstrap_servers == "file:9092"
    assert settings.topics.partitions == 3 and settings.topics.alerts == "file.alerts"
    assert settings.topics.deadletter == "modwatch.deadletter"  # untouched defaults stay
    monkeypatch.setenv("MODWATCH_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("MODWATCH_TOPICS__PARTITIONS", "5")
    settings = load_settings(str(path))
    assert settings.bootstrap_servers == "env:9092" and settings.topics.partitions == 5
    assert load_settings(str(path), bootstrap_servers="flag:9092").bootstrap_servers == "flag:9092"


def test_the_shipped_settings_file_is_all_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.config.settings import Settings

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    assert load_settings("config/modwatch.yaml") == Settings()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("topics:\n  partitions: 0\n", "topics.partitions"),
        ("metrics_port: lots\n", "metrics_port"),
        ("bootstrap: x\n", "bootstrap"),
        ("kafka:\n  security_protocol: CARRIER_PIGEON\n", "kafka.security_protocol"),
        ("[1, 2]\n", "expected a mapping"),
    ],
)
def test_a_bad_settings_file_names_the_file_and_field(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_settings(str(path))
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_worker_refuses_a_bad_settings_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("lateness_seconds: -5\n")
    assert main(["worker", "--settings", str(path), "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "lateness_seconds" in err and err.count("\n") == 1


def test_standby_replicas_reach_faust() -> None:
    from streams.live.app import _faust_settings

    assert _faust_settings(Settings())["table_standby_replicas"] == 0  # not Faust's 1: STANDBY_NOTE
    assert _faust_settings(Settings(standby_replicas=1))["table_standby_replicas"] == 1


def test_worker_says_what_standby_replicas_cost(caplog: pytest.LogCaptureFixture) -> None:
    from streams.config.loader import load_rules
    from streams.live.app import create_app

    ruleset = load_rules(Path(__file__).resolve().parents[2] / "config")
    with caplog.at_level(logging.INFO, logger="streams.live.app"):
        create_app(Settings(standby_replicas=1, app_id="standby-note"), ruleset)
    assert [r.getMessage() for r in caplog.records if "standby_replicas is 1" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streams.live.app"):
        create_app(Settings(app_id="standby-quiet"), ruleset)
    assert not [r for r in caplog.records if "standby_replicas" in r.getMessage()]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alertmanager:9093", "http://alertmanager:9093"),
        ("http://alice:s3cret@alertmanager:9093/", "http://alice:***@alertmanager:9093/"),
        ("http://alice@alertmanager:9093", "http://alice@alertmanager:9093"),
        ("https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx",
         "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/***"),
        ("https://discord.com/api/webhooks/123456789012345678/AbC-dEf_ghij0123456789",
         "https://discord.com/api/webhooks/***/***"),
        ("https://chat.example/hook?token=abc&room=ops&flag#sig", "https://chat.example/hook?token=***&room=***&***#***"),
        ("http://[::1]:9093/api/v2", "http://[::1]:9093/api/v2"),
        ("alice:s3cret@alertmanager", "***"),  # not scheme://host: nothing of it is shown
        ("http://h:99999/", "***"),
    ],
)  # fmt: skip
def test_redact_url(url: str, shown: str) -> None:
    from streams.config.settings import redact_url

    assert redact_url(url) == shown


def test_settings_command_hides_url_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODWATCH_WEBHOOK_URL", "https://hooks.example/services/T1/B2/Zx9secretsecretsecret?key=k3y")
    monkeypatch.setenv("MODWATCH_ALERTMANAGER_URL", "http://am-user:am-pass@alertmanager:9093")
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "webhook_url: https://hooks.example/services/T1/B2/***?key=***\n" in out
    assert "alertmanager_url: http://am-user:***@alertmanager:9093\n" in out
    for secret in ("Zx9secret", "k3y", "am-pass"):
        assert secret not in out
