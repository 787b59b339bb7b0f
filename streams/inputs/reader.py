"""Raw records out of lines: JSON (one value per line; an array gives one record per item) or CSV
(a header row, then one record per row; empty cells are absent; ``;`` splits lists in the mapping).

Files are opened by ``streams.offline.logio.iter_lines`` (plain or gzip, one line at a time, blank
lines skipped), which sits a layer above this package; anything with ``path``, ``number`` and ``raw``
(bytes without the newline) will do::

    from streams.offline.logio import iter_lines
    for raw in records(iter_lines(["okta.jsonl.gz"]), mapping.format):
        outcomes = mapping.map(raw.record) if raw.error is None else [raw.error]

A line that cannot be read becomes a ``RawRecord`` with ``error`` set (``invalid_json``,
``invalid_utf8``, ``too_large``, ``invalid_csv``): a dead letter, never an exception.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from streams.core.decode import DEFAULT_LIMITS, INVALID_JSON, INVALID_UTF8, TOO_LARGE, Limits, Rejected

INVALID_CSV = "invalid_csv"


class LineLike(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def raw(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class RawRecord:
    path: str
    number: int  # the 1-based line the record starts on
    raw: bytes  # the line(s) as read: what a dead letter keeps
    record: Any = None
    error: Rejected | None = None


def records(lines: Iterable[LineLike], fmt: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RawRecord]:
    """Every raw record of ``lines`` in order, for a mapping's ``format`` (``json`` or ``csv``)."""
    if fmt == "csv":
        yield from _csv_records(lines, limits)
    elif fmt == "json":
        yield from _json_records(lines, limits)
    else:
        raise ValueError(f"unknown record format {fmt!r}")


def _json_records(lines: Iterable[LineLike], limits: Limits) -> Iterator[RawRecord]:
    for line in lines:
        # logio keeps no bytes of an over-long line (``oversize`` set, ``raw`` empty)
        if len(line.raw) > limits.max_bytes or getattr(line, "oversize", None) is not None:
            yield RawRecord(line.path, line.number, line.raw,
                            error=Rejected(TOO_LARGE, f"line over the limit of {limits.max_bytes} bytes"))
            continue
        try:
            value = orjson.loads(line.raw)
        except orjson.JSONDecodeError as exc:
            reason = INVALID_UTF8 if "utf-8" in str(exc).lower() else INVALID_JSON
            yield RawRecord(line.path, line.number, line.raw, error=Rejected(reason, f"invalid JSON: {exc.msg}"))
            continue
        for item in value if isinstance(value, list) else [value]:
            yield RawRecord(line.path, line.number, line.raw, record=item)


def _csv_records(lines: Iterable[LineLike], limits: Limits) -> Iterator[RawRecord]:
    pending: list[LineLike] = []
    bad: list[RawRecord] = []

    def texts() -> Iterator[str]:
        for line in lines:
            pending.append(line)
            try:
                yield line.raw.decode("utf-8-sig" if line.number == 1 else "utf-8") + "\n"
            except UnicodeDecodeError as exc:
                bad.append(RawRecord(line.path, line.number, line.raw,
                                     error=Rejected(INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}")))  # fmt: skip
                pending.pop()

    reader = csv.reader(texts())
    header: list[str] | None = None
    for row in reader:
        yield from bad
        bad.clear()
        taken, pending[:] = list(pending), []
        if not taken:
            continue
        raw = b"\n".join(line.raw for line in taken)
        first = taken[0]
        if header is None:
            header = [name.strip() for name in row]
            continue
        if len(raw) > limits.max_bytes:
            yield RawRecord(first.path, first.number, raw,
                            error=Rejected(TOO_LARGE, f"row is {len(raw)} bytes, limit {limits.max_bytes}"))
            continue
        if len(row) > len(header):
            yield RawRecord(first.path, first.number, raw,
                            error=Rejected(INVALID_CSV, f"row has {len(row)} cells, the header {len(header)}"))
            continue
        record = {name: cell for name, cell in zip(header, row, strict=False) if cell.strip() != ""}
        yield RawRecord(first.path, first.number, raw, record=record)
    yield from bad
