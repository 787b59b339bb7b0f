"""The README's first command, headless: broker, worker, replay, alerts on screen."""

from __future__ import annotations

import io
import socket

import pytest

from streams.config.loader import load_rules
from streams.core.ruleset import ConfigError
from streams.offline.backtest import run_backtest
from streams.tools.demo import HEADER, format_row, metrics_endpoint, run_demo
from tests.worker_harness import REPO

ALERT = {"alert_id": "3abd4daf9ec4896708b5344e", "severity": "critical", "rule_id": "rapid_takedown",
         "last_seen": "2020-06-03T12:00:59.000Z", "summary": "4 takedowns in 59 s"}  # fmt: skip


def test_rows_show_the_alert_id_under_the_header() -> None:
    row = format_row(ALERT)
    assert row == ("2020-06-03 12:00:59  critical  rapid_takedown            3abd4daf9ec4896708b5344e  "
                   "4 takedowns in 59 s")
    assert row.index("3abd4daf") == HEADER.index("alert id")


def test_rows_clean_control_characters_from_event_text() -> None:
    hostile = dict(ALERT, summary="takedown \x1b]0;owned\x07 of \x1b[2J\u202eevil\nnext", rule_id="r\x1b[31m")
    row = format_row(hostile, colour=True)
    assert "\x07" not in row and "\u202e" not in row and "\n" not in row
    assert row.count("\x1b") == 2  # only the demo's own colour on the severity, and its reset
    assert "takedown ?]0;owned? of ?[2J?evil next" in row and "r?[31m" in row


def test_a_busy_metrics_port_is_named_and_the_demo_goes_on() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert metrics_endpoint("127.0.0.1", port) == (
            0, f"metrics  not served: cannot bind 127.0.0.1:{port} (Address already in use); "
               "--metrics-port 0 picks a free port",
        )  # fmt: skip
    assert metrics_endpoint("127.0.0.1", port) == (port, f"metrics  http://127.0.0.1:{port}/metrics")


def test_the_worker_names_the_metrics_address_it_cannot_bind() -> None:
    from prometheus_client import CollectorRegistry

    from streams.outputs.metrics import serve

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^metrics: cannot bind 127\.0\.0\.1:{port} \(Address already in use\)"):
            serve(CollectorRegistry(), "127.0.0.1", port)


@pytest.mark.broker
def test_demo_runs_end_to_end_and_prints_critical_alerts(monkeypatch):
    monkeypatch.chdir(REPO)
    out = io.StringIO()
    code = run_demo("examples/events.jsonl", config_dir="config", idle_exit=8.0, metrics_port=0, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "metrics  http://127.0.0.1:" in text
    assert "explain  modwatch explain ALERT_ID --log examples/events.jsonl --config config" in text
    rows = [line for line in text.splitlines() if line[:4] == "2020"]
    expected = run_backtest(["examples/events.jsonl"], load_rules("config")).alerts
    assert len(rows) == len(expected), text
    assert {row.split()[4] for row in rows} == {a.alert_id for a in expected}  # ids `explain` accepts
    critical = [row for row in rows if "  critical  " in row]
    assert any("rapid_takedown" in row and "Ministry of State Security" in row for row in critical), text
    assert f"({len(expected)} alerts)" in text


@pytest.mark.broker
def test_demo_raw_publishes_context_replays_raw_logs_and_prints_the_raw_backtest_alerts(monkeypatch):
    from streams.inputs import load_mappings, resolve_inputs_dir
    from streams.inputs.context_files import load_context
    from streams.offline.raw_backtest import run_raw_backtest
    from streams.tools.demo import CONTEXT_DIR, raw_inputs

    monkeypatch.chdir(REPO)
    out = io.StringIO()
    code = run_demo(config_dir="config", idle_exit=8.0, metrics_port=0, out=out, raw=True)
    text = out.getvalue()
    assert code == 0, text
    assert "context  7 staff, 5 accounts, 2 tickets rows from examples/context" in text
    assert "--input okta=examples/raw/okta.jsonl --context examples/context" in text
    expected = run_raw_backtest(raw_inputs(), load_mappings(resolve_inputs_dir(None)), load_rules("config"),
                                context=load_context(CONTEXT_DIR)).backtest.alerts  # fmt: skip
    rows = [line for line in text.splitlines() if line[:4] == "2024"]
    assert {row.split()[4] for row in rows} == {a.alert_id for a in expected}, text
    assert f"({len(expected)} alerts)" in text
