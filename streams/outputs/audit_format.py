"""The audit log's on-disk format: header, entries and checkpoint, their hashes and macs, and a
strict reader. ``streams.outputs.audit`` writes and verifies with it; its docstring says what is
guaranteed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64  # what entry 1 of a legacy (headerless) log chains to
FORMAT = 1
NOT_JSON = "not JSON"
_ENTRY_FIELDS = frozenset({"seq", "alert", "prev", "hash"})
_HEADER_FIELDS = frozenset({"modwatch_audit", "keyed"})
_CHECKPOINT_FIELDS = frozenset({"modwatch_audit_checkpoint", "entries", "last", "keyed", "mac"})


class AuditError(Exception):
    """The log cannot be continued as it is: damaged, keyed otherwise, or shorter than its checkpoint."""


def dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, **kwargs)


def _canonical(obj: Any) -> bytes:
    return dumps(obj, separators=(",", ":")).encode()


def entry_hash(prev: str, seq: int, alert: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + _canonical({"seq": seq, "alert": alert})).hexdigest()


def header_hash(header: dict[str, Any]) -> str:
    return hashlib.sha256(b"modwatch-audit-header\n" + _canonical(header)).hexdigest()


def entry_mac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


class Malformed(ValueError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise Malformed("duplicate_key", f"the key {key!r} appears twice")
        obj[key] = value
    return obj


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that refuses a key repeated within an object (raises ValueError)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _parse(raw: bytes) -> dict[str, Any]:
    """One line as a header or an entry; raises Malformed saying what is wrong with it."""
    try:
        obj = loads_strict(raw)
    except Malformed:
        raise
    except ValueError:
        raise Malformed("unreadable", NOT_JSON) from None
    if not isinstance(obj, dict):
        raise Malformed("unreadable", "not a JSON object")
    if "modwatch_audit" in obj:
        if unknown := set(obj) - _HEADER_FIELDS:
            names = ", ".join(repr(k) for k in sorted(unknown))  # repr: a tampered log may hold escapes
            raise Malformed("unknown_field", f"the header has unknown field(s) {names}")
        if (
            type(obj["modwatch_audit"]) is not int
            or obj["modwatch_audit"] != FORMAT
            or type(obj.get("keyed")) is not bool
        ):
            raise Malformed("header", f"not a format-{FORMAT} audit log header")
        return obj
    if unknown := set(obj) - _ENTRY_FIELDS - {"mac"}:
        names = ", ".join(repr(k) for k in sorted(unknown))
        raise Malformed("unknown_field", f"unknown field(s) {names}")
    if missing := _ENTRY_FIELDS - set(obj):
        raise Malformed("unreadable", f"no {', '.join(sorted(missing))}: not an audit entry")
    well_typed = (
        type(obj["seq"]) is int and obj["seq"] >= 1 and isinstance(obj["alert"], dict)
        and _is_hash(obj["prev"]) and _is_hash(obj["hash"]) and ("mac" not in obj or _is_hash(obj["mac"]))
    )  # fmt: skip
    if not well_typed:
        raise Malformed("unreadable", "a field of the wrong type: not an audit entry")
    return obj


@dataclass
class Problem:
    line: int  # 0: the checkpoint, not a line of the log
    kind: str  # altered deleted inserted reordered bad_mac unreadable duplicate_key unknown_field header
    message: str  # needs_key partial truncated rewritten checkpoint

    def __str__(self) -> str:
        where = "checkpoint" if self.line == 0 else f"line {self.line}"
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class Line:
    number: int
    offset: int  # of its first byte in the file
    raw: bytes  # without the newline
    complete: bool  # ended with a newline


@dataclass
class Parsed:
    header: dict[str, Any] | None = None
    entries: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # line number, entry
    bad: list[Problem] = field(default_factory=list)
    partial: Line | None = None
    lines: int = 0

    @property
    def start(self) -> str:
        return header_hash(self.header) if self.header is not None else GENESIS


def read_log(path: Path) -> Parsed:
    parsed = Parsed()
    lines: list[Line] = []
    offset = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            parsed.lines = number
            if raw.strip():
                lines.append(Line(number, offset, raw.removesuffix(b"\n"), raw.endswith(b"\n")))
            offset += len(raw)
    for line in lines:
        last = line is lines[-1]
        try:
            if last and not line.complete:
                raise Malformed("partial", "no newline")
            obj = _parse(line.raw)
        except Malformed as exc:
            if last and (exc.kind == "partial" or str(exc) == NOT_JSON):
                parsed.partial = line  # what a crash mid-write leaves
            else:
                parsed.bad.append(Problem(line.number, exc.kind, str(exc)))
            continue
        if "modwatch_audit" not in obj:
            parsed.entries.append((line.number, obj))
        elif line is lines[0]:
            parsed.header = obj
        else:
            parsed.bad.append(Problem(line.number, "inserted", "a header after the first line"))
    return parsed


@dataclass(frozen=True)
class Checkpoint:
    """How far the log went at the last sync: ``entries`` entries, the last with hash ``last``."""

    entries: int
    last: str
    keyed: bool
    mac: str | None = None

    def _payload(self) -> bytes:
        fields = {"modwatch_audit_checkpoint": FORMAT, "entries": self.entries, "last": self.last, "keyed": self.keyed}
        return _canonical(fields)

    @classmethod
    def make(cls, entries: int, last: str, key: bytes | None) -> Checkpoint:
        unsigned = cls(entries, last, key is not None)
        if key is None:
            return unsigned
        return cls(entries, last, True, hmac.new(key, unsigned._payload(), hashlib.sha256).hexdigest())

    def signed_by(self, key: bytes) -> bool:
        expected = hmac.new(key, self._payload(), hashlib.sha256).hexdigest()
        return self.mac is not None and hmac.compare_digest(self.mac, expected)

    def to_json(self) -> str:
        fields: dict[str, Any] = {"modwatch_audit_checkpoint": FORMAT, "entries": self.entries, "last": self.last}
        fields |= {"keyed": self.keyed} if self.mac is None else {"keyed": True, "mac": self.mac}
        return dumps(fields)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``; AuditError when it is not one (OSError when it cannot be read)."""
    try:
        obj = loads_strict(Path(path).read_bytes())
    except ValueError as exc:
        raise AuditError(f"{path}: not a checkpoint ({exc})") from None
    ok = (
        isinstance(obj, dict) and set(obj) <= _CHECKPOINT_FIELDS and obj.get("modwatch_audit_checkpoint") == FORMAT
        and type(obj.get("entries")) is int and obj["entries"] >= 0 and _is_hash(obj.get("last"))
        and type(obj.get("keyed")) is bool and obj["keyed"] == ("mac" in obj) and _is_hash(obj.get("mac", "0" * 64))
    )  # fmt: skip
    if not ok:
        raise AuditError(f"{path}: not a format-{FORMAT} audit checkpoint")
    return Checkpoint(obj["entries"], obj["last"], obj["keyed"], obj.get("mac"))


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically: a reader sees the old one or the new one, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(checkpoint.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def default_checkpoint(log: str | Path) -> Path:
    return Path(f"{log}.checkpoint")


def mac_ok(key: bytes, entry: dict[str, Any]) -> bool:
    return hmac.compare_digest(str(entry.get("mac", "")), entry_mac(key, entry["hash"]))
