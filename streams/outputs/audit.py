"""A tamper-evident record of every alert: ``modwatch audit`` appends, ``modwatch verify`` checks.

Each line of the audit log is one JSON entry::

    {"seq": 7, "alert": {...}, "prev": "<hash of entry 6>", "hash": "<sha256>", "mac": "<hmac>"}

``hash`` is SHA-256 over the previous hash and the canonical JSON of ``seq`` and ``alert``, so an
entry cannot be altered, removed, inserted or moved without breaking the chain at that point. A
plain hash chain can be rebuilt end to end by someone who rewrites the whole tail; the optional
``mac`` (HMAC-SHA256 with a key the monitored staff do not hold) makes that impossible too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _canonical(seq: int, alert: dict[str, Any]) -> bytes:
    return json.dumps({"seq": seq, "alert": alert}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: str, seq: int, alert: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + _canonical(seq, alert)).hexdigest()


def entry_mac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


@dataclass
class Problem:
    line: int
    kind: str  # altered, deleted, inserted, reordered, bad_mac, unreadable
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"


class AuditLog:
    """Appends alerts to the chain. Re-opening an existing log continues its chain; an alert id
    already recorded is skipped (the alerts topic is at-least-once)."""

    def __init__(self, path: str | Path, key: bytes | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self.seq = 0
        self.head = GENESIS
        self.known: set[str] = set()
        if self.path.exists():
            for entry in _entries(self.path):
                self.seq, self.head = int(entry["seq"]), str(entry["hash"])
                alert = entry.get("alert")
                if isinstance(alert, dict) and "alert_id" in alert:
                    self.known.add(str(alert["alert_id"]))
        self._fh = self.path.open("a", encoding="utf-8")

    def append(self, alert: dict[str, Any]) -> bool:
        """Record one alert; False when its id is already in the log."""
        alert_id = str(alert.get("alert_id"))
        if alert_id in self.known:
            return False
        seq = self.seq + 1
        digest = entry_hash(self.head, seq, alert)
        entry: dict[str, Any] = {"seq": seq, "alert": alert, "prev": self.head, "hash": digest}
        if self.key is not None:
            entry["mac"] = entry_mac(self.key, digest)
        self._fh.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
        self.seq, self.head = seq, digest
        self.known.add(alert_id)
        return True

    def sync(self) -> None:
        """Flush to disk before the consumer commits its offset: what was committed is on disk."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def verify(path: str | Path, key: bytes | None = None) -> list[Problem]:
    """Every break in the chain, with the line where it is seen. Empty when the log is intact."""
    entries: list[tuple[int, int, str, str]] = []  # line, seq, prev, hash
    problems: list[Problem] = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                seq, alert, prev, digest = int(entry["seq"]), entry["alert"], str(entry["prev"]), str(entry["hash"])
            except (ValueError, KeyError, TypeError):
                problems.append(Problem(number, "unreadable", "not an audit entry"))
                continue
            if entry_hash(prev, seq, alert) != digest:
                problems.append(Problem(number, "altered", f"entry {seq}'s content does not match its hash"))
            elif key is not None and not hmac.compare_digest(str(entry.get("mac", "")), entry_mac(key, digest)):
                problems.append(Problem(number, "bad_mac", f"entry {seq} was not written with the audit key"))
            entries.append((number, seq, prev, digest))
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
    prev_hash, prev_seq = GENESIS, 0
    for number, seq, prev, digest in chained:
        later[seq] -= 1
        if prev != prev_hash or seq != prev_seq + 1:
            problems.append(_link_problem(number, seq, prev_seq, counts, later))
        prev_hash, prev_seq = digest, seq
    return sorted(problems, key=lambda p: p.line)


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
                   idle_exit: float | None = None, security: dict[str, Any] | None = None) -> int:  # fmt: skip
    """Append alerts from the topic; commit offsets only after the log is synced. Returns how many
    new alerts were recorded. Runs until interrupted, or until idle for ``idle_exit`` seconds."""
    import time

    from kafka import KafkaConsumer

    from streams.config.kafka import GROUP_SETTINGS

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **GROUP_SETTINGS, **(security or {}),
    )  # fmt: skip
    recorded = 0
    last = time.monotonic()
    try:
        while True:
            polled = consumer.poll(timeout_ms=500, max_records=500)
            batch = [record for records in polled.values() for record in records]
            for record in batch:
                try:
                    alert = json.loads(record.value)
                except ValueError:
                    continue  # not an alert; the worker writes only JSON
                if isinstance(alert, dict) and log.append(alert):
                    recorded += 1
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
