"""Reading JSONL event logs (plain or gzip) and writing dead-letter files.

Shared by ``backtest`` and ``replay`` so that both see the same lines and reject them the same way.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from streams.core.decode import Rejected


class LogFileError(Exception):
    """A log file that cannot be opened; the CLI reports it in one line and exits 2."""


@dataclass(frozen=True, slots=True)
class Line:
    path: str
    number: int  # 1-based
    raw: bytes  # without the trailing newline


def _open(path: Path) -> IO[bytes]:
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as exc:
        raise LogFileError(f"{path}: {exc.strerror or exc}") from exc


def check_readable(paths: list[str]) -> None:
    """Fail fast, before any work, if an input is missing."""
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise LogFileError(f"{name}: no such file")
        if not os.access(path, os.R_OK):
            raise LogFileError(f"{name}: not readable")


def total_size(paths: list[str]) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def iter_lines(paths: list[str], chunk_limit: int = 64 * 1024 * 1024) -> Iterator[Line]:
    """Every non-blank line of every file, in order.

    A line longer than ``chunk_limit`` is still yielded whole: the decoder's size limit rejects it
    with a reason, which is better than silently splitting it.
    """
    for name in paths:
        with _open(Path(name)) as fh:
            try:
                for number, raw in enumerate(fh, start=1):
                    raw = raw.rstrip(b"\r\n")
                    if raw.strip():
                        yield Line(name, number, raw)
            except (OSError, EOFError) as exc:  # truncated gzip, I/O error mid-file
                raise LogFileError(f"{name}: {exc}") from exc


class DeadLetterFile:
    """JSONL of rejected lines: where it came from, why, and the original bytes.

    The original is kept as text when it is valid UTF-8 and short enough to read, otherwise as
    base64, so that nothing is lost and the file stays valid JSONL.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self.count = 0

    def write(self, line: Line, rejected: Rejected) -> None:
        self.count += 1
        if self.path is None:
            return
        if self._fh is None:
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        record: dict[str, object] = {
            "source": line.path,
            "line": line.number,
            "reason": rejected.reason,
            "detail": rejected.detail,
        }
        try:
            record["raw"] = line.raw.decode("utf-8")
        except UnicodeDecodeError:
            record["raw_base64"] = base64.b64encode(line.raw).decode("ascii")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DeadLetterFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
