"""`modwatch backtest --jobs N` gives the bytes of `--jobs 1`: the alerts file (same order), the dead
letters and the summary's counts, on the example, a generated log, and one with late, duplicated,
conflicting and broken lines."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.tools.generate import write_log
from tests.worker_harness import REPO

EXAMPLE = REPO / "examples" / "events.jsonl"
CONFIG = str(REPO / "config")
TIMING = re.compile(r"\(\d+\.\ds, [\d,]+ events/s\)")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "g20k.jsonl"
    write_log(str(path), 20_000, seed=1, incidents=True)
    return path


def _ts(line: str) -> float:
    return datetime.fromisoformat(json.loads(line)["occurred_at"].replace("Z", "+00:00")).timestamp()


def disordered(source: Path, target: Path, seed: int = 3) -> Path:
    """``source`` with some events moved later by up to 10 minutes of event time (late past the 300 s
    lateness, or not), some lines delivered twice, ids reused with other content, and broken lines."""
    rng = random.Random(seed)
    lines = source.read_text().splitlines()
    times = [_ts(line) for line in lines]
    for index in sorted(rng.sample(range(len(lines) - 1), len(lines) // 50), reverse=True):
        stop = index + 1
        while stop < len(lines) and times[stop] - times[index] < rng.uniform(0, 600):
            stop += 1
        lines.insert(stop, lines.pop(index))
        times.insert(stop, times.pop(index))
    for index in rng.sample(range(len(lines)), len(lines) // 100):  # redeliveries, a little later
        lines.insert(min(index + rng.randint(1, 40), len(lines)), lines[index])
    for index in rng.sample(range(len(lines)), 5):  # an id reused with other content
        event = json.loads(lines[index])
        event["actor"] = {**event["actor"], "id": "emp-conflict"}
        lines.insert(min(index + 30, len(lines)), json.dumps(event))
    for index in rng.sample(range(len(lines)), 5):
        lines.insert(index, '{"event_id": "broken", ')
    target.write_text("\n".join(lines) + "\n")
    return target


def backtest(log: Path, out_dir: Path, jobs: int, capsys: pytest.CaptureFixture[str]) -> tuple[bytes, bytes, str]:
    out_dir.mkdir()
    alerts, dead = out_dir / "alerts.jsonl", out_dir / "dead.jsonl"
    capsys.readouterr()
    code = main(["backtest", str(log), "--config", CONFIG, "-o", str(alerts), "--deadletter", str(dead),
                 "--jobs", str(jobs)])  # fmt: skip
    assert code == 0
    summary = TIMING.sub("", capsys.readouterr().err).replace(str(out_dir), "")
    return alerts.read_bytes(), dead.read_bytes(), summary


def assert_identical(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: tuple[int, ...]) -> str:
    one = backtest(log, tmp_path / "jobs1", 1, capsys)
    for n in jobs:
        many = backtest(log, tmp_path / f"jobs{n}", n, capsys)
        assert many[0] == one[0], f"--jobs {n}: alerts differ"
        assert many[1] == one[1], f"--jobs {n}: dead letters differ"
        assert many[2] == one[2], f"--jobs {n}: summary differs"
    return one[2]


def test_the_example_is_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_identical(EXAMPLE, tmp_path, capsys, (2, 3))


def test_a_generated_log_is_byte_identical(generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = assert_identical(generated, tmp_path, capsys, (2, 3))
    assert "alerts: 0 " not in summary


def test_late_duplicated_conflicting_and_broken_lines(generated: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    log = disordered(generated, tmp_path / "disordered.jsonl")
    summary = assert_identical(log, tmp_path, capsys, (2, 3))
    counts = dict(re.findall(r"(late|duplicates skipped): ([\d,]+)", summary))
    assert counts["late"] != "0" and counts["duplicates skipped"] != "0", summary
    assert "rejected event_id_conflict: 5" in summary and "rejected invalid_json: 5" in summary, summary


@pytest.mark.parametrize("flag", [["--report", "r.html"], ["--explain"], ["--incidents", "i.jsonl"],
                                  ["--metrics", "m.prom"], ["--input", "okta=x.jsonl"]])  # fmt: skip
def test_what_it_does_not_make_identical_is_refused(flag: list[str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    flag = [f if "." not in f or f.startswith("okta") else str(tmp_path / f) for f in flag]
    paths = [] if flag[0] == "--input" else [str(EXAMPLE)]
    code = main(["backtest", *paths, "--config", CONFIG, "-o", str(tmp_path / "a.jsonl"), "--jobs", "2", *flag])
    assert code == 2
    assert "--jobs 2" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()
