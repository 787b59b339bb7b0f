"""Outputs cannot destroy inputs: the three attacks on backtest's files, and the atomic writer.

Each attack ran on a real file: ``backtest IN -o IN`` emptied the input, ``--deadletter`` pointed (through
a symbolic link) at the input destroyed it, and a run that failed on a missing input had already emptied
the previous alerts file."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.offline.outputs import AtomicOutput, OutputError, check_outputs

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "config")
EXAMPLE = ROOT / "examples" / "events.jsonl"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(EXAMPLE.read_bytes())
    return path


def _backtest(*argv: str) -> int:
    return main(["backtest", *argv, "--config", CONFIG])


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_output_that_is_the_input_is_refused_before_anything_is_written(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = log.read_bytes()
    assert _backtest(str(log), "-o", str(log)) == 2
    err = capsys.readouterr().err
    assert f"--output {log} is the input {log}" in err and err.count("\n") == 1
    assert log.read_bytes() == before


def test_dead_letters_through_a_link_to_the_input_are_refused(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "rejected.jsonl"
    link.symlink_to(log)
    hard = tmp_path / "hard.jsonl"
    os.link(log, hard)
    before = log.read_bytes()
    assert _backtest(str(log), "-o", str(tmp_path / "a.jsonl"), "--deadletter", str(link)) == 2
    assert f"--deadletter {link} is the input {log}" in capsys.readouterr().err
    assert _backtest(str(log), "-o", str(hard)) == 2  # a hard link: the same inode
    (tmp_path / "sub").mkdir()
    assert _backtest(str(log), "-o", str(tmp_path / "a.jsonl"), "--report", f"{tmp_path}/sub/../{log.name}") == 2
    assert log.read_bytes() == before and not (tmp_path / "a.jsonl").exists()


def test_two_outputs_that_are_one_file_are_refused(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    assert _backtest(str(log), "-o", str(out), "--deadletter", str(out)) == 2
    assert f"--output {out} and --deadletter {out} are the same file" in capsys.readouterr().err
    assert not out.exists()


def test_a_failing_run_keeps_the_previous_outputs_byte_identical(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts, dead = tmp_path / "alerts.jsonl", tmp_path / "dead.jsonl"
    alerts.write_bytes(b"previous alerts\n")
    dead.write_bytes(b"previous dead letters\n")
    assert _backtest(str(tmp_path / "missing.jsonl"), "-o", str(alerts), "--deadletter", str(dead)) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    # A run that fails half-way: the second log is refused (a compression bomb) after the first was read.
    bomb = tmp_path / "bomb.jsonl.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb.write_bytes(b"".join(compressor.compress(b"\x00" * 1024 * 1024) for _ in range(40)) + compressor.flush())
    assert _backtest(str(log), str(bomb), "-o", str(alerts), "--deadletter", str(dead)) == 2
    assert "bomb.jsonl.gz: refused: expands" in capsys.readouterr().err
    assert alerts.read_bytes() == b"previous alerts\n" and dead.read_bytes() == b"previous dead letters\n"
    assert _leftovers(tmp_path) == []


def test_a_successful_run_replaces_the_outputs(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alerts, dead = tmp_path / "alerts.jsonl", tmp_path / "dead.jsonl"
    alerts.write_bytes(b"previous alerts\n")
    dead.write_bytes(b"previous dead letters\n")
    os.chmod(alerts, 0o640)
    mixed = tmp_path / "mixed.jsonl.gz"
    mixed.write_bytes(gzip.compress(log.read_bytes() + b"{oops\n"))
    assert _backtest(str(mixed), "-o", str(alerts), "--deadletter", str(dead)) == 0
    assert alerts.read_bytes().count(b"\n") == 57 and alerts.stat().st_mode & 0o777 == 0o640
    assert b'"reason": "invalid_json"' in dead.read_bytes()
    assert _backtest(str(log), "-o", str(alerts), "--deadletter", str(dead)) == 0
    assert dead.read_bytes() == b""  # this run rejected nothing: the file says so
    assert _leftovers(tmp_path) == []


def test_writing_to_dev_null_is_not_a_conflict(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _backtest(str(log), "-o", os.devnull, "--deadletter", os.devnull) == 0
    assert Path(os.devnull).is_char_device()


def test_the_atomic_writer_keeps_the_old_file_on_any_exception(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)), AtomicOutput(target) as fh:
            fh.write("half of the new content")
            raise error
        assert target.read_text() == "old\n" and _leftovers(tmp_path) == []
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with AtomicOutput(link) as fh:
        fh.write("new\n")
    assert link.is_symlink() and target.read_text() == "new\n"  # written through the link, as open() would
    with pytest.raises(OutputError, match="cannot write"):
        AtomicOutput(tmp_path / "no" / "such" / "dir.txt").open()


def test_check_outputs_ignores_outputs_not_asked_for(tmp_path: Path) -> None:
    check_outputs([str(tmp_path / "in.jsonl")], {"--output": str(tmp_path / "out.jsonl"), "--deadletter": None})


def test_normalize_refuses_to_write_over_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "okta.jsonl"
    raw.write_bytes(b'{"uuid": "x"}\n')
    assert main(["normalize", "--input", f"okta={raw}", "-o", str(tmp_path / "e.jsonl"), "--deadletter", str(raw)]) == 2
    assert f"--deadletter {raw} is the input {raw}" in capsys.readouterr().err
    assert raw.read_bytes() == b'{"uuid": "x"}\n' and not (tmp_path / "e.jsonl").exists()
