"""Reading JSONL event logs (plain or gzip) and writing dead-letter files, in bounded memory.

Shared by ``backtest``, ``replay`` and ``explain`` so that all see the same lines and reject them the
same way. The people whose actions are logged write part of these logs, so nothing here trusts a size:
a line is never held beyond the record limit (an over-long one is read through in chunks and kept
as its first bytes, length and digest), a compressed file may expand only so much, and a dead-letter
file holds only so much of each record and of a run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from streams.core.decode import DEFAULT_LIMITS, TOO_LARGE, Decoded, Limits, Rejected, decode
from streams.offline.outputs import AtomicOutput

#: Bytes of a rejected record a dead letter keeps (as text when valid UTF-8, else base64). Every dead
#: letter also carries the record's full length and the sha256 of all of it.
DEADLETTER_HEAD_BYTES = 4096
#: Bytes one run writes to a dead-letter file; past them rejected lines are only counted (the summary
#: says how many were not written).
DEADLETTER_MAX_BYTES = 100 * 1024 * 1024
#: A compressed log is refused when it decompresses to more than this many times the compressed bytes
#: read so far (deflate's ceiling is about 1030; JSONL event logs compress 5 to 20 times)...
MAX_EXPANSION_RATIO = 200
#: ...once this much has been decompressed (a small file may compress better than a large one)...
EXPANSION_GRACE_BYTES = 16 * 1024 * 1024
#: ...and when it decompresses to more than this, whatever the ratio.
MAX_DECOMPRESSED_BYTES = 64 * 1024**3

_SKIP_CHUNK = 1024 * 1024  # an over-long line is read through in pieces this size
_CHECK_EVERY = 1024 * 1024  # decompressed bytes between two expansion checks


class LogFileError(Exception):
    """A log file that cannot be opened or is refused; the CLI reports it in one line and exits 2."""


@dataclass(frozen=True, slots=True)
class Oversize:
    """What is kept of a line longer than the record limit: its first bytes, its length, its digest."""

    head: bytes  # the first DEADLETTER_HEAD_BYTES
    length: int  # bytes, without the line end
    sha256: str  # of the whole line, without the line end
    ended: bool  # False: the file ended before the line's newline (it is at least ``length`` long)

    def rejected(self, limit: int) -> Rejected:
        size = f"{self.length} bytes" if self.ended else f"at least {self.length} bytes (the file ends inside it)"
        return Rejected(TOO_LARGE, f"record is {size}, limit {limit}")


@dataclass(frozen=True, slots=True)
class Line:
    path: str
    number: int  # 1-based
    raw: bytes  # without the trailing newline; empty when the line was over-long (see ``oversize``)
    oversize: Oversize | None = None

    @property
    def size(self) -> int:
        return len(self.raw) if self.oversize is None else self.oversize.length


def decode_line(line: Line, limits: Limits = DEFAULT_LIMITS, now: float | None = None) -> Decoded | Rejected:
    """``decode`` for a line read by ``iter_lines``: an over-long line is ``too_large`` with its length."""
    if line.oversize is not None:
        return line.oversize.rejected(limits.max_bytes)
    return decode(line.raw, limits, now=now)


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


class _Reader:
    """One open log: ``read(n)`` is ``readline(n)`` that counts decompressed bytes and refuses a bomb."""

    def __init__(self, name: str, max_ratio: float, max_total: int) -> None:
        self.name = name
        self.max_ratio = max_ratio
        self.max_total = max_total
        self.total = 0
        path = Path(name)
        try:
            self._file: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise LogFileError(f"{name}: {exc.strerror or exc}") from exc
        self.compressed = path.suffix == ".gz"
        self._fh: IO[bytes] = self._file
        if self.compressed:
            self._fh = gzip.GzipFile(fileobj=self._file, mode="rb")  # type: ignore[assignment]
        self._check_at = _CHECK_EVERY if self.compressed else float("inf")
        self.plain_readline = self._file.readline

    def read(self, size: int) -> bytes:
        try:
            chunk = self._fh.readline(size)
        except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip, I/O error mid-file
            raise LogFileError(f"{self.name}: {exc}") from exc
        self.total += len(chunk)
        if self.total > self._check_at:
            self._check()
        return chunk

    def _check(self) -> None:
        if self.total > self.max_total:
            raise LogFileError(
                f"{self.name}: refused: decompresses to more than {self.max_total:,} bytes, the limit per file "
                "(if the log is genuine, decompress it and give the plain file)"
            )
        ratio = self.total / max(self._file.tell(), 1)
        if self.total > EXPANSION_GRACE_BYTES and ratio > self.max_ratio:
            raise LogFileError(
                f"{self.name}: refused: expands {ratio:,.0f} times its compressed size after {self.total:,} "
                f"bytes, more than the limit of {self.max_ratio:g} (a compression bomb?; if the log is genuine, "
                "decompress it and give the plain file)"
            )
        self._check_at = self.total + _CHECK_EVERY

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            self._file.close()


def _read_through(reader: _Reader, first: bytes) -> Oversize:
    """The rest of an over-long line, read in chunks: only its head, length and digest are kept.

    The length and digest leave out the line end as ``iter_lines`` strips it (trailing CR and LF), so
    a run of CRs is held back as a count until something other than a line end follows it."""
    digest = hashlib.sha256()
    head = first[:DEADLETTER_HEAD_BYTES]
    length = held_cr = 0
    chunk = first
    while True:
        ended = chunk.endswith(b"\n")
        body = chunk[:-1] if ended else chunk
        kept = body.rstrip(b"\r")
        if kept:
            while held_cr:
                n = min(held_cr, _SKIP_CHUNK)
                digest.update(b"\r" * n)
                length, held_cr = length + n, held_cr - n
            digest.update(kept)
            length += len(kept)
            held_cr = len(body) - len(kept)
        else:
            held_cr += len(body)
        if ended:
            return Oversize(head, length, digest.hexdigest(), True)
        chunk = reader.read(_SKIP_CHUNK)
        if not chunk:
            return Oversize(head, length, digest.hexdigest(), False)


def iter_lines(
    paths: list[str],
    max_record_bytes: int = DEFAULT_LIMITS.max_bytes,
    *,
    max_ratio: float = MAX_EXPANSION_RATIO,
    max_decompressed: int = MAX_DECOMPRESSED_BYTES,
) -> Iterator[Line]:
    """Every non-blank line of every file, in order, holding at most ``max_record_bytes`` + 2 of a line.

    A longer line is read through to its end and yielded with ``raw`` empty and its ``oversize``
    (head, length, sha256): ``decode_line`` rejects it as ``too_large``. A ``.gz`` file that expands
    beyond ``max_ratio`` (after the first EXPANSION_GRACE_BYTES) or ``max_decompressed`` bytes is
    refused with a ``LogFileError`` naming the file and the bound.
    """
    cap = max_record_bytes + 2  # room for a CR LF after a record of exactly the limit
    for name in paths:
        reader = _Reader(name, max_ratio, max_decompressed)
        # A plain file is read straight from its buffer (the hot path: nothing to count per line).
        read = reader.read if reader.compressed else reader.plain_readline
        try:
            number = 0
            while chunk := read(cap):
                number += 1
                if len(chunk) < cap or chunk.endswith(b"\n"):
                    raw = chunk.rstrip(b"\r\n")
                    if raw.strip():
                        yield Line(name, number, raw)
                else:
                    yield Line(name, number, b"", _read_through(reader, chunk))
        except OSError as exc:  # an I/O error mid-file (the compressed reader raises LogFileError itself)
            raise LogFileError(f"{name}: {exc}") from exc
        finally:
            reader.close()


def dead_letter(line: Line, rejected: Rejected) -> dict[str, object]:
    """One dead letter: where the line came from, why it was rejected, its length and sha256, and its
    first DEADLETTER_HEAD_BYTES (``raw`` when valid UTF-8, else ``raw_base64``; ``truncated`` when
    that is not all of it)."""
    if line.oversize is None:
        head, length, sha256 = line.raw[:DEADLETTER_HEAD_BYTES], len(line.raw), hashlib.sha256(line.raw).hexdigest()
    else:
        head, length, sha256 = line.oversize.head, line.oversize.length, line.oversize.sha256
    record: dict[str, object] = {
        "source": line.path,
        "line": line.number,
        "reason": rejected.reason,
        "detail": rejected.detail,
        "length": length,
        "sha256": sha256,
    }
    try:
        record["raw"] = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(head) < length and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            record["raw"] = head[: exc.start].decode("utf-8")  # the head cut a character in two
        else:
            record["raw_base64"] = base64.b64encode(head).decode("ascii")
    if len(head) < length:
        record["truncated"] = True
    return record


class DeadLetterFile:
    """JSONL of rejected lines (see ``dead_letter``), written atomically: the file is replaced only when
    the run succeeds (an empty file when nothing was rejected), and a failed run leaves the previous one.

    At most ``max_bytes`` are written; past them rejected lines are counted in ``unwritten``. Use it as
    a context manager: the file is committed when the block ends normally and discarded on an exception.
    """

    def __init__(self, path: str | None, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = DEADLETTER_MAX_BYTES if max_bytes is None else max_bytes
        self.count = 0
        self.unwritten = 0
        self.written_bytes = 0
        self._out = AtomicOutput(path) if path is not None else None
        self._fh: IO[str] | None = None

    def write(self, line: Line, rejected: Rejected) -> None:
        self.count += 1
        if self._out is None:
            return
        if self._fh is None:
            self._fh = self._out.open()
        text = json.dumps(dead_letter(line, rejected), ensure_ascii=False) + "\n"
        size = len(text.encode("utf-8"))
        if self.written_bytes + size > self.max_bytes:
            self.unwritten += 1
            return
        self.written_bytes += size
        self._fh.write(text)

    def close(self) -> None:
        """Commit: the dead-letter file becomes this run's."""
        if self._out is not None:
            if self._fh is None:
                self._fh = self._out.open()
            self._out.commit()
            self._out = None

    def discard(self) -> None:
        """Drop what this run wrote; the previous file stays."""
        if self._out is not None:
            self._out.discard()
            self._out = None

    def __enter__(self) -> DeadLetterFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()
