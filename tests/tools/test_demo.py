"""The README's first command, headless: broker, worker, replay, alerts on screen."""

from __future__ import annotations

import io

import pytest

from streams.config.loader import load_rules
from streams.offline.backtest import run_backtest
from streams.tools.demo import run_demo
from tests.worker_harness import REPO

pytestmark = pytest.mark.broker


def test_demo_runs_end_to_end_and_prints_critical_alerts(monkeypatch):
    monkeypatch.chdir(REPO)
    out = io.StringIO()
    code = run_demo("examples/events.jsonl", config_dir="config", idle_exit=8.0, metrics_port=0, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "metrics  http://127.0.0.1:" in text
    rows = [line for line in text.splitlines() if line[:4] == "2020"]
    expected = run_backtest(["examples/events.jsonl"], load_rules("config")).alerts
    assert len(rows) == len(expected), text
    critical = [row for row in rows if "  critical  " in row]
    assert any("rapid_takedown" in row and "Ministry of State Security" in row for row in critical), text
    assert f"({len(expected)} alerts)" in text
