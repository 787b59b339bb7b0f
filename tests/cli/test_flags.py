"""Numeric flags are checked as strictly as the MODWATCH_* settings (streams/config/settings.py): a value
the environment would refuse is refused on the command line too, with exit 2 and the flag named."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
LOG = str(ROOT / "examples" / "events.jsonl")
CONFIG = str(ROOT / "config")

REFUSED = [
    (["backtest", LOG, "-o", "/dev/null", "--lateness", "-100"], "--lateness", "must be >= 0"),
    (["backtest", LOG, "-o", "/dev/null", "--lateness", "nan"], "--lateness", "not a finite number"),
    (["backtest", LOG, "-o", "/dev/null", "--max-record-bytes", "-1"], "--max-record-bytes", "at least 1024"),
    (["backtest", LOG, "-o", "/dev/null", "--max-record-bytes", "1e6"], "--max-record-bytes", "not an integer"),
    (["replay", LOG, "--dry-run", "--speed", "0"], "--speed", "must be > 0"),
    (["replay", LOG, "--dry-run", "--rate", "-5"], "--rate", "must be > 0"),
    (["replay", LOG, "--dry-run", "--partitions", "0"], "--partitions", "between 1 and 256"),
    (["worker", "--partitions", "1000"], "--partitions", "between 1 and 256"),
    (["demo", "--metrics-port", "70000"], "--metrics-port", "between 0 and 65535"),
    (["demo", "--exit-after-idle", "-1"], "--exit-after-idle", "must be > 0"),
    (["generate", "--events", "-5", "-o", "/dev/null"], "--events", "at least 0"),
    (["generate", "--events", "5", "--events-per-day", "0", "-o", "/dev/null"], "--events-per-day", "must be > 0"),
    (["rules", "diff", "--config", CONFIG, "--config", CONFIG, LOG, "--limit", "-1"], "--limit", "at least 0"),
    (["rules", "diff", "--config", CONFIG, "--config", CONFIG, LOG, "--lateness", "-1"], "--lateness", ">= 0"),
    (["explain", "abc", "--log", LOG, "--max-record-bytes", "0"], "--max-record-bytes", "at least 1024"),
    (["explain", "abc", "--log", LOG, "--lateness", "inf"], "--lateness", "not a finite number"),
]


@pytest.mark.parametrize(("argv", "flag", "why"), REFUSED, ids=[f"{a[0]} {f} {a[-1]}" for a, f, _ in REFUSED])
def test_out_of_range_flags_exit_2_naming_the_flag(
    argv: list[str], flag: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and why in err, err


def test_the_environment_refuses_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.config.loader import ConfigError
    from streams.config.settings import load_settings

    for name, value in (("MODWATCH_LATENESS_SECONDS", "-100"), ("MODWATCH_MAX_RECORD_BYTES", "-1")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ConfigError):
                load_settings(None)


def test_values_in_range_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "a.jsonl")
    assert main(["backtest", LOG, "-o", out, "--config", CONFIG, "--lateness", "0", "--max-record-bytes", "1024"]) == 0
