"""Hostile input is rejected with a reason and bounded work: no crash, no blow-up, whether it is one
record or a whole file (a line of 100 MiB, a gzip bomb, a flood of rejected lines).

The bounds below are generous ceilings against pathological behaviour (quadratic parsing,
unbounded recursion, copies of megabytes per nesting level), not speed goals: those live in the
benchmark."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.cli.main import main
from streams.core.decode import DEFAULT_LIMITS, Decoded, Limits, Rejected, decode
from streams.offline import logio
from streams.offline.logio import (
    DEADLETTER_HEAD_BYTES,
    MAX_EXPANSION_RATIO,
    DeadLetterFile,
    Line,
    LogFileError,
    dead_letter,
    decode_line,
    iter_lines,
)

T = TypeVar("T")

CEILING_SECONDS = 2.0
CEILING_BYTES = 64 * 1024 * 1024

VALID = {
    "event_id": "e1",
    "event_type": "account.suspend",
    "occurred_at": "2020-06-01T00:00:00Z",
    "actor": {"id": "emp-1", "kind": "employee", "region": "US"},
    "target": {"kind": "account", "id": "acct-1", "region": "US"},
}


def bounded(record: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Decoded | Rejected, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        out = decode(record, limits)
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return out, elapsed, peak


def test_a_two_megabyte_line_is_refused_without_parsing_it() -> None:
    record = json.dumps({**VALID, "reason": "x" * (2 * 1024 * 1024)}).encode()
    out, elapsed, peak = bounded(record)
    assert isinstance(out, Rejected) and out.reason == "too_large"
    assert elapsed < CEILING_SECONDS and peak < 1024 * 1024  # refused before any copy or parse


def test_a_two_megabyte_line_under_a_raised_limit_is_bounded() -> None:
    record = json.dumps({**VALID, "padding": ["y" * 1000] * 2000}).encode()
    out, elapsed, peak = bounded(record, Limits(max_bytes=4 * 1024 * 1024))
    assert isinstance(out, Decoded)  # unknown fields are accepted...
    assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES  # ...at a cost linear in the size


def test_five_thousand_deep_nesting_is_refused_within_bounds() -> None:
    for record in (b"[" * 5000 + b"]" * 5000, json.dumps({**VALID, "x": 1}).encode()[:-1] + b',"y":'
                   + b'{"a":' * 5000 + b"1" + b"}" * 5001):  # fmt: skip
        out, elapsed, peak = bounded(record)
        assert isinstance(out, Rejected) and out.reason == "too_deep", out
        assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES


def test_long_strings_in_known_fields_are_refused() -> None:
    out = decode(json.dumps({**VALID, "reason": "r" * 5000}).encode())
    assert isinstance(out, Rejected) and out.reason == "contract_violation" and out.detail.startswith("reason:")
    out = decode(json.dumps({**VALID, "target": {**VALID["target"], "id": "i" * 201}}).encode())  # type: ignore[dict-item]
    assert isinstance(out, Rejected) and out.detail.startswith("target.id:")


def test_unknown_regions_are_kept() -> None:
    out = decode(json.dumps({**VALID, "target": {**VALID["target"], "region": "XZ"}}).encode())  # type: ignore[dict-item]
    assert isinstance(out, Decoded) and out.view["target"]["region"] == "XZ"
    from streams.core.regions import region_label

    assert region_label("XZ") == "other" and region_label("CN") == "CN"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_bounded(record: bytes) -> None:
    out, elapsed, peak = bounded(record)
    assert isinstance(out, Decoded | Rejected)
    assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(["event_id", "occurred_at", "actor", "target", "event_type", "record_count"]))
def test_arbitrary_json_in_any_field_is_bounded(value: Any, field: str) -> None:
    record = json.dumps({**VALID, field: value}).encode()
    out, elapsed, peak = bounded(record)
    assert isinstance(out, Decoded | Rejected)
    if isinstance(out, Rejected):
        assert out.reason and out.detail
    assert elapsed < CEILING_SECONDS and peak < CEILING_BYTES


# -- whole files: reading holds at most a record, whatever the file holds ------------------------------------

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "events.jsonl"
FILE_CEILING = 50 * MiB  # peak memory while reading a hostile file (the record limit is 1 MiB)


def _peak(work: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        out = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


def _write_repeated(path: Path, unit: bytes, total: int, tail: bytes = b"") -> None:
    with path.open("wb") as fh:
        for _ in range(total // len(unit)):
            fh.write(unit)
        fh.write(tail)


def _gzip_repeated(path: Path, unit: bytes, total: int) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    with path.open("wb") as fh:
        for _ in range(total // len(unit)):
            fh.write(compressor.compress(unit))
        fh.write(compressor.flush())


def test_a_100_mib_line_is_read_through_in_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "huge.jsonl"
    valid = json.dumps(VALID).encode()
    _write_repeated(log, b"A" * MiB, 100 * MiB, tail=b"\r\n" + valid + b"\n")
    lines, peak = _peak(lambda: list(iter_lines([str(log)])))
    assert peak < FILE_CEILING, peak
    huge, event = lines
    assert huge.raw == b"" and huge.oversize is not None and huge.size == 100 * MiB
    assert huge.oversize.sha256 == hashlib.sha256(b"A" * (100 * MiB)).hexdigest()  # the whole record, not its end
    assert len(huge.oversize.head) == DEADLETTER_HEAD_BYTES
    rejected = decode_line(huge)
    assert isinstance(rejected, Rejected) and rejected.reason == "too_large"
    assert rejected.detail == f"record is {100 * MiB} bytes, limit {MiB}"
    assert (event.number, event.raw) == (2, valid) and isinstance(decode_line(event), Decoded)


def test_a_line_that_ends_the_file_is_at_least_its_length(tmp_path: Path) -> None:
    log = tmp_path / "cut.jsonl"
    _write_repeated(log, b"B" * MiB, 3 * MiB)
    (line,) = iter_lines([str(log)])
    rejected = decode_line(line)
    assert isinstance(rejected, Rejected) and f"at least {3 * MiB} bytes" in rejected.detail


def test_records_at_the_limit_are_kept_whole_and_just_past_it_measured_exactly(tmp_path: Path) -> None:
    limit = 4096
    at_limit = json.dumps({**VALID, "pad": ""}).encode()
    at_limit = at_limit[:-2] + b"x" * (limit - len(at_limit)) + b'"}'
    assert len(at_limit) == limit
    log = tmp_path / "edge.jsonl"
    log.write_bytes(at_limit + b"\r\n" + b"y" * (limit + 1) + b"\n" + b"z" * (limit + 1) + b"\r\n" + b"\x00" * 10)
    lines = list(iter_lines([str(log)], limit))
    assert lines[0].raw == at_limit and isinstance(decode_line(lines[0], Limits(max_bytes=limit)), Decoded)
    assert [line.size for line in lines] == [limit, limit + 1, limit + 1, 10]
    out = [decode_line(line, Limits(max_bytes=limit)) for line in lines[1:]]
    assert [(r.reason, r.detail) for r in out if isinstance(r, Rejected)] == [
        ("too_large", f"record is {limit + 1} bytes, limit {limit}"),
        ("too_large", f"record is {limit + 1} bytes, limit {limit}"),
        ("invalid_json", "invalid JSON: Expecting value"),  # NUL bytes are not blank: a line to reject
    ]


def test_a_normal_log_is_read_whole_plain_and_compressed(tmp_path: Path) -> None:
    expected = [line for line in EXAMPLE.read_bytes().splitlines() if line.strip()]
    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress(EXAMPLE.read_bytes()))
    for path in (EXAMPLE, packed):
        assert [line.raw for line in iter_lines([str(path)])] == expected


def test_a_gzip_bomb_is_refused_naming_the_file_and_the_bound(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jsonl.gz"
    _gzip_repeated(bomb, b"\x00" * MiB, 100 * MiB)  # ~100 KiB that expands to 100 MiB of NUL, no newline
    assert bomb.stat().st_size < 200 * 1024

    def read() -> None:
        with pytest.raises(LogFileError) as caught:
            list(iter_lines([str(bomb)]))
        message = str(caught.value)
        assert message.startswith(f"{bomb}: refused: expands") and f"limit of {MAX_EXPANSION_RATIO}" in message

    _, peak = _peak(read)
    assert peak < FILE_CEILING, peak


def test_a_gzip_bomb_under_a_raised_bound_is_one_bounded_dead_letter(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jsonl.gz"
    _gzip_repeated(bomb, b"\x00" * MiB, 100 * MiB)
    dead = tmp_path / "dead.jsonl"

    def run() -> list[Line]:
        with DeadLetterFile(str(dead)) as letters:
            lines = list(iter_lines([str(bomb)], max_ratio=10_000))
            for line in lines:
                out = decode_line(line)
                assert isinstance(out, Rejected)
                letters.write(line, out)
        return lines

    lines, peak = _peak(run)
    assert peak < FILE_CEILING, peak
    assert len(lines) == 1 and dead.stat().st_size < 64 * 1024  # was: the whole line, JSON-escaped (6x)
    (letter,) = [json.loads(text) for text in dead.read_text().splitlines()]
    assert letter["reason"] == "too_large" and letter["length"] == 100 * MiB and letter["truncated"] is True
    assert letter["sha256"] == hashlib.sha256(b"\x00" * (100 * MiB)).hexdigest()
    assert letter["raw"] == "\x00" * DEADLETTER_HEAD_BYTES


def test_a_file_is_refused_past_its_decompressed_bound(tmp_path: Path) -> None:
    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress(EXAMPLE.read_bytes() * 30))  # ~2 MiB: many 1 MiB checks
    with pytest.raises(LogFileError, match=r"decompresses to more than 1,000,000 bytes"):
        list(iter_lines([str(packed)], max_decompressed=1_000_000))


def test_a_dead_letter_keeps_a_head_its_length_and_digest(tmp_path: Path) -> None:
    record = ("é" * 3000).encode()  # 6000 bytes: the 4 KiB head ends inside a character
    line = Line("x.jsonl", 7, record)
    letter = dead_letter(line, Rejected("invalid_json", "invalid JSON"))
    assert letter["length"] == 6000 and letter["sha256"] == hashlib.sha256(record).hexdigest()
    assert letter["raw"] == "é" * 2048 and letter["truncated"] is True
    binary = dead_letter(Line("x.jsonl", 8, b"\xff" * 10), Rejected("invalid_utf8", "invalid UTF-8 at byte 0"))
    assert binary["raw_base64"] == base64.b64encode(b"\xff" * 10).decode() and "truncated" not in binary


def test_a_run_writes_at_most_its_dead_letter_cap_and_says_how_many_it_did_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "nul.jsonl"
    _write_repeated(log, b"\x00" * 1000 + b"\n", 2000 * 1001)  # 2,000 lines of NUL: 2,000 rejections
    monkeypatch.setattr(logio, "DEADLETTER_MAX_BYTES", 256 * 1024)
    dead, alerts = tmp_path / "dead.jsonl", tmp_path / "alerts.jsonl"
    argv = ["backtest", str(log), "-o", str(alerts), "--deadletter", str(dead), "--config", str(ROOT / "config")]
    assert main(argv) == 0
    written = dead.read_text().splitlines()
    assert dead.stat().st_size <= 256 * 1024 and 0 < len(written) < 2000
    err = capsys.readouterr().err
    assert "rejected invalid_json: 2,000" in err
    assert f"not written to the dead-letter file (it reached its size cap): {2000 - len(written):,}" in err


def test_replay_reads_through_the_same_bounds(tmp_path: Path) -> None:
    from streams.tools.replay import replay

    log, dead = tmp_path / "huge.jsonl", tmp_path / "dead.jsonl"
    _write_repeated(log, b"C" * MiB, 30 * MiB, tail=b"\n" + json.dumps(VALID).encode() + b"\n")

    def run() -> Any:
        return replay([str(log)], "unused:9092", lambda t: "events", lambda v: None, deadletter=str(dead),
                      dry_run=True, out=io.StringIO())  # fmt: skip

    stats, peak = _peak(run)
    assert peak < FILE_CEILING, peak
    assert (stats.sent, stats.rejected) == (1, {"too_large": 1})
    (letter,) = [json.loads(text) for text in dead.read_text().splitlines()]
    assert letter["length"] == 30 * MiB and len(letter["raw"]) == DEADLETTER_HEAD_BYTES
