"""``modwatch rules diff``, ``modwatch explain`` and ``backtest --explain/--report`` through ``main``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.config.loader import load_rules
from streams.offline.backtest import run_backtest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
LOG = str(ROOT / "examples" / "events.jsonl")


def tiananmen_id() -> str:
    alerts = run_backtest([LOG], load_rules(CONFIG)).alerts
    return next(a.alert_id for a in alerts if a.rule_id == "rapid_takedown" and "ev-000557" in a.event_ids)


@pytest.fixture
def tuned(tmp_path: Path) -> Path:
    target = tmp_path / "tuned"
    shutil.copytree(CONFIG, target)
    rules = target / "rules.yaml"
    text = rules.read_text(encoding="utf-8")
    assert text.count("    above: 1000\n") == 1
    rules.write_text(text.replace("    above: 1000\n", "    above: 30000\n"), encoding="utf-8")
    return target


def test_rules_diff(tuned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "diff", "--config", str(CONFIG), "--config", str(tuned), LOG]) == 0
    out = capsys.readouterr().out
    assert f"A: {CONFIG} (57 alerts)" in out and f"B: {tuned} (53 alerts)" in out
    assert "only A raises: 4  only B raises: 0  severity changed: 0" in out
    assert "bulk_export" in out and "0f13a289c355b2febaa6bda5" in out  # the Xinjiang export alert


def test_rules_diff_exit_code(tuned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "diff", "--config", str(CONFIG), "--config", str(tuned), LOG, "--exit-code"]) == 1
    assert main(["rules", "diff", "--config", str(CONFIG), "--config", str(CONFIG), LOG, "--exit-code"]) == 0
    assert "no differences" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rules", "diff", "--config", "config", LOG], "give --config exactly twice"),
        (["rules", "diff", "--config", "config", "--config", "config", "--config", "config", LOG], "got 3"),
        (["rules", "diff", "--config", "config", "--config", "no-such-dir", LOG], "no-such-dir: no such config"),
        (["rules", "diff", "--config", "config", "--config", "config", "missing.jsonl"], "missing.jsonl: no such file"),
        (["explain", "0123456789abcdef01234567", "--log", LOG], "no alert '0123456789abcdef01234567'"),
        (["explain", "abc", "--log", "missing.jsonl"], "missing.jsonl: no such file"),
        (["explain", "abc", "--log", LOG, "--config", "no-such-dir"], "no-such-dir: no such config"),
    ],
)
def test_errors_are_one_line_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(ROOT)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("modwatch: ") and message in err
    assert err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "diff", LOG]) == 2  # --config is required
    assert main(["explain", "abc"]) == 2  # --log is required
    assert "--log" in capsys.readouterr().err


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    alert_id = tiananmen_id()
    assert main(["explain", alert_id, "--log", LOG, "--config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    for expected in (alert_id, "rapid_takedown", "critical (score 100)", "condition (sequence)",
                     "ev-000557  request.received", "+24s  ev-000558  meeting.shutdown",
                     "Ministry of State Security", "+ foreign_requester", "severity critical (>= 80)"):  # fmt: skip
        assert expected in out, expected


def test_explain_several(capsys: pytest.CaptureFixture[str]) -> None:
    alerts = [a for a in run_backtest([LOG], load_rules(CONFIG)).alerts if a.rule_id == "unlogged_request"]
    ids = [tiananmen_id(), alerts[0].alert_id]
    assert main(["explain", *ids, "--log", LOG]) == 0
    out = capsys.readouterr().out
    assert out.index(ids[0]) < out.index(ids[1])
    assert "condition (absence)" in out


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "diff", "--help"]) == 0
    assert "modwatch rules diff --config config --config" in capsys.readouterr().out
    assert main(["explain", "--help"]) == 0
    assert "modwatch explain 3abd4daf9ec4896708b5344e --log examples/events.jsonl" in capsys.readouterr().out


def test_backtest_explain_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.html"
    argv = ["backtest", LOG, "--output", str(tmp_path / "a.jsonl"), "--explain", "--report", str(report)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    serious = [a for a in run_backtest([LOG], load_rules(CONFIG)).alerts if a.severity.label in ("high", "critical")]
    assert sum(1 for line in out.splitlines() if line.startswith("alert ")) == len(serious) == 20
    assert tiananmen_id() in out
    assert report.stat().st_size > 10_000


def test_backtest_report_unwritable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backtest", LOG, "--output", str(tmp_path / "a.jsonl"), "--report", str(tmp_path / "no" / "r.html")]
    assert main(argv) == 2
    assert "cannot write the report" in capsys.readouterr().err
