"""`modwatch backtest --jobs N` gives the bytes of `--jobs 1`: the alerts file (same order), the dead
letters and the summary's counts, on the example, a generated log, and one with late, duplicated,
conflicting and broken lines."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.cli.main import main
from streams.config.loader import load_rules
from streams.core.decode import DEFAULT_LIMITS, Decoded, Rejected, decode
from streams.core.engine import Engine
from streams.core.state import Shard
from streams.core.stats import EngineStats
from streams.offline import parallel
from streams.offline.backtest import run_backtest
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


def mixed(source: Path, target: Path) -> Path:
    """``source`` with, every few lines, a broken line, a redelivery, an id reused with other content,
    a late event, a record only ``json`` parses (NaN: decode's slow path) and a rejected one of each
    other kind, so that with small chunks every process owns some of each; and one over-long line."""
    out = []
    lines = source.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if n % 43 == 0 and n > 200:  # an event of 200 lines before, under a new id: late
            out.append(lines[n - 200].replace('"event_id":"', f'"event_id":"late-{n}-', 1))
        if n % 37 == 0:
            out.append(line[: len(line) // 2])
            continue
        if n % 23 == 0:
            line = line[:-1] + ',"note":NaN}'
        out.append(line)
        if n % 11 == 0:
            out.append(line)
        if n % 29 == 0:
            event = json.loads(line)
            event["actor"] = {**event["actor"], "id": "emp-conflict"}
            out.append(json.dumps(event))
        if n % 41 == 0:
            out += ["[1]", '{"event_type": "no.such"}', line.replace('"occurred_at"', '"occurred"', 1)]
        if n == 500:
            out.append(line[:-1] + ',"pad":"' + "x" * (1024 * 1024) + '"}')
    target.write_text("\n".join(out) + "\n")
    return target


def _stats(stats: EngineStats) -> dict[str, Any]:
    found = {}
    for name in (f.name for f in fields(EngineStats)):
        value = getattr(stats, name)
        if name == "request_latency":
            value = {key: (hist.counts, pytest.approx(hist.sum), hist.count) for key, hist in value.items()}
        found[name] = dict(value) if isinstance(value, dict) else value
    return found


@pytest.mark.parametrize("jobs", [2, 3])
def test_small_chunks_give_every_process_every_kind_of_line(jobs: int, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Chunks of 4 lines (the children are forked: they see the patched size): rejected lines, id
    conflicts, duplicates and slow-path records fall in every process's chunks. The alerts, the dead
    letters (process 0 writes those of every chunk, in line order) and every counter are those of one
    process, inside --since/--until too."""
    source = tmp_path / "g.jsonl"
    write_log(str(source), 2_500, seed=5, incidents=True)
    log = mixed(source, tmp_path / "mixed.jsonl")
    times = sorted(_ts(line) for line in source.read_text().splitlines())
    monkeypatch.setattr(parallel, "CHUNK", 4)
    ruleset = load_rules(CONFIG)
    for since, until in ((None, None), (times[300], times[2_000])):
        window: dict[str, Any] = {"since": since and datetime.fromtimestamp(since, UTC),
                                  "until": until and datetime.fromtimestamp(until, UTC)}  # fmt: skip
        one = run_backtest([str(log)], ruleset, deadletter=str(tmp_path / "d1"), **window)
        many = parallel.run_parallel([str(log)], ruleset, jobs, deadletter=str(tmp_path / "dn"), **window)
        assert [a.to_json() for a in many.alerts] == [a.to_json() for a in one.alerts]
        assert (tmp_path / "dn").read_bytes() == (tmp_path / "d1").read_bytes()
        assert (many.read, many.filtered, many.unwritten) == (one.read, one.filtered, one.unwritten)
        assert dict(many.rejected) == dict(one.rejected)
        assert one.engine is not None and many.engine is not None
        assert _stats(many.engine.stats) == _stats(one.engine.stats)  # latency sums: added in another order
        assert one.alerts and one.late and one.duplicates and one.engine.stats.id_conflicts
        assert set(one.rejected) >= {"invalid_json", "not_object", "unknown_event_type", "contract_violation",
                                     "too_large", "event_id_conflict"}  # fmt: skip
        assert (one.filtered > 0) == (since is not None)


def test_decode_and_view_are_those_of_decode() -> None:
    """The owner decodes with ``_decode`` and another process rebuilds the view with ``_view``: both
    are what ``decode`` gives, on either of its paths."""
    line = EXAMPLE.read_bytes().splitlines()[0]
    for raw in (line, line[:-1] + b',"note":NaN}', line[:-1] + b',"n":1e999}', line[:40], b"[1]", b" ",
                line.replace(b'"occurred_at"', b'"x"', 1), b'{"a":' * 40 + b"1" + b"}" * 40):  # fmt: skip
        got, fast = parallel._decode(raw, DEFAULT_LIMITS)
        want = decode(raw, DEFAULT_LIMITS)
        assert type(got) is type(want)
        if isinstance(want, Rejected):
            assert got == want
            continue
        assert isinstance(got, Decoded)
        assert (got.event, got.ts) == (want.event, want.ts)
        assert json.dumps(parallel._view(raw, fast)) == json.dumps(got.view) == json.dumps(want.view)
        assert fast == (b"NaN" not in raw and b"1e999" not in raw)  # orjson refuses both


def test_a_process_that_did_not_decode_an_event_never_reads_its_model() -> None:
    """Another process's event reaches ``Engine.step`` as its view and time with a stand-in for the
    model (``NOT_DECODED``, which fails on any read): its alerts are those of the decoded event."""
    with pytest.raises(RuntimeError, match="decoded in another process"):
        _ = parallel.NOT_DECODED.event_id
    ruleset = load_rules(CONFIG)
    full, partial = Engine(ruleset), Engine(ruleset)
    shards = Shard(), Shard()
    alerts: tuple[list[str], list[str]] = ([], [])
    for raw in EXAMPLE.read_bytes().splitlines():
        decoded = decode(raw)
        assert isinstance(decoded, Decoded)
        routes = full.route(decoded)
        alerts[0].extend(a.to_json() for a in full.step(shards[0], decoded, routes=routes))
        stand_in = Decoded(parallel.NOT_DECODED, json.loads(raw), decoded.ts)
        partial_routes = {key: [partial.roles[(r.rule.id, r.side)] for r in roles] for key, roles in routes.items()}
        alerts[1].extend(a.to_json() for a in partial.step(shards[1], stand_in, routes=partial_routes, primary=False))
    assert alerts[0] and alerts[1] == alerts[0]


def test_every_counter_is_added_up() -> None:
    """``_merge_stats`` adds every field of ``EngineStats`` (each process counts its share)."""

    def part(n: int) -> parallel._Part:
        stats = EngineStats()
        for name in (f.name for f in fields(EngineStats)):
            value = getattr(stats, name)
            if isinstance(value, Counter):
                value[("k", n)] += n
                value["same"] += n
            elif isinstance(value, int):
                setattr(stats, name, n)
        stats.observe_latency("US", "court", 10.0 * n)
        stats.observe_latency(str(n), "court", 1.0)
        return parallel._Part(stats)

    merged = _stats(parallel._merge_stats([part(1), part(2), part(4)]))
    for name, value in merged.items():
        if name == "request_latency":
            assert value[("US", "court")][1:] == (70.0, 3) and len(value) == 4
        elif isinstance(value, dict):
            assert value == {("k", 1): 1, ("k", 2): 2, ("k", 4): 4, "same": 7}, name
        else:
            assert value == 7, name
