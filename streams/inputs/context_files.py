"""Context tables from files: ``--context DIR`` and a MaxMind geo-IP database (docs/inputs.md, "Context").

``DIR`` holds ``staff``, ``accounts`` and ``tickets``, each as ``NAME.csv`` (a header row) or
``NAME.jsonl`` (one object per line with the same keys; lists as JSON arrays or ``;``-separated
strings). Columns (others are ignored):

- staff: ``id, kind, region, role, created_at`` (and ``person``: rows of one person share it)
- accounts: ``id, kind, region, created_at, tags, owner``
- tickets: ``ticket_id, targets, approved_by, opened_at, closed_at, assignee``

A table with no file is absent (``notify`` says so once per table) and is not consulted. A file over
``MAX_TABLE_BYTES`` is refused before it is read; a bad row is a ConfigError naming file, line and
column. Every table is held in memory (a dictionary by id), which the size bound bounds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from streams.core.ruleset import ConfigError
from streams.inputs.context import (
    Context,
    GeoLookup,
    RowError,
    account_row,
    build_context,
    staff_row,
    ticket_row,
)

MAX_TABLE_BYTES = 64 * 1024 * 1024
TABLES: dict[str, tuple[Callable[[dict[str, Any]], Any], tuple[str, ...]]] = {
    "staff": (staff_row, ("id", "kind")),
    "accounts": (account_row, ("id", "kind")),
    "tickets": (ticket_row, ("ticket_id", "targets", "opened_at")),
}
GEOIP_CACHE = 65536  # distinct addresses remembered (a lookup is a tree walk; logs repeat addresses)


def load_context(directory: str | os.PathLike[str] | None, geoip: str | None = None,
                 notify: Callable[[str], object] | None = None) -> Context:  # fmt: skip
    """The tables found in ``directory`` (None: no tables) and the geo-IP database ``geoip``."""
    tables: dict[str, list[Any] | None] = dict.fromkeys(TABLES)
    if directory is not None:
        base = Path(directory)
        if not base.is_dir():
            raise ConfigError(f"{base}: no such context directory")
        for name, (row, required) in TABLES.items():
            found = [p for p in (base / f"{name}.csv", base / f"{name}.jsonl") if p.exists()]
            if len(found) > 1:
                raise ConfigError(f"{base}: both {name}.csv and {name}.jsonl; keep one")
            if not found:
                if notify is not None:
                    notify(f"context: no {name} table in {base} ({name}.csv or {name}.jsonl): not consulted")
                continue
            tables[name] = list(read_table(found[0], row, required))
    lookup = open_geoip(geoip) if geoip is not None else None
    return build_context(tables["staff"], tables["accounts"], tables["tickets"], lookup)


def _read(path: Path) -> str:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if info.st_size > MAX_TABLE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_TABLE_BYTES} bytes (a context table is held in memory)")
        with path.open("rb") as fh:
            data = fh.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TABLE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_TABLE_BYTES} bytes (a context table is held in memory)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: line {number}: not JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: line {number}: expected a JSON object")
            yield number, value
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                raise ConfigError(f"{path}: line {reader.line_num}: {len(values)} values for {len(header)} columns")
            yield reader.line_num, dict(zip(header, values, strict=False))
    except csv.Error as exc:
        raise ConfigError(f"{path}: line {reader.line_num}: {exc}") from None


def read_table(path: str | os.PathLike[str], row: Callable[[dict[str, Any]], Any],
               required: tuple[str, ...] = ()) -> Iterator[Any]:  # fmt: skip
    """Each row of a CSV or JSONL table through ``row``; errors name file, line and column."""
    path = Path(path)
    text = _read(path)
    if path.suffix != ".jsonl":
        header = next(csv.reader(io.StringIO(text, newline="")), [])
        missing = [c for c in required if c not in {h.strip() for h in header}]
        if missing:
            raise ConfigError(f"{path}: line 1: column {missing[0]}: missing from the header")
    for number, values in _rows(path, text):
        try:
            yield row(values)
        except RowError as exc:
            raise ConfigError(f"{path}: line {number}: column {exc}") from None


def open_geoip(path: str | os.PathLike[str]) -> GeoLookup:
    """A lookup IP -> ISO country code from a MaxMind database (GeoIP2/GeoLite2 Country or City, or
    any with ``country.iso_code``); None for an address it does not know or that is no address."""
    import maxminddb

    try:
        reader = maxminddb.open_database(str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such geo-IP database") from None
    except (OSError, ValueError, RuntimeError) as exc:  # InvalidDatabaseError is a RuntimeError
        raise ConfigError(f"{path}: not a MaxMind database ({exc})") from None

    @lru_cache(maxsize=GEOIP_CACHE)
    def lookup(ip: str) -> str | None:
        try:
            found = reader.get(ip)
        except ValueError:  # not an IP address
            return None
        if not isinstance(found, dict):
            return None
        for key in ("country", "registered_country"):
            node = found.get(key)
            if isinstance(node, dict) and isinstance(node.get("iso_code"), str):
                return str(node["iso_code"]).upper()
        return None

    return lookup
