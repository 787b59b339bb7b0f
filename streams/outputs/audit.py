"""A tamper-evident record of every alert: ``modwatch audit`` appends, ``modwatch verify`` checks.

Line 1 is a header saying whether the log is keyed; each further line is one entry::

    {"modwatch_audit": 1, "keyed": true}
    {"seq": 7, "alert": {...}, "prev": "<hash of entry 6>", "hash": "<sha256>", "mac": "<hmac>"}

``hash`` is SHA-256 over the previous hash and the canonical JSON of ``seq`` and ``alert``; entry 1
chains to the header's hash. No entry can be altered, removed, inserted or moved, nor the header
changed, without breaking the chain there. ``mac`` (HMAC-SHA256 of the hash, with a key the monitored
staff do not hold) is on every entry of a keyed log and on none of an unkeyed one. Lines are read
strictly: a key repeated within an object (``json.loads`` would keep the last) or an unknown
top-level field is a problem. Alerts without a string ``alert_id`` are rejected and counted.

After each batch ``modwatch audit`` syncs the log, then replaces its checkpoint (default
``<log>.checkpoint``: entry count, last hash, and an HMAC over them when keyed) by writing a temporary
file beside it, fsyncing and renaming. ``verify --checkpoint`` reports a log shorter than it, or whose
entry at its count has another hash, as truncated or rewritten; ``audit`` refuses to continue such a
log, so its next checkpoint cannot paper over the cut. A half-written last line (a crash mid-write)
is moved by ``audit`` to ``<log>.partial`` with a note, the log truncated to its last complete entry
(that alert's offset was not committed: it is recorded again); ``verify`` reports it as ``partial``.

Logs written before headers existed are read as legacy logs, keyed when their entries carry macs
(or a key is given); ``verify`` warns that such a log does not say which it is, ``audit`` continues
it without a header.

What is and is not guaranteed: an unkeyed log can be rebuilt end to end, checkpoint included, by
whoever can write them; its clean ``verify`` only proves the chain is consistent. A keyed log cannot
be rebuilt without the key: entries written without it fail their macs, a log whose header says
keyed is never called intact without the key, and one that says unkeyed (or has no header) is a
problem when the key is given, as it is against the keyed checkpoint of the log it replaced. So
verify with the key. Truncation of the tail, down to an empty file, is detected only against a
checkpoint the writer of the log cannot also rewrite: keep it on other storage, keyed. Entries
appended since the last checkpoint are covered by the chain alone.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.outputs.audit_format import (
    FORMAT,
    GENESIS,
    AuditError,
    Checkpoint,
    Line,
    Malformed,
    Parsed,
    Problem,
    default_checkpoint,
    dumps,
    entry_hash,
    entry_mac,
    header_hash,
    loads_strict,
    mac_ok,
    read_checkpoint,
    read_log,
    write_checkpoint,
)

if TYPE_CHECKING:
    from streams.config.settings import KafkaSecurity

__all__ = ["AuditError", "AuditLog", "Checkpoint", "Problem", "Report", "check", "consume_alerts", "default_checkpoint",
           "entry_hash", "entry_mac", "header_hash", "read_checkpoint", "verify"]  # fmt: skip

logger = logging.getLogger(__name__)


class AuditLog:
    """Appends alerts to the chain. Re-opening an existing log continues its chain (after setting a
    half-written last line aside); an alert id already recorded is skipped (the alerts topic is
    at-least-once). With ``checkpoint``, the log must still reach it, and ``sync`` replaces it.
    ``notes`` collects what the caller should tell the user (a line set aside, a legacy log)."""

    def __init__(self, path: str | Path, key: bytes | None = None, checkpoint: str | Path | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.seq = 0
        self.known: set[str] = set()
        self.recorded = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.notes: list[str] = []
        parsed = read_log(self.path) if self.path.exists() else Parsed()
        if parsed.bad:
            raise AuditError(f"{self.path}: {parsed.bad[0]}: the log is damaged; check it with modwatch verify")
        new = parsed.header is None and not parsed.entries
        header = {"modwatch_audit": FORMAT, "keyed": key is not None} if new else parsed.header
        start = self.head = header_hash(header) if header is not None else GENESIS
        self._continue(parsed)
        if self.checkpoint is not None and self.checkpoint.exists():
            self._reaches(read_checkpoint(self.checkpoint), parsed, start)
        if parsed.partial is not None:
            self._set_aside(parsed.partial)
        self._fh = self.path.open("a", encoding="utf-8")
        if new:
            self._fh.write(dumps(header) + "\n")
        self.sync()

    def _continue(self, parsed: Parsed) -> None:
        if parsed.header is None and not parsed.entries:
            return
        if parsed.header is not None:
            keyed = bool(parsed.header["keyed"])
        else:
            keyed = any("mac" in entry for _, entry in parsed.entries)
            self.notes.append(f"{self.path} has no header (written before logs had one): continued as a legacy "
                              f"{'keyed' if keyed else 'unkeyed'} log")  # fmt: skip
        if keyed and self.key is None:
            raise AuditError(f"{self.path} is a keyed log: give its key (--hmac-key-env)")
        if not keyed and self.key is not None:
            raise AuditError(f"{self.path} is an unkeyed log: a key cannot be added to it; start a new log")
        for _, entry in parsed.entries:
            self.seq, self.head = entry["seq"], entry["hash"]
            alert_id = entry["alert"].get("alert_id")
            if alert_id is not None:
                self.known.add(str(alert_id))
        last = parsed.entries[-1][1] if parsed.entries else None
        if self.key is not None and last is not None and not mac_ok(self.key, last):
            raise AuditError(f"{self.path}: its last entry was not written with this key")

    def _reaches(self, checkpoint: Checkpoint, parsed: Parsed, start: str) -> None:
        where = f"its checkpoint {self.checkpoint}"
        if self.key is not None and not checkpoint.signed_by(self.key):
            raise AuditError(f"{where} was not written with this key; refusing to continue {self.path}")
        if self.key is None and checkpoint.keyed:
            raise AuditError(f"{where} is keyed, {self.path} is not: rebuilt without the key?")
        hashes = {0: start} | {entry["seq"]: entry["hash"] for _, entry in parsed.entries}
        if hashes.get(checkpoint.entries) != checkpoint.last:
            cut = checkpoint.entries not in hashes
            raise AuditError(
                f"{self.path} holds {len(parsed.entries)} entries but {where} records "
                f"{checkpoint.entries}{'' if cut else ' with another last hash'}: the log was "
                f"{'cut' if cut else 'rewritten'}; refusing to continue it (see modwatch verify --checkpoint)"
            )

    def _set_aside(self, line: Line) -> None:
        aside = self.path.with_name(self.path.name + ".partial")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        note = f"# {stamp}: line {line.number} of {self.path.name} (byte {line.offset}), half-written, set aside\n"
        with aside.open("ab") as fh:
            fh.write(note.encode() + line.raw + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.truncate(self.path, line.offset)
        self.notes.append(f"{self.path}: line {line.number} was half-written (a crash mid-write?): moved to "
                          f"{aside}; the log continues after entry {self.seq}")  # fmt: skip

    def append(self, alert: dict[str, Any]) -> bool:
        """Record one alert; False when its id is already in the log or it has none (then counted)."""
        alert_id = alert.get("alert_id")
        if not isinstance(alert_id, str) or not alert_id:
            self.reject("no alert_id")
            return False
        if alert_id in self.known:
            self.duplicates += 1
            return False
        seq = self.seq + 1
        digest = entry_hash(self.head, seq, alert)
        entry: dict[str, Any] = {"seq": seq, "alert": alert, "prev": self.head, "hash": digest}
        if self.key is not None:
            entry["mac"] = entry_mac(self.key, digest)
        self._fh.write(dumps(entry) + "\n")
        self.seq, self.head = seq, digest
        self.known.add(alert_id)
        self.recorded += 1
        return True

    def reject(self, reason: str) -> None:
        """Count a message that is not recordable as an alert."""
        self.rejected[reason] += 1

    def summary(self) -> str:
        text = f"recorded {self.recorded} new alerts, skipped {self.duplicates} already recorded"
        if self.rejected:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.rejected.items()))
            text += f", REJECTED {self.rejected.total()} ({reasons})"
        return f"{text}; {self.seq} entries in {self.path}"

    def sync(self) -> None:
        """Flush to disk before the consumer commits its offset (what was committed is on disk), then
        replace the checkpoint."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if self.checkpoint is not None:
            write_checkpoint(self.checkpoint, Checkpoint.make(self.seq, self.head, self.key))

    def close(self) -> None:
        self._fh.close()


@dataclass
class Report:
    """What ``check`` found: the problems (none when intact) and what kind of log it is."""

    problems: list[Problem]
    entries: int
    keyed: bool
    legacy: bool  # no header: written before logs had one


def verify(path: str | Path, key: bytes | None = None, checkpoint: str | Path | None = None) -> list[Problem]:
    """Every problem, with the line where it is seen. Empty when the log is intact."""
    return check(path, key, checkpoint).problems


def check(path: str | Path, key: bytes | None = None, checkpoint: str | Path | None = None) -> Report:
    """The log against its own chain, its header's claim, ``key`` and (optionally) ``checkpoint``."""
    parsed = read_log(Path(path))
    problems = list(parsed.bad)
    if parsed.partial is not None:
        why = "a half-written last line (a crash mid-write?); modwatch audit sets it aside when it next starts"
        problems.append(Problem(parsed.partial.number, "partial", why))
    elif parsed.header is None and not parsed.entries and not parsed.bad:
        problems.append(Problem(1, "truncated", "the log is empty, not even its header is left: emptied?"))
    header = parsed.header
    has_mac = [number for number, entry in parsed.entries if "mac" in entry]
    keyed = bool(header["keyed"]) if header is not None else key is not None or bool(has_mac)
    if header is not None and not keyed and key is not None:
        why = "the header says the log is unkeyed, but a key was given: a keyed log rebuilt without its key?"
        problems.append(Problem(1, "header", why))
    if keyed and key is None:
        said = "its header says so" if header is not None else "its entries carry macs"
        why = f"the log is keyed ({said}): it cannot be called intact without its key (--hmac-key-env)"
        problems.append(Problem(1, "needs_key", why))
    for number, entry in parsed.entries:
        seq, digest = entry["seq"], entry["hash"]
        if entry_hash(entry["prev"], seq, entry["alert"]) != digest:
            problems.append(Problem(number, "altered", f"entry {seq}'s content does not match its hash"))
        elif keyed and "mac" not in entry:
            problems.append(Problem(number, "bad_mac", f"entry {seq} carries no mac in a keyed log"))
        elif not keyed and "mac" in entry:
            problems.append(Problem(number, "header", f"entry {seq} carries a mac, but the header says unkeyed"))
        elif keyed and key is not None and not mac_ok(key, entry):
            problems.append(Problem(number, "bad_mac", f"entry {seq} was not written with the audit key"))
    chained = [(number, e["seq"], e["prev"], e["hash"]) for number, e in parsed.entries]
    chained = _chain_problems(chained, parsed.start, problems)
    if checkpoint is not None:
        try:
            problems += _against(read_checkpoint(checkpoint), parsed, chained, keyed, key)
        except AuditError as exc:
            problems.append(Problem(0, "checkpoint", str(exc)))
    return Report(sorted(problems, key=lambda p: p.line), len(parsed.entries), keyed, header is None)


def _against(
    checkpoint: Checkpoint, parsed: Parsed, chained: list[tuple[int, int, str, str]], keyed: bool, key: bytes | None
) -> list[Problem]:
    out = []
    if checkpoint.keyed and key is not None and not checkpoint.signed_by(key):
        out.append(Problem(0, "checkpoint", "not written with the audit key"))
    if checkpoint.keyed and not keyed:
        out.append(
            Problem(1, "header", "the checkpoint is of a keyed log, this one is unkeyed: rebuilt without the key?")
        )
    if not checkpoint.keyed and keyed:
        out.append(Problem(0, "checkpoint", "unkeyed, but the log is keyed: the checkpoint was rewritten"))
    hashes = {0: (1, parsed.start)} | {seq: (number, digest) for number, seq, _, digest in chained}
    if checkpoint.entries not in hashes:
        why = (
            f"the log ends after {len(chained)} entries, its checkpoint records {checkpoint.entries}: the tail was cut"
        )
        out.append(Problem(parsed.lines + 1, "truncated", why))
    elif hashes[checkpoint.entries][1] != checkpoint.last:
        why = f"entry {checkpoint.entries} is not the one the checkpoint records: the log was rewritten"
        out.append(Problem(hashes[checkpoint.entries][0], "rewritten", why))
    return out


def _chain_problems(
    entries: list[tuple[int, int, str, str]], start: str, problems: list[Problem]
) -> list[tuple[int, int, str, str]]:
    """Add the chain's breaks to ``problems``; return the entries that are in the chain."""
    counts = Counter(seq for _, seq, _, _ in entries)
    # Of two entries with one number, the one no later entry chains to is the intruder.
    referenced = {prev for _, _, prev, _ in entries}
    last = entries[-1][0] if entries else 0
    chained = []
    for number, seq, prev, digest in entries:
        if counts[seq] > 1 and digest not in referenced and number != last:
            problems.append(Problem(number, "inserted", f"a second entry {seq} that nothing chains to"))
            counts[seq] -= 1
        else:
            chained.append((number, seq, prev, digest))
    later: Counter[int] = Counter(counts)
    prev_hash, prev_seq = start, 0
    for number, seq, prev, digest in chained:
        later[seq] -= 1
        if prev_seq == 0 and seq == 1 and prev != start:
            why = "entry 1 does not chain to the log's start: its header was changed, added or removed"
            problems.append(Problem(number, "header", why))
        elif prev != prev_hash or seq != prev_seq + 1:
            problems.append(_link_problem(number, seq, prev_seq, counts, later))
        prev_hash, prev_seq = digest, seq
    return chained


def _link_problem(number: int, seq: int, prev_seq: int, counts: Counter[int], later: Counter[int]) -> Problem:
    if counts[seq] > 1:
        return Problem(number, "inserted", f"a second entry {seq}: an entry was inserted")
    if seq <= prev_seq:
        return Problem(number, "reordered", f"entry {seq} comes after entry {prev_seq}")
    gap = range(prev_seq + 1, seq)
    if gap and any(later[s] > 0 for s in gap):
        return Problem(number, "reordered", f"entry {seq} comes before entry {prev_seq + 1}")
    if gap and any(counts[s] > 0 for s in gap):
        return Problem(number, "reordered", f"entry {seq} follows entry {prev_seq}, out of order")
    if gap:
        missing = f"{gap.start}" if len(gap) == 1 else f"{gap.start}-{gap.stop - 1}"
        return Problem(number, "deleted", f"entry {missing} is missing before entry {seq}")
    why = f"entry {seq} does not chain to entry {prev_seq}: an entry was inserted or replaced"
    return Problem(number, "inserted", why)


def consume_alerts(bootstrap: str, topic: str, log: AuditLog, group: str = "modwatch-audit",
                   idle_exit: float | None = None, security: KafkaSecurity | None = None) -> int:  # fmt: skip
    """Append alerts from the topic; sync the log (and its checkpoint) before committing offsets.
    Returns how many new alerts were recorded; messages that are not alerts with an id are counted
    on ``log.rejected``. Runs until interrupted, or until idle for ``idle_exit`` seconds.
    ``security`` is the settings' ``kafka`` (TLS, SASL); a broker that does not answer is a
    ``BrokerError`` within seconds (``streams.config.kafka.kafka_client``), not an endless retry."""
    import time

    from kafka import KafkaConsumer

    from streams.config.kafka import GROUP_SETTINGS, kafka_client

    consumer = kafka_client(
        KafkaConsumer, bootstrap, security, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **GROUP_SETTINGS,
    )  # fmt: skip
    consumer.subscribe([topic])
    recorded = 0
    last = time.monotonic()
    try:
        while True:
            polled = consumer.poll(timeout_ms=500, max_records=500)
            batch = [record for records in polled.values() for record in records]
            for record in batch:
                before = log.rejected.total()
                try:
                    alert = loads_strict(record.value)
                except (ValueError, TypeError) as exc:  # TypeError: a null value
                    log.reject("duplicate key" if isinstance(exc, Malformed) else "not JSON")
                else:
                    if not isinstance(alert, dict):
                        log.reject("not a JSON object")
                    elif log.append(alert):
                        recorded += 1
                if log.rejected.total() > before:  # where, never what: alerts carry personal data
                    logger.warning("audit: rejected %s[%d]@%d", record.topic, record.partition, record.offset)
            if batch:
                log.sync()
                consumer.commit()
                last = time.monotonic()
            elif not consumer.assignment():
                last = time.monotonic()  # still joining the group: not idle yet
            elif idle_exit is not None and time.monotonic() - last > idle_exit:
                return recorded
    finally:
        consumer.close()
